# Solver configuration objects, passed explicitly to models (no global settings):
# Cholesky(), CG(...), Auto(...) and the preconditioner configurations PivotedCholesky(rank) and
# Vecchia(neighbors).
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

from .backends import BACKENDS
from .backends.fused import DEFAULT_PRECISION, PRECISIONS


def _check_positive(config, name: str, integer: bool = False, allow_zero: bool = False) -> None:
    """Check the field ``name`` of the frozen dataclass ``config``: a finite number > 0 (>= 0 with
    ``allow_zero``), an int if ``integer``; numpy scalars are stored as Python int/float."""
    value = getattr(config, name)
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name}: expected {'an int' if integer else 'a number'}, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name}: expected {'>= 0' if allow_zero else '> 0'}, got {value}")
    object.__setattr__(config, name, int(value) if integer else float(value))


@dataclass(frozen=True)
class PivotedCholesky:
    """Preconditioner P = L L^T + noise, L the rank-``rank`` pivoted Cholesky factor of K
    (with ``block_size``: plus diagonal blocks of K_hat - L L^T over near points).

    Args:
        rank: the number of columns of L (0: the diagonal preconditioner P = noise).
        refresh_every: how many preconditioner builds of a model's training (``model.mll()``
            calls on the CG path) may share the pivots of one greedy pivoted Cholesky. The
            greedy run takes ``rank`` sequential steps; with its pivots P kept, the next builds
            get L = K[:, P] chol(K[P, P])^{-T} at the new hyperparameters from one row
            evaluation, one small Cholesky and a product with its inverse. 1 chooses fresh pivots at
            every build. Fresh pivots are also chosen early when a step's CG iterations exceed
            1.5 times (plus 2) those of the step that chose the pivots (the preconditioner has
            gone stale), when the training data or its shape, dtype or device change, and when
            the rebuild fails. Any such P is SPD, so the mll estimate stays unbiased; only the
            CG iterations and the variance of the log-det estimate depend on how good it is.
            ``model.diagnostics["precond_pivots"]`` says "greedy" or "reused" per step. With
            fixed probes (L-BFGS, ``polish_lbfgs``) the estimate at given hyperparameters then
            also depends on where the pivots were chosen (between refreshes it is smooth in
            the hyperparameters); refresh_every=1 makes it a function of them alone.
        max_rank: let a model's training grow the rank up to this (None: the rank stays fixed).
            When the solve with freshly chosen pivots needs more than 1.5 times (plus 2) the CG
            minimum (``CG.lanczos_iters``, counted as at least 10), the preconditioner is too
            weak for the current hyperparameters (small noise, many points per lengthscale):
            the next build doubles the rank, up to max_rank, and chooses new pivots. The rank
            never shrinks during a fit. Memory: the factor is n x rank in the data's dtype (the
            float64 Woodbury solve converts it in blocks of rows). At the hyperparameters the n = 1M fit
            reached, a CPU stand-in needed 79 / 36 / 20 CG iterations at rank 100 / 200 / 400
            (benchmarks/results/session7/README.md).
        eval_rank: the rank of the preconditioner of the posterior mean solve (None: the rank
            training ended with, grown or not). The prediction solve runs to ``CG.eval_tol``, far
            below training's tolerance, so it profits most from a larger rank. At the
            hyperparameters of the n = 1M fit on an H200 it took 868 CG iterations and 351 s at
            rank 400, 198 iterations and 98 s at rank 1600, at the cost of an n x 1600 float32
            factor (benchmarks/results/session9/README.md).
        block_size: 0 (default) for P = L L^T + noise. b > 0 adds the part of K_hat that L
            misses at short range: P = L L^T + blockdiag(K_hat - L L^T) over blocks of b
            points that lie near each other (a k-d ordering of the lengthscale-scaled inputs,
            ``linalg.spatial``). Each block is factored exactly (float64), so solves, log det
            and probe samples stay exact for P, and P is SPD for any L. Memory: n x b numbers
            more, as much as b more columns of L; build cost: n b kernel entries and n b k
            multiply-adds. It helps where the noise is small against the kernel's local
            variation (many points per lengthscale) in few dimensions, which a low rank cannot
            capture. On an H200 (benchmarks/results/session16/), blocks of 256 took protein
            (d = 9) from 20-54 to 20-22 CG iterations per training step (0.105 to 0.076 s per
            step, test NLL 0.980 to 0.871) and its posterior mean solve from 204 to 87; at
            n = 1M (d = 3) they cut the residual of y after 95 CG iterations from 1.23 to 0.19.
            They made elevators (d = 18) slower: 0.024 to 0.034-0.063 s per step, 42 to 86
            iterations for its posterior mean; at UCI sizes a build takes 9-13 ms and a solve
            0.4 ms against 0.1 ms. Hence the default 0.
    """

    rank: int = 100
    refresh_every: int = 10
    max_rank: int | None = None
    eval_rank: int | None = None
    block_size: int = 0

    def __post_init__(self):
        _check_positive(self, "rank", integer=True, allow_zero=True)
        _check_positive(self, "refresh_every", integer=True)
        if self.max_rank is not None:
            _check_positive(self, "max_rank", integer=True, allow_zero=True)
            if self.max_rank < self.rank:
                raise ValueError(f"max_rank: expected None or an int >= rank ({self.rank}), "
                                 f"got {self.max_rank}")
        if self.eval_rank is not None:
            _check_positive(self, "eval_rank", integer=True, allow_zero=True)
        _check_positive(self, "block_size", integer=True, allow_zero=True)


