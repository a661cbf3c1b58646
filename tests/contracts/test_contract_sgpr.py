# The model contract (flashgp.testing.check_model) on SGPR: learned and fixed inducing points,
# row blocks, a batch model and float32 data, against dense float64 references.
import pytest
import torch

import flashgp as fg
from flashgp.kernels import Matern, Scale
from flashgp.testing import check_model, sgpr_loss_reference, sgpr_posterior_reference

from references import F64, generator

N, D, M = 40, 2, 8
EXACT = dict(loss_atol=1e-10, grad_rtol=1e-8, mean_atol=1e-9, var_rtol=1e-8)
FLOAT32 = dict(loss_atol=1e-5, grad_rtol=1e-3, mean_atol=1e-5, var_rtol=1e-4, var_atol=1e-6, dtype=torch.float32)
CASES = {  # name -> (SGPR options, batch, tolerances and the data's dtype)
    "learned": (dict(), (), EXACT),
    "fixed_rpcholesky": (dict(learn_inducing=False, init="rpcholesky"), (), EXACT),
    "blocks": (dict(memory_budget=4 * 8 * M * 7), (), EXACT),
    "batch": (dict(), (2,), EXACT),
    "float32": (dict(), (), FLOAT32),
}


def data(batch, seed=0):
    g = generator(seed)
    x = torch.rand(*batch, N, D, generator=g, dtype=F64) * 4 - 2
    y = torch.sin(2 * x[..., 0]) + 0.5 * x[..., 1] + 0.1 * torch.randn(*batch, N, generator=g, dtype=F64)
    return x, y


@pytest.mark.parametrize("case", list(CASES))
def test_sgpr(case, tmp_path):
    options, batch, tol = CASES[case]
    tol = dict(tol)
    dtype = tol.pop("dtype", F64)
    x, y = (t.to(dtype) for t in data(batch))
    test_x = (torch.rand(*batch, 9, D, generator=generator(1), dtype=F64) * 4 - 2).to(dtype)

    def make():
        return fg.SGPR(x, y, Scale(Matern(nu=2.5, ard_dims=D, batch_shape=batch)), inducing=M, **options)

    check_model(make, test_x, loss_reference=sgpr_loss_reference, posterior_reference=sgpr_posterior_reference,
                tmp_dir=tmp_path, name=f"SGPR({case})", fit_kwargs=dict(lr=0.1, iters=6, seed=0), **tol)
