# Property-based reliability tests (hypothesis): random kernels, data, noise levels and dtypes keep
# every result finite with reported recoveries, and crossing the Auto threshold moves answers only within CG's tolerance.
import sys
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flashgp as fg
from flashgp.kernels import RBF, RQ, Linear, Matern, Periodic, Scale
from flashgp.linalg import pivoted_cholesky_preconditioner
from flashgp.operators import KernelOperator

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from random_problems import GAUSSIAN_NOISE_FLOOR, KERNELS, SOLVERS, Problem, check_problem  # noqa: E402

F64 = torch.float64
# derandomize: the same examples on every run (deterministic CI); no example database on disk
PROPERTY_SETTINGS = dict(deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def problems(draw, max_n: int = 40) -> Problem:
    """Problems like the benchmark sweep's, at small sizes (see random_problems.Problem)."""
    structure = draw(st.sampled_from(("single", "sum", "product")))
    kernels = tuple(draw(st.sampled_from(KERNELS)) for _ in range(1 if structure == "single" else 2))
    n = draw(st.integers(1, max_n))
    noise = 10 ** draw(st.floats(-6, 0))
    fixed = noise <= 1.5 * GAUSSIAN_NOISE_FLOOR or draw(st.booleans())
    return Problem(seed=draw(st.integers(0, 2**31 - 1)), kernels=kernels, structure=structure, n=n,
                   d=draw(st.integers(1, 3)), duplicates=draw(st.sampled_from(("none", "exact", "near"))),
                   noise=noise, fixed_noise=fixed, log10_lengthscale=draw(st.floats(-3, 3)),
                   ard=draw(st.booleans()), dtype=draw(st.sampled_from(("float32", "float64"))),
                   solver=draw(st.sampled_from(SOLVERS)), auto_threshold=draw(st.integers(0, max_n + 5)))


@settings(max_examples=30, **PROPERTY_SETTINGS)
@given(problems())
def test_random_problems_keep_the_invariants(problem):
    """mll and gradient finite; means finite; variances finite and >= 0 with clamps counted; the
    path in diagnostics; jitter, CG trouble and sampling fallbacks each reported (see check_problem)."""
    record = check_problem(problem)
    assert record["status"] == "ok", (record["failures"], record["facts"].get("error"))


# ----- Cholesky -> CG across the Auto threshold ------------------------------------------------
# Tight CG: tolerances 1e-10, at least n Lanczos steps (so each probe's quadrature is exact) and a
# rank-3 preconditioner (so CG and the log-det estimate still have work to do).
PROBES, RANK, TOL, PROBE_SEED = 32, 3, 1e-10, 3
ROUNDOFF = 1e-8  # relative allowance for float64 round-off (observed: below 1e-11)


def tight_cg(n: int, **changes) -> fg.CG:
    options = dict(tol=TOL, eval_tol=TOL, variance_tol=None, max_iters=20 * n, probes=PROBES, lanczos_iters=n,
                   precond=fg.PivotedCholesky(RANK))
    return fg.CG(**{**options, **changes})


def smooth_kernel(name: str, lengthscale: float, outputscale: float):
    base = {"rbf": lambda: RBF(lengthscale=lengthscale), "matern": lambda: Matern(nu=2.5, lengthscale=lengthscale),
            "rq": lambda: RQ(alpha=2.0, lengthscale=lengthscale),
            "periodic+rbf": lambda: Periodic(lengthscale=lengthscale, period=2.0) + RBF(lengthscale=lengthscale),
            "linear+matern": lambda: Linear(variance=0.5) + Matern(nu=1.5, lengthscale=lengthscale)}[name]()
    return Scale(base, outputscale=outputscale)


@st.composite
def well_posed_models(draw):
    """(model (float64, Gaussian noise >= 1e-3), x_test) with a few test points on training inputs."""
    n, d = draw(st.integers(8, 40)), draw(st.integers(1, 3))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = torch.rand(n, d, generator=gen, dtype=F64) * 4 - 2
    y = torch.sin(2 * x).sum(-1) + 0.1 * torch.randn(n, generator=gen, dtype=F64)
    x_test = torch.cat([torch.rand(6, d, generator=gen, dtype=F64) * 5 - 2.5, x[:3]])
    kernel = smooth_kernel(draw(st.sampled_from(("rbf", "matern", "rq", "periodic+rbf", "linear+matern"))),
                           10 ** draw(st.floats(-1, 0.5)), 10 ** draw(st.floats(-0.5, 0.5)))
    noise = 10 ** draw(st.floats(-3, 0))
    return fg.ExactGP(x, y, kernel, likelihood=fg.likelihoods.Gaussian(noise=noise)), x_test


def probe_error(model, solver: fg.CG) -> float:
    """(log-det estimate - log det K_hat) / (2 n), the error that the probes of ``solver`` make with exact
    quadrature: the probes z_i ~ N(0, P) are the first draws from the generator passed to mll(),
    and sum log det P + mean_i w_i^T log(A) w_i (A = L^-1 K_hat L^-T, w_i = L^-1 z_i, P = L L^T)."""
    with torch.no_grad():
        x, n = model.train_x, model.num_train
        noise = model.likelihood.noise_diag(n)
        k_hat = model.kernel(x) + torch.diag(noise)
        precond = pivoted_cholesky_preconditioner(KernelOperator(model.kernel, x), noise, solver.precond.rank)
        probes = precond.sample(solver.probes, generator=torch.Generator().manual_seed(PROBE_SEED))
        chol = torch.linalg.cholesky(precond.to_dense())
        half = torch.linalg.solve_triangular(chol, k_hat, upper=False)
        whitened = torch.linalg.solve_triangular(chol, half.T, upper=False)
        evals, evecs = torch.linalg.eigh(0.5 * (whitened + whitened.T))
        w = evecs.T @ torch.linalg.solve_triangular(chol, probes, upper=False)
        estimate = precond.logdet() + (w.square() * evals.log().unsqueeze(-1)).sum(0).mean()
        return float(estimate - torch.logdet(k_hat)) / (2 * n)


def cg_error_bounds(model, x_test, solver: fg.CG) -> dict:
    """Bounds on |CG - Cholesky| implied by the CG tolerances, from the exact float64 matrices.

    With relative residuals ||r|| <= rho ||b||, a solve is off by at most rho ||b|| / lambda_min(K_hat).
    The mll's solve shares its mean-residual tolerance ``tol`` with the probe columns
    (rho <= (probes + 1) tol), the mean solve has one column (rho <= eval_tol) and the m variance
    solves share eval_tol (rho <= m eval_tol each). The mll's log det differs from the exact one by
    the probes' Hutchinson error (``probe_error``, subtracted by the caller), not by tol.
    """
    with torch.no_grad():
        x, n = model.train_x, model.num_train
        k_hat = model.kernel(x) + torch.diag(model.likelihood.noise_diag(n))
        lam_min = float(torch.linalg.eigvalsh(k_hat)[0])
        b_norm = float((model.train_y - model.mean(x)).norm())
        cross_norm = model.kernel(x_test, x).norm(dim=-1)
    rho = (solver.probes + 1) * solver.tol
    return {"mll": b_norm * rho * b_norm / lam_min / (2 * n),
            "mean": cross_norm * solver.eval_tol * b_norm / lam_min,
            "variance": cross_norm ** 2 * x_test.shape[0] * solver.eval_tol / lam_min}


def answers(model, x_test, solver):
    """(path, mll, posterior mean, posterior variance) under ``solver``."""
    model.solver = solver
    mll = model.mll(generator=torch.Generator().manual_seed(PROBE_SEED))
    path = model.diagnostics["path"]
    post = model.posterior(x_test)
    assert model.diagnostics["path"] == path  # predictions take the same path
    return path, float(mll.detach()), post.mean, post.variance


def within_bounds(model, x_test, chol, cg, solver) -> bool:
    bound = cg_error_bounds(model, x_test, solver)
    expected_mll = chol[1] - probe_error(model, solver)  # mll = -(inv_quad + logdet + n log 2 pi) / 2n
    prior = model.kernel.diag(x_test).detach()
    return (abs(cg[1] - expected_mll) <= bound["mll"] + ROUNDOFF * max(1.0, abs(chol[1]))
            and bool(((cg[2] - chol[2]).abs() <= bound["mean"] + ROUNDOFF * (1 + chol[2].abs())).all())
            and bool(((cg[3] - chol[3]).abs() <= bound["variance"] + ROUNDOFF * prior).all()))


@settings(max_examples=25, **PROPERTY_SETTINGS)
@given(well_posed_models())
def test_crossing_the_auto_threshold_changes_answers_only_within_cg_tolerance(case):
    model, x_test = case
    n = model.num_train
    solver = tight_cg(n)
    with warnings.catch_warnings():
        warnings.simplefilter("error", fg.NumericalWarning)  # nothing to recover from here
        chol = answers(model, x_test, fg.Auto(max_cholesky_n=n, cg=solver))
        cg = answers(model, x_test, fg.Auto(max_cholesky_n=n - 1, cg=solver))
    assert chol[0] == "cholesky" and cg[0] == "cg"
    assert model.diagnostics["converged"] and model.diagnostics["variance_converged"]
    assert within_bounds(model, x_test, chol, cg, solver)


def test_the_threshold_comparison_can_fail():
    """CG stopped after 3 iterations (a truncated quadrature, loose solves) falls outside the bounds."""
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(40, 2, generator=gen, dtype=F64) * 4 - 2
    model = fg.ExactGP(x, torch.sin(2 * x).sum(-1), smooth_kernel("matern", 0.3, 1.0),
                       likelihood=fg.likelihoods.Gaussian(noise=0.01))
    chol = answers(model, x[:5], fg.Cholesky())
    tight = tight_cg(40)
    assert within_bounds(model, x[:5], chol, answers(model, x[:5], tight), tight)
    truncated = tight_cg(40, max_iters=3, lanczos_iters=3)
    with pytest.warns(fg.NumericalWarning, match="no convergence"):
        loose = answers(model, x[:5], truncated)
    assert not within_bounds(model, x[:5], chol, loose, truncated)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_solver_path_is_always_in_the_diagnostics(dtype):
    x = torch.linspace(0, 1, 12, dtype=dtype).reshape(-1, 1)
    model = fg.ExactGP(x, torch.sin(6 * x[:, 0]), Scale(RBF()))
    for threshold, path in [(11, "cg"), (12, "cholesky")]:
        model.solver = fg.Auto(max_cholesky_n=threshold)
        model.mll()
        assert model.diagnostics["path"] == path
        model.posterior(x[:3]).variance
        assert model.diagnostics["path"] == path and "variance_method" in model.diagnostics
