# Cached quantities for prediction: the solve a = K_hat^{-1}(y - m) and a root of K_hat^{-1}
# (Cholesky factor, or a Lanczos root for fast variances, LOVE); built once per parameter state.
from __future__ import annotations

import time
import warnings

import torch

from ..distributions import DenseDowndated, Downdated, FactorDowndated, MarginalOnly, Posterior
from ..errors import NumericalWarning
from ..engines import CGMeanSolveInfo, seconds_since
from ..operators import KernelOperator, kernel_operator
from ..engines.cholesky_update import extend
from .direct_prediction import TestSolve
from . import certified
from .finite import check_noise_values
from .local_variance import local_variances
from .state import StateSnapshot

# warn when the second half of the Lanczos root (or of the local neighbours) lowers the predictive
# variances of y* by more than this fraction (median over the test points, PredictionCache.root_change,
# local_variance.local_variances)
ROOT_CHANGE_WARN = 0.1
# test points per chunk of certified variance solves beyond exact_var_max (each chunk's CG holds
# about 6 (n, chunk) tensors)
CERTIFY_CHUNK = 1024
# Cholesky predictions take the test points in chunks whose float64 cross covariance K(x*, X)
# (chunk, n) (and its whitened copy) take at most this many bytes each: memory stays bounded for
# any number of test points (100,000 points of a 2,000-point model: 25 chunks of 4,194)
PREDICT_CHUNK_BYTES = 64 * 1024**2
# a posterior covariance keeps its low-rank factor (m, k) (Cholesky: k = n) when it takes at most
# this many bytes; beyond, the factor's rows are recomputed chunk by chunk when the covariance is
# used (FactorDowndated), so predicting many points never holds an m x n matrix
KEEP_FACTOR_BYTES = 256 * 1024**2
# the variance diagnostics one posterior call sets (cleared at the next)
VARIANCE_KEYS = ("variance_cg_iterations", "variance_residual", "variance_converged", "variance_cg_breakdowns",
                 "local_neighbors", "local_jitter_points", "variance_local_change", "variance_root_change",
                 "variance_error_bound", "variance_uncertified", "variance_bound", "mean_error_bound")


