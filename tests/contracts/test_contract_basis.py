# The model contract (flashgp.testing.check_model) on BasisGP: a Hilbert-space Matern times a
# categorical kernel (likelihood from data statistics), per-point noise in row blocks, a batch model
# and float32 data, against dense float64 Cholesky references of the same (finite-feature) kernel.
import pytest
import torch

import flashgp as fg
from flashgp.kernels import Categorical, HilbertSpace, Matern, Scale
from flashgp.testing import check_model, exact_gp_loss_reference, exact_gp_posterior_reference

from references import F64, generator

N, D, LEVELS = 40, 2, 3
EXACT = dict(loss_atol=1e-10, grad_rtol=1e-8, mean_atol=1e-9, var_rtol=1e-8)
FLOAT32 = dict(loss_atol=1e-5, grad_rtol=1e-3, mean_atol=1e-5, var_rtol=1e-4, var_atol=1e-6, dtype=torch.float32)
CASES = {  # name -> (BasisGP options, batch, tolerances and the data's dtype)
    "mixed": (dict(), (), EXACT),
    # per-point noise: the likelihood is accumulated over the data in row blocks (7 rows each),
    # not taken from data statistics
    "fixed_noise_blocks": (dict(memory_budget=4 * 8 * 6 * 6 * (LEVELS + 1) * 7, fixed_noise=True), (), EXACT),
    "batch": (dict(), (2,), EXACT),
    "float32": (dict(), (), FLOAT32),
}


def data(batch, seed=0):
    """x (*batch, N, D + 1): D continuous columns on [-2, 2] and a level code column; y with a
    level offset."""
    g = generator(seed)
    x = torch.rand(*batch, N, D, generator=g, dtype=F64) * 4 - 2
    levels = torch.randint(0, LEVELS, (*batch, N, 1), generator=g).to(F64)
    y = (torch.sin(2 * x[..., 0]) + 0.5 * x[..., 1] + 0.4 * levels[..., 0]
         + 0.1 * torch.randn(*batch, N, generator=g, dtype=F64))
    return torch.cat([x, levels], -1), y


def kernel(batch):
    return Scale(HilbertSpace(Matern(nu=2.5, ard_dims=D, active_dims=[0, 1], batch_shape=batch), num_basis=6)
                 * Categorical(LEVELS, active_dims=[D], batch_shape=batch))


@pytest.mark.parametrize("case", list(CASES))
def test_basis_gp(case, tmp_path):
    options, batch, tol = CASES[case]
    tol = dict(tol)
    dtype = tol.pop("dtype", F64)
    x, y = (t.to(dtype) for t in data(batch))
    g = generator(1)
    test_x = torch.cat([torch.rand(*batch, 9, D, generator=g, dtype=F64) * 3.6 - 1.8,
                        torch.randint(0, LEVELS, (*batch, 9, 1), generator=g).to(F64)], -1).to(dtype)

    options = dict(options)
    if options.pop("fixed_noise", False):
        noise = 0.01 + 0.02 * torch.rand(*batch, N, generator=generator(2), dtype=F64)
        options["likelihood"] = fg.likelihoods.FixedNoise(noise.to(dtype))

    def make():
        return fg.BasisGP(x, y, kernel(batch), **options)

    check_model(make, test_x, loss_reference=exact_gp_loss_reference, posterior_reference=exact_gp_posterior_reference,
                tmp_dir=tmp_path, name=f"BasisGP({case})", fit_kwargs=dict(lr=0.1, iters=6, seed=0), **tol)
