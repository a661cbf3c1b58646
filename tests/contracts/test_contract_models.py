# The model contract (flashgp.testing.check_model) on ExactGP: Cholesky, CG with pivoted Cholesky,
# CG with Vecchia, and batch models, against dense float64 Cholesky references.
import pytest
import torch

import flashgp as fg
from flashgp.kernels import Matern, Scale
from flashgp.testing import check_model, exact_gp_loss_reference, exact_gp_posterior_reference

from references import F64, generator

N, D = 40, 2
EXACT = dict(loss_atol=1e-9, grad_rtol=1e-6, mean_atol=1e-8, var_rtol=1e-6)
# CG: training solves to CG.tol (1e-4) and a stochastic log det and gradient, with 256 probes
# (at 32 the gradient estimate's spread was 8% of its largest entry, with either preconditioner:
# it does not shrink as P^-1 K_hat nears I); the rank-30 pivoted Cholesky keeps the log det's
# spread near 0.1 nats (rank 10 left 1.9 at 64 probes); predictions to eval_tol (1e-3) and
# certified variances (variance_tol 0.01, upper bounds of the exact ones)
CG = dict(tol=1e-4, probes=256)
# fits that move the lengthscales enough that a resumed run which lost the reused pivots or
# neighbour index (refresh_every 10 > the steps) would end elsewhere
CG_FIT = dict(fit_kwargs=dict(lr=0.2, iters=8, seed=0), interrupt_after=5, checkpoint_every=3)
CG_TOL = dict(loss_atol=0.02, grad_rtol=0.15, mean_atol=2e-3, var_rtol=0.02, **CG_FIT)
# float32 data: against the float64 reference of a float64 copy of the model
FLOAT32 = dict(loss_atol=1e-5, grad_rtol=1e-3, mean_atol=1e-4, var_rtol=1e-3, var_atol=1e-6, dtype=torch.float32)
CASES = {  # name -> (solver, batch, tolerances and the data's dtype)
    "cholesky": (lambda: fg.Cholesky(), (), EXACT),
    "cg_pivoted_cholesky": (lambda: fg.CG(**CG, precond=fg.PivotedCholesky(rank=30)), (), CG_TOL),
    "cg_vecchia": (lambda: fg.CG(**CG, precond=fg.Vecchia(neighbors=8)), (), CG_TOL),
    "batch_cholesky": (lambda: fg.Cholesky(), (2,), EXACT),
    "batch_cg": (lambda: fg.CG(**CG, precond=fg.PivotedCholesky(rank=30)), (2,), CG_TOL),
    "float32_cholesky": (lambda: fg.Cholesky(), (), FLOAT32),
}



def data(batch, seed=0):
    """x (*batch, N, D) on [-2, 2]^D and y (*batch, N): a smooth function plus noise 0.1."""
    g = generator(seed)
    x = torch.rand(*batch, N, D, generator=g, dtype=F64) * 4 - 2
    y = torch.sin(2 * x[..., 0]) + 0.5 * x[..., 1] + 0.1 * torch.randn(*batch, N, generator=g, dtype=F64)
    return x, y


def make_model(solver, batch, dtype=F64):
    """() -> a fresh ExactGP on data(batch) (in dtype) with a Scale(Matern 5/2) kernel and solver()."""
    x, y = (t.to(dtype) for t in data(batch))
    return lambda: fg.ExactGP(x, y, Scale(Matern(nu=2.5, ard_dims=D, batch_shape=batch)), solver=solver())


@pytest.mark.parametrize("case", list(CASES))
def test_exact_gp(case, tmp_path):
    solver, batch, tol = CASES[case]
    tol = dict(tol)
    dtype = tol.pop("dtype", F64)
    test_x = (torch.rand(*batch, 9, D, generator=generator(1), dtype=F64) * 4 - 2).to(dtype)
    check_model(make_model(solver, batch, dtype), test_x, loss_reference=exact_gp_loss_reference,
                posterior_reference=exact_gp_posterior_reference, tmp_dir=tmp_path, name=f"ExactGP({case})",
                **tol)


SKI_CASES = {  # name -> (solver, tolerances): an Interpolated (SKI) kernel, its dense W K_UU W^T the reference
    "ski_cholesky": (lambda: fg.Cholesky(), EXACT),
    "ski_cg_pivoted_cholesky": (lambda: fg.CG(**CG, precond=fg.PivotedCholesky(rank=30)), CG_TOL),
}


@pytest.mark.parametrize("case", list(SKI_CASES))
def test_ski_exact_gp(case, tmp_path):
    """ExactGP with fg.kernels.Interpolated(Scale(Matern 5/2)) on a 2-D grid (a multi-level Toeplitz
    K_UU): the references are the dense Cholesky of the SKI kernel itself."""
    solver, tol = SKI_CASES[case]
    x, y = data(())

    def make():
        return fg.ExactGP(x, y, fg.kernels.Interpolated(Scale(Matern(nu=2.5, ard_dims=D)), grid_size=16),
                          solver=solver())
    test_x = torch.rand(9, D, generator=generator(1), dtype=F64) * 4 - 2
    check_model(make, test_x, loss_reference=exact_gp_loss_reference, posterior_reference=exact_gp_posterior_reference,
                tmp_dir=tmp_path, name=f"ExactGP({case})", **tol)