def root_growth(left: torch.Tensor, root, prior_diag: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
    """Per test point, how much the second half of a Lanczos root's vectors lowered its variance,
    relative to the predictive variance of y*: left = K(x, X) R ``(*batch, c, k)`` for a
    ``LanczosRoot`` root (its ``back`` and ``half``), prior_diag k(x, x) ``(*batch, c)``,
    noise_level the mean training noise ``(*batch,)``. Returns ``(*batch, c)``, each >= 0 (a
    one-vector root's first half is empty and removes nothing: the whole downdate)."""
    back, half = root.back, root.half
    h = half.shape[-1]
    full = left.square().sum(-1)
    first = ((left @ back[..., :h]) @ half).square().sum(-1) if h else torch.zeros_like(full)
    y_var = (prior_diag - full).clamp_min(0) + noise_level.unsqueeze(-1)
    return (full - first).clamp_min(0) / y_var


def warn_root_change(change: float, k: int, stacklevel: int) -> None:
    """The NumericalWarning for LOVE variances whose root has not converged (``change``, the
    median of ``root_growth``, above ROOT_CHANGE_WARN; nothing below it); k: the root's rank."""
    if change <= ROOT_CHANGE_WARN:
        return
    warnings.warn(
        f"Lanczos (LOVE) predictive variances have not converged: the last {k - k // 2} "
        f"of the {k} Lanczos vectors lowered the variances of y* by {change:.1%} (median "
        f"over the test points; warning above {ROOT_CHANGE_WARN:.0%}), so the variances are probably still "
        "too large. To fix: raise CG(root_rank=...) (memory: n x root_rank), take "
        "local variances from the nearest training points (CG(local_neighbors=256)), "
        "get exact variances by CG solves for small test sets (CG(exact_var_max=...)), "
        "or certify them (CG(variance_tol=0.01))",
        NumericalWarning, stacklevel=stacklevel)


def chunk_points(n: int, batch: int = 1) -> int:
    """Test points per chunk of a Cholesky prediction: as many as keep a float64 (batch, chunk, n)
    block within PREDICT_CHUNK_BYTES (at least 1)."""
    return max(1, PREDICT_CHUNK_BYTES // (8 * max(1, n) * max(1, batch)))


def keeps_factor(m: int, k: int, batch: int, dtype: torch.dtype) -> bool:
    """Whether a posterior covariance keeps its (batch, m, k) factor (``KEEP_FACTOR_BYTES``)."""
    return max(1, batch) * m * k * dtype.itemsize <= KEEP_FACTOR_BYTES


class PredictionCache:
    """Everything test-independent for predictions of ``model`` at one state ``snapshot`` (a
    ``models.state.StateSnapshot``, which tells when the cache is stale), for one solver's
    engine: the solve a = K_hat^{-1}(y - m) and what variances need. ``prediction_cache`` picks
    the subclass for the engine (``PREDICTIONS``). The training noise is checked (finite, > 0)
    once per cache: edits through ``.data`` escape the likelihood's own checks."""

    def __init__(self, model, solver, snapshot):
        self.snapshot, self.solver, self.engine = snapshot, solver, solver.engine()
        self.kernel, self.mean_fn = model.kernel, model.mean
        self.train_x = model.train_x
        n = model.num_train
        self.resid = model.train_y - model.mean(self.train_x)
        self.noise = model.train_noise().detach()  # (*batch, n)
        check_noise_values(self.noise)
        self.diagnostics: dict = {"n": n}

    def posterior(self, x: torch.Tensor) -> Posterior:
        """The posterior at test inputs x ``(*batch, m, d)`` (no gradients)."""
        for key in VARIANCE_KEYS:
            self.diagnostics.pop(key, None)  # set again when this call solves by CG / locally
        mean, covariance, method = self._parts(x)
        self.diagnostics["variance_method"] = method
        return Posterior(mean, covariance, diagnostics=self.diagnostics)

    def _parts(self, x: torch.Tensor):
        """(mean ``(*b, m)``, covariance operator ``(*b, m, m)``, variance method name)."""
        raise NotImplementedError

    #: whether ``direct_posterior`` (differentiable, many test sets at once) serves this cache
    direct_ok = True
    #: whether the cached solves carry a graph to training data (a conditioned model given x, y
    #: requiring grad, ``models.conditioning``): posteriors then differentiate through them
    data_grad = False

    def direct_matches(self, m: int) -> bool:
        """Whether a direct posterior at test sets of m points gives what ``posterior`` gives per
        set (so that test sets without gradients may take it)."""
        return True

    @property
    def cross_inputs(self) -> torch.Tensor:
        """The inputs X of the cross covariance K(x, X) (``direct_prediction``): the training inputs."""
        return self.train_x

    def work_dtype(self, x: torch.Tensor) -> torch.dtype:
        """The dtype a direct posterior (``models.direct_prediction``) computes K(x, X) in."""
        return x.dtype

    def test_solve(self, rhs: torch.Tensor, m: int, prior: torch.Tensor) -> TestSolve:
        """K_hat^{-1} rhs or its approximation (a ``direct_prediction.TestSolve``) for the columns
        rhs ``(*batch, n, c)`` = K(X, x*) of a direct posterior at test sets of m points; prior
        ``(*batch, c)``: k(x*_i, x*_i)."""
        raise NotImplementedError

    def _downdated(self, x, left, right, variances=None) -> Downdated:
        """The posterior covariance k(x, x) - left right^T (with ``variances`` on its diagonal)."""
        return Downdated(kernel_operator(self.kernel, x), left, right, variances)


class CholeskyPrediction(PredictionCache):
    """Predictions from a float64 Cholesky factor of K_hat (or the exact eigendecomposition of a
    Kronecker-structured one: anything with ``solve`` and ``whiten``)."""

    def __init__(self, model, solver, snapshot, system=None):
        super().__init__(model, solver, snapshot)
        if system is None:
            system = self.engine.system(self.kernel, self.train_x, self.noise)
        # a CholeskySystem, a KroneckerSystem for a multitask grid, or an ExtendedSystem
        # (``conditioned``)
        self.system = system
        self._inverse = None  # K_hat^{-1}, for direct posteriors (``test_solve``)
        self.alpha = system.solve(self.resid.unsqueeze(-1))  # kept in float64
        self.diagnostics.update(system.info.as_dict())

    def work_dtype(self, x: torch.Tensor) -> torch.dtype:
        return torch.float64  # as _mean_and_factor: the mean cancels in float32 at small noise

    def conditioned(self, model, x: torch.Tensor):
        """The cache of ``model`` = this cache's model given the new rows x ``(*b, q, d)`` last
        (``models.conditioning``), its factor extended in O(n^2 q); None for a Kronecker system."""
        if not hasattr(self.system, "whiten_t"):
            return None
        n = self.system.size
        noise = model.train_noise()[..., n:]
        cross = self.kernel(self.train_x.double(), x.double())
        corner = self.kernel(x.double()) + torch.diag_embed(noise.double())
        return CholeskyPrediction(model, self.solver, StateSnapshot(model), extend(self.system, cross, corner))

    def test_solve(self, rhs: torch.Tensor, m: int, prior: torch.Tensor) -> TestSolve:
        """K_hat^{-1} rhs by one product with K_hat^{-1}, formed from the factor on the first call
        (O(n^3) once, n^2 float64 memory): acquisition functions solve against a few columns
        hundreds of times per model, where a product runs several times faster than the two
        triangular solves. Extended (conditioned) and Kronecker systems solve as usual."""
        chol = getattr(self.system, "chol", None)
        if chol is None:
            return TestSolve(self.system.solve(rhs), "cholesky")
        if self._inverse is None:
            self._inverse = torch.cholesky_inverse(chol)
        return TestSolve(self._inverse @ rhs.double(), "cholesky")

    def _parts(self, x: torch.Tensor):
        """(mean ``(*b, m)``, covariance (prior - W W^T with W = K_*X L^{-T} ``(*b, m, n)``), "cholesky").

        The test points are taken ``chunk_points(n)`` at a time (PREDICT_CHUNK_BYTES): memory
        stays bounded however many there are. The covariance keeps W (``Downdated``) while it
        fits KEEP_FACTOR_BYTES; beyond, its rows are recomputed when the covariance is used
        (``FactorDowndated``, with the variances computed here). Chunked and unchunked results
        agree to round-off (each test point's values come from the same operations)."""
        m, n = x.shape[-2], self.train_x.shape[-2]
        batch = self.alpha.shape[:-2].numel()
        chunk = chunk_points(n, batch)
        keep = keeps_factor(m, n, batch, x.dtype)
        means, factors, variances = [], [], []
        for begin in range(0, m, chunk):
            part = x[..., begin:begin + chunk, :]
            mean, left = self._mean_and_factor(part)
            means.append(mean)
            if keep:
                factors.append(left)
            else:  # as Downdated's diagonal computes it
                variances.append(kernel_operator(self.kernel, part).diagonal() - (left * left).sum(-1))
        mean = means[0] if len(means) == 1 else torch.cat(means, -1)
        if keep:
            left = factors[0] if len(factors) == 1 else torch.cat(factors, -2)
            return mean, self._downdated(x, left, left), "cholesky"
        covariance = FactorDowndated(kernel_operator(self.kernel, x), x, lambda part: self._mean_and_factor(part, mean=False)[1],
                                     torch.cat(variances, -1), chunk)
        return mean, covariance, "cholesky"

    def _mean_and_factor(self, x: torch.Tensor, mean: bool = True):
        """(posterior mean ``(*b, c)`` or None, W = K_*X L^{-T} ``(*b, c, n)``) at test inputs x ``(*b, c, d)``.
        The cross covariance, the mean and W are computed in float64 and cast to the dtype of x
        at the end: with a small noise alpha = K_hat^{-1} r is large and K_*X alpha cancels in
        float32."""
        cross = self.kernel(x.double(), self.train_x.double())
        out = self.mean_fn(x) + (cross @ self.alpha).squeeze(-1).to(x.dtype) if mean else None
        white = self.system.whiten(cross.transpose(-1, -2))
        return out, white.transpose(-1, -2).to(x.dtype)


class CGPrediction(PredictionCache):
    """Predictions by preconditioned CG: the mean solve, then variances by (certified) CG solves,
    local solves or a Lanczos root (LOVE), see ``fg.CG``."""

    def __init__(self, model, solver, snapshot, x0: torch.Tensor | None = None):
        super().__init__(model, solver, snapshot)
        self.noise_level = self.noise.mean(-1)  # (*batch,), the scale of root_change
        # the model's preconditioner state: PivotedCholesky.eval_rank or the rank training grew to;
        # Vecchia: its neighbour index, if current
        system = self.engine.system(self.kernel, self.train_x, self.noise, model.preconditioner_state(solver))
        self.system, self.op, self.precond = system, system.op, system.precond
        self.backend = system.kernel_op.backend
        self.resid = self.resid.expand(*self.op.batch_shape, self.resid.shape[-1])
        start = time.perf_counter()
        self.alpha, solve = self.engine.solve(system, self.resid.unsqueeze(-1), solver.eval_tol,
                                              "posterior mean solve", solver.reorthogonalize, x0=x0)
        record = CGMeanSolveInfo(self.backend, solve, system.build, seconds_since(start, self.train_x.device))
        self.diagnostics.update(record.as_dict())
        self._root = None
        self._spectrum = None  # certified.spectrum_floor's (mu, floor, kind), on first use
        self._mean_residual = None  # (r - K_hat alpha, a bound of its K_hat^{-1} norm), on first use

    @property
    def direct_ok(self) -> bool:
        """Direct posteriors take CG solves or the Lanczos root, not local variances."""
        return not self.solver.local_neighbors

    def direct_matches(self, m: int) -> bool:
        """CG solves (plain or certified) for sets within ``exact_var_max``; LOVE's covariance
        (a low-rank factor rescaled to certified variances) differs from a direct one."""
        return self.direct_ok and m <= self.solver.exact_var_max

    def test_solve(self, rhs: torch.Tensor, m: int, prior: torch.Tensor) -> TestSolve:
        """CG solves for test sets of at most ``CG.exact_var_max`` points, else R R^T rhs with the
        Lanczos root R; with ``CG.variance_tol`` both are certified (CG solves started from R R^T
        rhs beyond exact_var_max, as ``_lanczos_covariance``), with their residuals and the
        posterior mean's correction, as ``_cg_covariance`` uses them."""
        small = m <= self.solver.exact_var_max
        if self.solver.variance_tol is not None:
            start = None
            if not small:
                root = self.lanczos_root()
                start = root @ (root.transpose(-1, -2) @ rhs.to(root.dtype))
            result, bounds, shift, mean_bound = self._certify(rhs.transpose(-1, -2).to(self.op.dtype),
                                                              prior.to(self.op.dtype), x0=start)
            self._report([result], bounds, mean_bound, rhs.dtype, stacklevel=8)
            return TestSolve(result.solution, "cg" if small else "lanczos+cg", result.residual, shift)
        if small:
            solution, solve = self.engine.solve(self.system, rhs.to(self.op.dtype), self.solver.eval_tol,
                                                "posterior variance solves")
            self.diagnostics.update({f"variance_{key}": value for key, value in solve.as_dict().items()})
            return TestSolve(solution, "cg")
        root = self.lanczos_root()
        return TestSolve(root @ (root.transpose(-1, -2) @ rhs.to(root.dtype)), "lanczos")

    def conditioned(self, model, x: torch.Tensor):
        """The cache of ``model`` = this cache's model given the new rows x ``(*b, q, d)`` last
        (``models.conditioning``): its mean solve starts from this alpha (0 on the new rows)."""
        if torch.is_grad_enabled():
            raise NotImplementedError("x, y: gradients through conditioning need the Cholesky path (CG solves "
                                      "are not differentiated); pass x and y without grad, or use fg.Cholesky()")
        q = x.shape[-2]
        start = torch.cat([self.alpha, torch.zeros_like(self.alpha[..., :1, :]).expand(*self.alpha.shape[:-2], q, 1)],
                          -2)
        return CGPrediction(model, self.solver, StateSnapshot(model), x0=start)

    # ----- roots of K_hat^{-1} ---------------------------------------------------------
    def lanczos_root(self) -> torch.Tensor:
        """R ``(*batch, n, k)`` with R R^T ~ K_hat^{-1} (``CGEngine.root``, k = ``CG.root_rank``), made on
        first use."""
        if self._root is None:
            start = time.perf_counter()
            self._root = self.engine.root(self.system, self.solver.root_rank)
            self.diagnostics["root_seconds"] = seconds_since(start, self.train_x.device)
        return self._root.root

    def root_change(self, x: torch.Tensor, rows, parts: list) -> float:
        """How far the Lanczos root's variances may still be from converged, at test inputs x.

        rows(part): K(x[part], X) R ``(*batch, c, k)`` for each slice in ``parts`` (which cover the
        test points). The downdate k*^T R R^T k* only grows with the Lanczos dimension; this is
        the median over test points of its growth from the first k // 2 vectors to all k,
        relative to the predictive variance of y* at rank k (with the mean training noise). A
        large value says the variances are still too large. 0 when the Lanczos run covered all n
        dimensions or stopped at an invariant subspace (nothing left); for a one-vector root
        (h = 0) the whole downdate.
        """
        if self._root.complete:
            return 0.0
        with torch.no_grad():
            ratios = [root_growth(rows(part), self._root, self.kernel.diag(x[..., part, :]), self.noise_level)
                      for part in parts]
        return float(torch.cat(ratios, -1).median())

    # ----- posterior at test points ------------------------------------------------------
    def _parts(self, x: torch.Tensor):
        """(mean, covariance, method): variances by CG solves (m <= exact_var_max), local ones
        (solver.local_neighbors > 0: a MarginalOnly covariance) or LOVE; with
        ``CG.variance_tol`` every variance is certified, larger test sets by CG solves started
        from the local or LOVE solutions (methods "local+cg", "lanczos+cg")."""
        cross = kernel_operator(self.kernel, x, self.train_x, backend=self.backend,
                                precision=self.solver.precision)
        mean = self.mean_fn(x) + cross.matmul(self.alpha).squeeze(-1)
        if x.shape[-2] <= self.solver.exact_var_max:
            covariance, method, shift = self._cg_covariance(x, cross.to_dense())
        elif self.solver.local_neighbors:
            covariance, method, shift = self._local_covariance(x)
        else:
            covariance, method, shift = self._lanczos_covariance(x, cross)
        return (mean if shift is None else mean + shift), covariance, method

    def _cg_covariance(self, x: torch.Tensor, left: torch.Tensor):
        """(covariance, "cg", the mean's correction or None) from CG solves against the rows of
        left = K(x, X) ``(*batch, m, n)``."""
        if self.solver.variance_tol is not None:
            prior = self.kernel.diag(x).expand(left.shape[:-1])
            result, bounds, shift, mean_bound = self._certify(left, prior)
            self._report([result], bounds, mean_bound, x.dtype, stacklevel=7)
            downdate = left @ result.solution + result.solution.transpose(-1, -2) @ result.residual
            return DenseDowndated(kernel_operator(self.kernel, x), downdate), "cg", shift
        right, solve = self.engine.solve(self.system, left.transpose(-1, -2), self.solver.eval_tol,
                                         "posterior variance solves")
        self.diagnostics.update({f"variance_{key}": value for key, value in solve.as_dict().items()})
        right = right.transpose(-1, -2)
        return self._downdated(x, left, right), "cg", None

    def _local_covariance(self, x: torch.Tensor):
        """(MarginalOnly covariance, "local" or "local+cg", the mean's correction or None) from each
        test point's nearest training points (``local_variance``), certified by CG solves started
        from them."""
        if x.dim() != 2:
            raise ValueError(f"x: local variances (CG(local_neighbors=...)) need an unbatched "
                             f"model and test inputs (m, d), got shape {tuple(x.shape)}")
        start = time.perf_counter()
        variances, info, (index, weights) = local_variances(self.kernel, self.train_x, self.noise, x,
                                                            self.solver.local_neighbors, solutions=True)
        self.diagnostics.update(info.as_dict(), local_seconds=seconds_since(start, x.device))
        if self.solver.variance_tol is not None:
            def scattered(part):  # the local solves of x[part] as (n, c)
                guess = torch.zeros(self.train_x.shape[-2], weights[part].shape[0], dtype=x.dtype,
                                    device=x.device)
                return guess.scatter_(0, index[part].T, weights[part].T)
            variances, shift = self._certified_chunks(x, scattered)
            return MarginalOnly(variances), "local+cg", shift
        if info.change > ROOT_CHANGE_WARN:
            warnings.warn(
                f"local predictive variances have not converged: the farther half of the "
                f"{info.neighbors} neighbours lowered the variances of y* by "
                f"{info.change:.1%} (median over the test points; warning "
                f"above {ROOT_CHANGE_WARN:.0%}). To fix: raise CG(local_neighbors=...)",
                NumericalWarning, stacklevel=5)
        return MarginalOnly(variances), "local", None

    def _lanczos_covariance(self, x: torch.Tensor, cross: KernelOperator):
        """(covariance, "lanczos" or "lanczos+cg", the mean's correction or None) from the cached
        Lanczos root (LOVE), its variances certified by CG solves started from R R^T k*. The
        factor K(x, X) R ``(*batch, m, k)`` is kept while it fits KEEP_FACTOR_BYTES, else recomputed
        in chunks of test points whenever it is needed (``FactorDowndated``)."""
        root = self.lanczos_root()
        m, batch = x.shape[-2], self.op.batch_shape.numel()
        if keeps_factor(m, root.shape[-1], batch, x.dtype):
            left, chunk = cross.matmul(root), m
            def rows(part):
                return left[..., part, :]
        else:
            left, chunk = None, chunk_points(self.train_x.shape[-2], batch)
            def rows(part):
                return self._root_factor(x[..., part, :])
        parts = [slice(begin, begin + chunk) for begin in range(0, m, chunk)]
        change = self.root_change(x, rows, parts)
        self.diagnostics["variance_root_change"] = change
        if self.solver.variance_tol is not None:
            variances, shift = self._certified_chunks(x, lambda part: root @ rows(part).transpose(-1, -2))
            if left is None:
                return self._lazy_root_covariance(x, rows, parts, chunk, variances), "lanczos+cg", shift
            return self._downdated(x, left, left, variances), "lanczos+cg", shift
        warn_root_change(change, self._root.root.shape[-1], stacklevel=6)
        if left is None:
            return self._lazy_root_covariance(x, rows, parts, chunk), "lanczos", None
        return self._downdated(x, left, left), "lanczos", None

    def _root_factor(self, x: torch.Tensor) -> torch.Tensor:
        """K(x, X) R ``(*batch, c, k)`` for test inputs x ``(*batch, c, d)`` and the cached Lanczos root R."""
        return kernel_operator(self.kernel, x, self.train_x, backend=self.backend,
                               precision=self.solver.precision).matmul(self._root.root)

    def _lazy_root_covariance(self, x, rows, parts, chunk, variances=None) -> FactorDowndated:
        """prior - W W^T with W = K(x, X) R recomputed per chunk (``FactorDowndated``); its diagonal
        computed here as ``Downdated`` computes it, and with certified ``variances`` rescaled to
        them (S (prior - W W^T) S, S = sqrt(variances / that diagonal), as ``Downdated`` does)."""
        base = torch.cat([kernel_operator(self.kernel, x[..., part, :]).diagonal() - rows(part).square().sum(-1)
                          for part in parts], -1)
        scale = None
        if variances is not None:
            ok = (base > 0) & (variances > 0)
            scale = torch.where(ok, (variances.clamp_min(0) / torch.where(ok, base, 1.0)).sqrt(), 0.0)
            base = base * scale.square()
        return FactorDowndated(kernel_operator(self.kernel, x), x, self._root_factor, base, chunk, scale)

    def _spectrum_floor(self) -> tuple:
        """``certified.spectrum_floor``'s (mu, floor, kind) for this cache's K_hat and P."""
        if self._spectrum is None:
            self._spectrum = certified.spectrum_floor(self.op, self.precond, self.noise)
        return self._spectrum

    def _certify(self, cross: torch.Tensor, prior: torch.Tensor, x0: torch.Tensor | None = None):
        """(result, relative bounds, the mean's correction, its bound) of the certified solves
        against the rows of cross = K(x, X) ``(*batch, c, n)`` (``certified.certified_solves``)."""
        result = certified.certified_solves(self.op, self.precond, self._spectrum_floor(), cross, prior,
                                            self.solver.variance_tol, self.solver.max_iters, x0=x0)
        return (result, certified.relative_bounds(result, prior), *self._mean_correction(result, prior))

    def _report(self, results: list, bounds: torch.Tensor, mean_bound: torch.Tensor, dtype, stacklevel: int):
        """``certified.report`` with this cache's solver settings."""
        certified.report(self.diagnostics, results, bounds, self.solver.variance_tol, self._spectrum[2], dtype,
                         self.solver.max_iters, mean_bound=mean_bound, stacklevel=stacklevel)

    def _certified_chunks(self, x: torch.Tensor, start) -> tuple[torch.Tensor, torch.Tensor]:
        """(variances, the mean's correction), each ``(*batch, m)``, certified at x ``(*batch, m, d)`` in
        chunks of CERTIFY_CHUNK test points; start(part) gives the chunk's starting solutions
        ``(*batch, n, c)`` (the Lanczos root's R R^T k*, or the local solves) for x[..., part, :]."""
        prior = self.kernel.diag(x).expand(*self.op.batch_shape, x.shape[-2])
        parts = []
        for begin in range(0, x.shape[-2], CERTIFY_CHUNK):
            part = slice(begin, begin + CERTIFY_CHUNK)
            cross = kernel_operator(self.kernel, x[..., part, :], self.train_x, backend=self.backend,
                                    precision=self.solver.precision).to_dense()
            parts.append(self._certify(cross, prior[..., part], x0=start(part)))
        results, bounds, shifts, mean_bounds = zip(*parts)
        self._report(list(results), torch.cat(bounds, -1), torch.cat(mean_bounds, -1), x.dtype, stacklevel=8)
        return prior - torch.cat([r.quad for r in results], -1), torch.cat(shifts, -1)

    def _mean_correction(self, result, prior: torch.Tensor):
        """(shift, bound), each ``(*batch, c)``, for the test points of one certified solve ``result``:
        the posterior mean k*^T alpha plus shift = x^T (r - K_hat alpha) is off the exact one by
        (k* - K_hat x)^T (K_hat^{-1} r - alpha), at most ||x - K_hat^{-1} k*|| ||alpha -
        K_hat^{-1} r|| in the K_hat norm (Cauchy-Schwarz): the product of the certified solve's
        error and the mean solve's. bound: that, in posterior standard deviations."""
        if self._mean_residual is None:
            mean_resid = self.resid.unsqueeze(-1) - self.op.matmul(self.alpha)  # (*batch, n, 1)
            self._mean_residual = (mean_resid, certified.energy_bound(mean_resid, self.precond,
                                                                      self._spectrum_floor()))
        mean_resid, energy = self._mean_residual
        shift = (result.solution * mean_resid).sum(-2)
        low = certified.lowest_variance(result, prior)
        error = (result.error_bound * energy.unsqueeze(-1)).sqrt()
        return shift, torch.where(low > 0, error / torch.where(low > 0, low, 1.0).sqrt(), torch.inf)


# how each engine predicts, by its name (``Engine.name``)
PREDICTIONS = {"cholesky": CholeskyPrediction, "cg": CGPrediction}


def prediction_cache(model, solver, snapshot) -> PredictionCache:
    """The prediction cache of ``model`` at state ``snapshot`` (a ``StateSnapshot``) for
    ``solver``'s engine."""
    return PREDICTIONS[solver.engine().name](model, solver, snapshot)
