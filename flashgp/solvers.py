# Solver configuration objects, passed explicitly to models (no global settings):
# Cholesky(), CG(...), Auto(...); the preconditioner configurations (PivotedCholesky, RPCholesky,
# Nystrom, Vecchia) live in flashgp.preconditioners and are re-exported here.
from __future__ import annotations

from dataclasses import dataclass, field

from .backends import BACKENDS
from .backends.fused import DEFAULT_PRECISION, PRECISIONS
from .preconditioners.base import PreconditionerConfig
from .preconditioners.base import check_number as _check_positive
from .preconditioners.nystrom import Nystrom  # noqa: F401 (re-exported: fg.Nystrom)
from .preconditioners.pivot_config import PivotedCholesky
from .preconditioners.rpcholesky import RPCholesky  # noqa: F401 (re-exported: fg.RPCholesky)
from .preconditioners.vecchia_config import Vecchia  # noqa: F401 (re-exported: fg.Vecchia)


@dataclass(frozen=True)
class Cholesky:
    """Exact inference by a float64 Cholesky factorization (with reported jitter escalation).

    Args:
        jitter: first jitter tried if the factorization fails (default: dtype-based).
        max_tries: how many times the jitter is multiplied by 10 before giving up.
    """

    jitter: float | None = None
    max_tries: int = 6
    backend: str = "dense"

    def __post_init__(self):
        if self.jitter is not None:
            _check_positive(self, "jitter")
        _check_positive(self, "max_tries", integer=True)
        if self.backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS}, got {self.backend!r}")

    def engine(self):
        """The inference engine of this configuration (``flashgp.engines.CholeskyEngine``)."""
        from .engines import CholeskyEngine  # late: the engines import the solver configurations
        return CholeskyEngine(self)


