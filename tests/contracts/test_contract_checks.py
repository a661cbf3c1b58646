# The contract checks themselves: each must fail, with a message naming the check, on an extension
# with a planted bug (a wrong product, gradient or entry; a sample covariance off by a factor of 2,
# by 10% or from a transposed factor; a wrong log det, split factor or claimed floor; a model whose
# loss, predictions or solver state are off), and pass on the same extension without it.
import math
import re

import pytest
import torch

import flashgp as fg
from flashgp.kernels import Matern, Scale
from flashgp.operators import Dense
from flashgp.preconditioners import Preconditioner
from flashgp.testing import (check_loss, check_operator, check_posterior, check_preconditioner,
                             check_solver_state, exact_gp_loss_reference, exact_gp_posterior_reference)

from references import F64, dense_kernel, generator, inputs, randomized

N = 30


# ----- operators -----------------------------------------------------------------------------------

class Planted(Dense):
    """Dense with one planted bug: "matmul" (a 1e-6 relative error in one entry), "grad" (twice the
    gradient), "rows" (the columns instead of the rows) or "diagonal" (the first entry off)."""

    def __init__(self, matrix, bug=None):
        super().__init__(matrix)
        self.bug = bug

    def _matmul(self, rhs):
        out = super()._matmul(rhs)
        if self.bug == "matmul":
            out = out.clone()
            out[..., 0, :] *= 1 + 1e-6
        return out

    def rows(self, index):
        return self.matrix.detach().mT[..., index, :] if self.bug == "rows" else super().rows(index)

    def diagonal(self):
        d = super().diagonal()
        return d + (torch.arange(d.shape[-1]) == 0) * 1e-3 if self.bug == "diagonal" else d

    def bilinear_grad(self, left, right):
        grads = super().bilinear_grad(left, right)
        return tuple(2 * g for g in grads) if self.bug == "grad" else grads


@pytest.mark.parametrize("bug,message", [(None, None), ("matmul", "matmul with"), ("grad", "bilinear_grad"),
                                         ("rows", "rows()"), ("diagonal", "diagonal()")])
def test_operator_check_catches_planted_bugs(bug, message):
    matrix = torch.randn(N, N, generator=generator(1), dtype=F64).requires_grad_()
    run = lambda: check_operator(lambda: Planted(matrix, bug), lambda op: matrix, name="Planted")  # noqa: E731
    if bug is None:
        run()
        return
    with pytest.raises(AssertionError, match=f"Planted: {re_escape(message)}"):
        run()


def re_escape(text):
    return re.escape(text)


# ----- preconditioners ---------------------------------------------------------------------------

class DensePreconditioner(Preconditioner):
    """P = C C^T (C lower Cholesky factor) with one planted bug: "sample_x2" (draws of covariance
    2 P), "sample_10pct" (1.1 P), "sample_transposed" (C^T e: covariance C^T C), "logdet"
    (off by log 2), "solve" (P^-1 with a 1e-6 error in one entry), "mul_t" (U instead of U^T),
    "floor" (claims spectrum_floor 1 where P^-1 K_hat goes below 1)."""

    def __init__(self, p, bug=None, split=False, floor=None):
        self.p, self.c, self.bug, self.split = p, torch.linalg.cholesky(p), bug, split
        self.shape, self.dtype, self.device = p.shape, p.dtype, p.device
        self.spectrum_floor = 1.0 if bug == "floor" else floor

    def solve(self, rhs):
        out = torch.cholesky_solve(rhs, self.c)
        if self.bug == "solve":
            out = out.clone()
            out[..., 0, :] *= 1 + 1e-6
        return out

    def logdet(self):
        return 2 * self.c.diagonal().log().sum() + (math.log(2) if self.bug == "logdet" else 0.0)

    def sample(self, num_samples, generator=None):
        e = torch.randn(self.p.shape[-1], num_samples, dtype=self.dtype, generator=generator)
        factor = self.c.mT if self.bug == "sample_transposed" else self.c
        scale = {"sample_x2": math.sqrt(2), "sample_10pct": math.sqrt(1.1)}.get(self.bug, 1.0)
        return scale * factor @ e

    def mul(self, rhs):  # U = C^-1: U^T U = C^-T C^-1 = P^-1
        return torch.linalg.solve_triangular(self.c, rhs, upper=False)

    def mul_t(self, rhs):
        if self.bug == "mul_t":
            return self.mul(rhs)
        return torch.linalg.solve_triangular(self.c.mT, rhs, upper=True)


