# The "how to add" walk-throughs of docs/architecture.md, run: a likelihood (Poisson) and a
# preconditioner (Jacobi) written as the page shows pass the contract checks and serve flashgp.
import math
from dataclasses import dataclass

import pytest
import torch

import flashgp as fg
from flashgp.likelihoods import Likelihood
from flashgp.operators.low_rank import LowRankPlusDiag
from flashgp.preconditioners import EmptyState, PreconditionerConfig
from flashgp.preconditioners.base import tagged
from flashgp.testing import check_preconditioner

F64 = torch.float64


class Poisson(Likelihood):
    """y ~ Poisson(exp(f)), as docs/architecture.md writes it."""

    def _log_prob(self, y, f):
        return y * f - f.exp() - torch.lgamma(y + 1)

    def _conditional_moments(self, f):
        return f.exp(), f.exp()

    def _expected_log_prob(self, y, mean, var, points):  # closed form
        return y * mean - (mean + var / 2).exp() - torch.lgamma(y + 1)


@dataclass(frozen=True)
class Jacobi(PreconditionerConfig):
    """P = diag(K) + diag(noise), as docs/architecture.md writes it."""

    kind = "jacobi"

    def new_state(self):
        return EmptyState(Jacobi)

    def build(self, kernel_op, noise, state=None, purpose="train"):
        diag = (kernel_op.diagonal() + noise).detach()
        empty = torch.zeros(*diag.shape, 0, dtype=diag.dtype, device=diag.device)
        return tagged(LowRankPlusDiag(empty, diag), self.kind)


def test_likelihood_walkthrough_matches_its_quadrature_and_a_monte_carlo_mean():
    lik = Poisson()
    g = torch.Generator().manual_seed(0)
    mean, var = torch.randn(50, generator=g, dtype=F64), torch.rand(50, generator=g, dtype=F64)
    y = torch.poisson(mean.exp(), generator=g)
    closed = lik.expected_log_prob(y, mean, var)
    by_quadrature = Likelihood._expected_log_prob(lik, y, mean, var, 40)
    assert torch.allclose(closed, by_quadrature, atol=1e-9)
    moments = lik.predictive(mean, var)  # quadrature: E[y] = exp(mean + var / 2)
    assert torch.allclose(moments.mean, (mean + var / 2).exp(), rtol=1e-8)
    f = mean + var.sqrt() * torch.randn(200_000, 50, generator=g, dtype=F64)
    mc = lik.log_prob(y, f).mean(0)
    assert (mc - closed).abs().max() < 0.05


def test_preconditioner_walkthrough_passes_the_contract_and_serves_cg():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(300, 2, generator=g, dtype=F64)
    y = torch.sin(6 * x[:, 0]) + 0.1 * torch.randn(300, generator=g, dtype=F64)
    kernel = fg.kernels.Scale(fg.kernels.RBF(ard_dims=2, lengthscale=0.3), outputscale=1.0)
    noise = torch.full((300,), 0.05, dtype=F64)
    op = fg.operators.KernelOperator(kernel, x)
    precond = Jacobi().build(op, noise)
    k_hat = op.to_dense().detach() + torch.diag(noise)
    check_preconditioner(precond, k_hat, name="Jacobi")
    exact = fg.ExactGP(x, y, kernel, likelihood=fg.likelihoods.Gaussian(noise=0.05), solver=fg.Cholesky())
    cg = fg.ExactGP(x, y, kernel, likelihood=fg.likelihoods.Gaussian(noise=0.05),
                    solver=fg.CG(precond=Jacobi(), probes=64, max_iters=2000))
    want = float(exact.mll().detach())
    got = float(cg.mll(generator=torch.Generator().manual_seed(2)).detach())
    assert cg.diagnostics["precond_rank"] == 0 and cg.diagnostics["converged"]
    assert got == pytest.approx(want, abs=0.05), (got, want)
    assert math.isfinite(got)
