# Typed records of what the engines did: one per solve, turned into the flat ``model.diagnostics``
# mapping (the keys users and fg.fit's history have always seen) by ``as_dict``.
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CGSolveInfo:
    """One CG run: iterations, residual (relative, the largest over the columns that count),
    converged, breakdowns (columns whose recurrence broke down)."""

    iterations: int
    residual: float
    converged: bool
    breakdowns: int

    @classmethod
    def from_dict(cls, info: dict) -> CGSolveInfo:
        """From the info dict ``linalg.cg_solve`` / ``inv_quad_logdet`` fill."""
        return cls(int(info["iterations"]), float(info["residual"]), bool(info["converged"]),
                   int(info["breakdowns"]))

    def as_dict(self) -> dict:
        return {"cg_iterations": self.iterations, "residual": self.residual, "converged": self.converged,
                "cg_breakdowns": self.breakdowns}


@dataclass(frozen=True)
class PreconditionerBuild:
    """A preconditioner build: what was built (rank; block size; Vecchia neighbours; repairs of
    its diagonal blocks), how (``source``: "greedy", "reused", "searched", ... or None), how long
    it took, and after a greedy pivoted Cholesky the largest diagonal error left and the level
    under which the greedy run stops early (else None)."""

    rank: int = 0
    block_size: int = 0
    neighbors: int = 0
    block_repairs: dict | None = None
    source: str | None = None
    seconds: float = 0.0
    remaining_error: float | None = None
    stop_threshold: float | None = None

    def as_dict(self, with_source: bool = True) -> dict:
        out = {"precond_rank": self.rank, "precond_block_size": self.block_size,
               "precond_neighbors": self.neighbors, "precond_block_repairs": self.block_repairs}
        if with_source:
            out["precond_pivots"] = self.source
        out["precond_seconds"] = self.seconds
        if with_source:
            out.update(precond_remaining_error=self.remaining_error, precond_stop_threshold=self.stop_threshold)
        return out


@dataclass(frozen=True)
class CholeskyInfo:
    """A float64 Cholesky factorization and the jitter it needed (0 if none); ``structure``
    "kronecker": the exact eigendecomposition path of a multitask grid instead (``eigen_clamped``:
    eigenvalues of K_x below 0 from round-off, set to 0)."""

    jitter: float
    structure: str = "dense"
    eigen_clamped: int = 0

    def as_dict(self) -> dict:
        out = {"path": "cholesky", "backend": "dense", "jitter": self.jitter, "cg_iterations": 0, "residual": 0.0}
        if self.structure != "dense":
            out.update(structure=self.structure, eigen_clamped=self.eigen_clamped)
        return out


@dataclass(frozen=True)
class CGTrainingInfo:
    """One BBMM training solve (mBCG with probes, stochastic Lanczos quadrature): the kernel
    operator's backend and precision, the CG run (its residual is that of the y column, while CG
    stops on ``mean_residual``, the mean over y and the probes), how far the last Lanczos steps
    moved the log det, and the preconditioner build."""

    backend: str
    precision: str
    solve: CGSolveInfo
    mean_residual: float
    logdet_tail_change: float
    precond: PreconditionerBuild

    def as_dict(self) -> dict:
        return {"path": "cg", "backend": self.backend, "precision": self.precision, "jitter": 0.0,
                **self.solve.as_dict(), "mean_residual": self.mean_residual, **self.precond.as_dict(),
                "logdet_tail_change": self.logdet_tail_change}


@dataclass(frozen=True)
class CGMeanSolveInfo:
    """The posterior mean solve K_hat^{-1} (y - m) of a CG prediction cache."""

    backend: str
    solve: CGSolveInfo
    precond: PreconditionerBuild
    seconds: float

    def as_dict(self) -> dict:
        return {"path": "cg", "backend": self.backend, "jitter": 0.0, **self.solve.as_dict(),
                **self.precond.as_dict(with_source=False), "mean_solve_seconds": self.seconds}


@dataclass(frozen=True)
class VarianceCertificate:
    """Certified posterior variances (``fg.CG(variance_tol=...)``): the longest per-point CG
    solve, the largest relative error bound, how many points were not certified, the kind of
    bound ("gauss-radau" or "residual"), and the largest bound of the corrected posterior mean's
    error in posterior standard deviations (None: no test points)."""

    iterations: int
    error_bound: float
    uncertified: int
    bound: str
    mean_error_bound: float | None

    def as_dict(self) -> dict:
        return {"variance_cg_iterations": self.iterations, "variance_error_bound": self.error_bound,
                "variance_uncertified": self.uncertified, "variance_bound": self.bound,
                "variance_converged": self.uncertified == 0, "mean_error_bound": self.mean_error_bound}


@dataclass(frozen=True)
class LocalVarianceInfo:
    """Local variances (``fg.CG(local_neighbors=k)``): k, how many test points' neighbour
    systems needed jitter, and how much the farther half of the neighbours lowered the
    variances of y* (median, relative)."""

    neighbors: int
    jitter_points: int
    change: float

    def as_dict(self) -> dict:
        return {"local_neighbors": self.neighbors, "local_jitter_points": self.jitter_points,
                "variance_local_change": self.change}