@dataclass(frozen=True)
class Vecchia:
    """Preconditioner P = (U^T U)^{-1}, U a sparse inverse Cholesky factor of K_hat: each point
    conditioned on its ``neighbors`` nearest predecessors in a random order of the points, in
    the lengthscale-scaled inputs (``linalg.vecchia``). For stationary kernels in few dimensions
    with many points per lengthscale and a small noise, where a low-rank factor is far from
    K_hat: random orders make the first points sparse, so the conditionals cover long range
    as well as short.

    CG then runs on U K_hat U^T with N(0, I) probes (the same estimator as preconditioned CG
    with N(0, P) probes; no triangular solve is needed), so its residuals and ``CG.tol`` are
    measured in the P^{-1} norm in training. Needs a KernelOperator (any backend).

    Args:
        neighbors: predecessors per point (m). Memory: n (m + 1) weights and indices; build:
            n kernel blocks of (m + 1)^2 entries and their float64 Cholesky factors, plus a
            nearest-neighbour search (grid for up to 4 dimensions, else exhaustive blocks).
        refresh_every: preconditioner builds of a model's training that share one neighbour
            search (the weights are rebuilt at every build; the neighbours were chosen at the
            lengthscales of the search). 1 searches at every build.
        seed: the random order's seed.

    Measured (benchmarks/results/session17/): at n = 1M (d = 3, Matern 5/2, the session-8 fit's
    final hyperparameters, one H200) a training step with Vecchia(30) and ``lanczos_iters=10``
    took 9.88 s (10 CG iterations), against 18.45 s for rank 800 with 20 iterations; a build
    takes 0.16-0.17 s with the neighbours reused and 0.35-0.40 s with a new search; U and U^T
    products with 11 columns take 3.3 ms. On a CPU stand-in of that state (n = 12,000) its
    10-iteration mll was 1.8e-4 nats per point off float64 Cholesky and its gradient 0.3%,
    where rank 400 with 25 iterations was 0.77 nats off with a gradient pointing the wrong way.
    On UCI sets (H200, 20 Adam steps) it made protein's step 1.55x faster (20 CG iterations a
    step instead of 20-61; test NLL 0.864 against 0.983) and elevators' and kin40k's 1.12-1.14x
    slower, with their RMSE and NLL unchanged. Not the default: high-dimensional inputs make
    nearest neighbours a weak guide, and the search there is exhaustive (O(n^2)).
    """

    neighbors: int = 30
    refresh_every: int = 10
    seed: int = 0

    def __post_init__(self):
        _check_positive(self, "neighbors", integer=True)
        _check_positive(self, "refresh_every", integer=True)
        _check_positive(self, "seed", integer=True, allow_zero=True)


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
            1e-3 the README quickstart's variances were 1.05-3x the exact ones.
        variance_tol: the relative error certified for every posterior variance on the CG path
            (default 0.01; None: no certificate, the behaviour before it existed). Each test
            point's solve runs until a bound on the error of k*^T K_hat^{-1} k* is below
            variance_tol times the smallest variance the bound allows, plus 100 eps k(x*, x*)
            (the resolution of k** - k*^T K_hat^{-1} k* in the data's dtype; ``models.certified``);
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
        precond: preconditioner configuration: PivotedCholesky (default), Vecchia, or None (no
            preconditioner).
        root_rank: Lanczos iterations for the cached root of K_hat^{-1} (fast variances, LOVE).
        exact_var_max: test sets up to this size get variances by CG solves (more exact).
        local_neighbors: 0 (default): larger test sets get LOVE variances from the Lanczos root.
            k > 0: they get local ones instead, var(f* | the k training points nearest to x*)
            (``models.local_variance``): an upper bound on the exact variance, close to it when
            near points screen off the rest (stationary kernels, dense data), and without the
            root rank that LOVE needs there. Marginal variances only (no covariances).
        backend: kernel operator backend, "auto", "dense", "blocked" or "triton".
        precision: arithmetic of the fused GPU kernels (backend "triton"): "fp16x3" (default:
            K @ V in three float16 tensor-core products of split operands, gradients as
            "tf32x3"; as accurate as "tf32x3" on an H200 and 1.13-1.27x faster at n = 1M,
            benchmarks/results/session14/), "tf32x3" (3xTF32 tensor-core products; on an H200
            its K @ V was within 5e-7 of float64, closer than "fp32"'s 2.5e-6, and twice as
            fast, benchmarks/results/session4/), "fp32" (IEEE float32 on the CUDA cores),
            "tf32" (10-bit mantissa products, fastest; not for training: it warns there, see
            benchmarks/results/precision_accuracy_h200.md). The dense and blocked backends
            compute in the data's dtype whatever this says (on GPUs with TMA a large stored
            float32 K is multiplied by a Triton kernel in 3xTF32, IEEE float32 for "fp32":
            float32 accuracy either way).
        memory_budget: bytes the "auto" backend may give a dense kernel matrix (None: a quarter
            of a CUDA device's memory, 2 GiB elsewhere; see ``backends.choice``).
        reorthogonalize: CG with full re-orthogonalization of its residuals (``linalg.mbcg``)
            in training and in the posterior mean solve (not the variance solves, which have a
            column per test point). It keeps 2 (n, t) tensors per iteration (t = probes + 1 in
            training) and, on ill-conditioned float32 problems on a CPU, cut the iterations
            1.35-2.6x and converged where plain CG stalled (benchmarks/results/
            reorthogonalization_cpu.md). With bfloat16 products every column still broke down
            (K_hat rounded to bfloat16 is indefinite at those noise levels): not a fix for that.
    """

    tol: float = 1.0
    eval_tol: float = 1e-3
    variance_tol: float | None = 0.01
    max_iters: int = 1000
    probes: int = 10
    lanczos_iters: int = 20
    precond: PivotedCholesky | Vecchia | None = field(default_factory=PivotedCholesky)
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
        if self.precond is not None and not isinstance(self.precond, (PivotedCholesky, Vecchia)):
            raise TypeError(f"precond: expected PivotedCholesky, Vecchia or None, got "
                            f"{type(self.precond).__name__}")
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