@dataclass(frozen=True)
class CG:
    """BBMM inference: modified batched preconditioned CG with stochastic Lanczos quadrature.

    Args:
        tol: relative residual (mean over columns) at which CG stops during training.
        eval_tol: relative residual of the posterior mean solve. The default 1e-3 (below the 0.01
            the accuracy literature asks for) keeps posterior means within ~1e-3 of Cholesky
            relative to y; at noise 1e-4 that was up to 0.17 posterior standard deviations
            (``benchmarks/variance_accuracy.py``, docs/accuracy.md). With ``variance_tol=None``
            also that of the variance solves, whose residual does not bound the variance: at
            1e-3 a fitted model's variances were 1.04-2.05x the exact ones
            (``python benchmarks/fitted_variances.py``, docs/accuracy.md).
        variance_tol: the relative error certified for every posterior variance on the CG path
            (default 0.01; None: no certificate, the behaviour before it existed). Each test
            point's solve runs until a bound on the error of ``k*^T K_hat^{-1} k*`` is below
            variance_tol times the smallest variance the bound allows, plus 100 eps ``k(x*, x*)``
            (the resolution of ``k** - k*^T K_hat^{-1} k*`` in the data's dtype; ``models.certified``);
            the variances returned are upper bounds of the exact ones. The bound is Gauss-Radau
            quadrature where the spectrum of P^{-1} K_hat is bounded below (no preconditioner,
            PivotedCholesky without blocks), else ||r||^2 / noise (blocks, Vecchia: more
            iterations). Points the solves cannot certify (max_iters, float32 resolution) give
            one NumericalWarning with the bound; ``model.diagnostics``: variance_error_bound
            (the largest relative bound), variance_uncertified, variance_bound ("gauss-radau" or
            "residual"). Test sets above ``exact_var_max`` get LOVE or local variances, then
            certified by CG solves started from them, in chunks of 1024 test points
            (``models.prediction.CERTIFY_CHUNK``): products with K_hat for every test point, so at
            very large n pass None for the uncertified fast paths.
        max_iters: CG iteration cap; not converging warns with the residual reached.
        probes: random probe vectors for the log determinant and its gradient.
        lanczos_iters: minimum CG iterations when the log determinant is estimated (the size
            of the Lanczos tridiagonals used by quadrature).
        precond: preconditioner configuration (a ``flashgp.preconditioners.PreconditionerConfig``):
            PivotedCholesky (default), RPCholesky, Nystrom, Vecchia, or None (no preconditioner).
        root_rank: Lanczos iterations for the cached root of K_hat^{-1} (fast variances, LOVE).
        exact_var_max: test sets up to this size get variances by CG solves (more exact).
        local_neighbors: 0 (default): larger test sets get LOVE variances from the Lanczos root.
            k > 0: they get local ones instead, var(f* | the k training points nearest to x*)
            (``models.local_variance``): an upper bound on the exact variance, close to it when
            near points screen off the rest (stationary kernels, dense data), and without the
            root rank that LOVE needs there. Marginal variances only (no covariances).
        backend: kernel operator backend, "auto", "dense", "blocked", "triton" (fused GPU kernels)
            or "cpu" (fused CPU kernels; see ``operators.KernelOperator``).
        precision: arithmetic of the fused GPU kernels (backend "triton"): "fp16x3" (default:
            K @ V in three float16 tensor-core products of split operands, gradients as
            "tf32x3"; as accurate as "tf32x3" on an H200 and 1.13-1.27x faster at n = 1M,
            ``python benchmarks/gpu_kernels.py --n 1000000 --d 3 --t 11 --kernel rbf
            --skip-blocked --precisions tf32x3 fp16x3 --ops matmul``, and --kernel matern52),
            "tf32x3" (3xTF32 tensor-core products; on an H200 its K @ V was within 5e-7 of float64, closer than
            "fp32"'s 2.5e-6, ``python benchmarks/product_accuracy.py --n 20000 --profiles rbf``,
            and faster), "fp32" (IEEE float32 on the CUDA cores), "tf32" (10-bit mantissa
            products, fastest; not for training: it warns there, see ``python
            benchmarks/precision_accuracy.py --n 20000``). The dense and blocked backends
            compute in the data's dtype whatever this says (on GPUs with TMA a large stored
            float32 K is multiplied by a Triton kernel in 3xTF32, IEEE float32 for "fp32":
            float32 accuracy either way).
        memory_budget: bytes the "auto" backend may give a dense kernel matrix (None: a quarter
            of a CUDA device's memory, 2 GiB elsewhere; see ``backends.choice``).
        reorthogonalize: CG with full re-orthogonalization of its residuals (``linalg.mbcg``)
            in training and in the posterior mean solve (not the variance solves, which have a
            column per test point). It keeps 2 (n, t) tensors per iteration (t = probes + 1 in
            training) and, on ill-conditioned float32 problems on a CPU, cut the iterations
            1.35-2.6x and converged where plain CG stalled (``python
            benchmarks/reorthogonalization.py``). With bfloat16 products every column still broke down
            (K_hat rounded to bfloat16 is indefinite at those noise levels): not a fix for that.
    """

    tol: float = 1.0
    eval_tol: float = 1e-3
    variance_tol: float | None = 0.01
    max_iters: int = 1000
    probes: int = 10
    lanczos_iters: int = 20
    precond: PreconditionerConfig | None = field(default_factory=PivotedCholesky)
    root_rank: int = 200
    exact_var_max: int = 1024
    local_neighbors: int = 0
    backend: str = "auto"
    precision: str = DEFAULT_PRECISION
    memory_budget: int | None = None
    reorthogonalize: bool = False

    def __post_init__(self):
        _check_positive(self, "tol")
        if self.memory_budget is not None:
            _check_positive(self, "memory_budget", integer=True, allow_zero=True)
        if not isinstance(self.reorthogonalize, bool):
            raise TypeError(f"reorthogonalize: expected True or False, got {self.reorthogonalize!r}")
        _check_positive(self, "eval_tol")
        if self.variance_tol is not None:
            _check_positive(self, "variance_tol")
        for name in ("max_iters", "probes", "root_rank"):
            _check_positive(self, name, integer=True)
        for name in ("lanczos_iters", "exact_var_max", "local_neighbors"):
            _check_positive(self, name, integer=True, allow_zero=True)
        if self.precond is not None and not isinstance(self.precond, PreconditionerConfig):
            raise TypeError(f"precond: expected a preconditioner configuration (PivotedCholesky, "
                            f"RPCholesky, Nystrom, Vecchia) or None, got {type(self.precond).__name__}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS}, got {self.backend!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {PRECISIONS}, got {self.precision!r}")

    def engine(self):
        """The inference engine of this configuration (``flashgp.engines.CGEngine``)."""
        from .engines import CGEngine  # late: the engines import the solver configurations
        return CGEngine(self)


@dataclass(frozen=True)
class Auto:
    """Cholesky up to ``max_cholesky_n`` training points, the given CG solver beyond.

    The path taken is recorded in ``model.diagnostics["path"]``.
    """

    max_cholesky_n: int = 2000
    cholesky: Cholesky = field(default_factory=Cholesky)
    cg: CG = field(default_factory=CG)

    def __post_init__(self):
        _check_positive(self, "max_cholesky_n", integer=True, allow_zero=True)
        if not isinstance(self.cg, CG):
            raise TypeError(f"cg: expected a CG solver, got {type(self.cg).__name__}")
        if not isinstance(self.cholesky, Cholesky):
            raise TypeError(f"cholesky: expected a Cholesky solver, got {type(self.cholesky).__name__}")

    def resolve(self, n: int):
        """The concrete solver for n training points."""
        return self.cholesky if n <= self.max_cholesky_n else self.cg


def resolve_solver(solver, n: int):
    """Cholesky or CG for a problem with n training points (Auto resolved)."""
    if isinstance(solver, Auto):
        return solver.resolve(n)
    if isinstance(solver, (Cholesky, CG)):
        return solver
    raise TypeError(f"solver: expected fg.Cholesky(), fg.CG(...) or fg.Auto(...), got {type(solver).__name__}")