def kernel_problem():
    """(K_hat, P = a rank-8 truncated eigen-approximation of K plus the noise: P <= K_hat)."""
    x = inputs(N, d=2, seed=3)
    with torch.no_grad():
        k = dense_kernel(randomized(Scale(Matern(nu=1.5)), seed=4), x)
    evals, evecs = torch.linalg.eigh(k)
    low = evecs[:, -8:] @ torch.diag(evals[-8:]) @ evecs[:, -8:].mT
    noise = 0.05 * torch.eye(N, dtype=F64)
    return k + noise, low + noise


PLANTED = {None: None, "sample_x2": "sample(4096)", "sample_10pct": "sample(4096)",
           "sample_transposed": "sample(4096)", "logdet": "logdet()", "solve": "solve with",
           "mul_t": "split form, mul_t(I)", "floor": "spectrum_floor"}


@pytest.mark.parametrize("bug,split", [(bug, split) for bug in PLANTED for split in (False, True)
                                       if split or bug != "mul_t"])  # mul_t: split ones only
def test_preconditioner_check_catches_planted_bugs(bug, split):
    message = PLANTED[bug]
    k_hat, p = kernel_problem()
    if bug == "floor":  # a P that is not below K_hat: P^-1 K_hat has eigenvalues under 1
        p = p + 0.5 * torch.eye(N, dtype=F64)
    precond = DensePreconditioner(p, bug, split=split, floor=None if split else 1.0)
    run = lambda: check_preconditioner(precond, k_hat, p_dense=p, name="Dense")  # noqa: E731
    if bug is None:
        run()
        return
    with pytest.raises(AssertionError, match=re_escape(f"Dense (P from p_dense): {message}")):
        run()


def test_sample_check_catches_a_transposed_factor_without_p_dense():
    """With P taken from the (correct) solve, a transposed sampling factor is still caught."""
    k_hat, p = kernel_problem()
    with pytest.raises(AssertionError, match="standard deviations|as a whole"):
        check_preconditioner(DensePreconditioner(p, "sample_transposed"), k_hat)


# ----- models ------------------------------------------------------------------------------------

def small_model():
    g = generator(5)
    x = torch.rand(N, 2, generator=g, dtype=F64) * 4 - 2
    y = torch.sin(2 * x[:, 0]) + 0.1 * torch.randn(N, generator=g, dtype=F64)
    return fg.ExactGP(x, y, Scale(Matern(nu=2.5, ard_dims=2)), solver=fg.Cholesky())


def test_loss_check_catches_a_wrong_loss_and_a_lost_gradient():
    check_loss(small_model(), exact_gp_loss_reference, atol=1e-9, grad_rtol=1e-6)
    model = small_model()
    loss = model.loss
    model.loss = lambda generator=None: loss(generator) + 1e-6
    with pytest.raises(AssertionError, match="loss\\(\\): max \\|difference\\| 1e-06"):
        check_loss(model, exact_gp_loss_reference, atol=1e-9)
    model = small_model()
    model.loss = lambda generator=None: loss(generator).detach() + 0 * model.mean.constant.sum()
    with pytest.raises(AssertionError, match="no gradient reaches"):
        check_loss(model, exact_gp_loss_reference, atol=1e-6)


def test_posterior_check_catches_predictions_without_noise():
    x = torch.linspace(-2, 2, 7, dtype=F64).unsqueeze(-1).expand(7, 2)
    check_posterior(small_model(), x, exact_gp_posterior_reference, mean_atol=1e-8, var_rtol=1e-6)
    model = small_model()
    model.predict = lambda test_x, noise=None: model.posterior(test_x)
    with pytest.raises(AssertionError, match="predict\\(x\\).variance"):
        check_posterior(model, x, exact_gp_posterior_reference, mean_atol=1e-8, var_rtol=1e-6)


def test_solver_state_check_catches_non_tensors():
    model = small_model()
    model.solver_state = lambda: {"pivots": [1, 2, 3]}
    with pytest.raises(AssertionError, match="entry 'pivots'"):
        check_solver_state(model)
