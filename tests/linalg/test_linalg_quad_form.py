# quad_form_cg: b^T A^{-1} b with a Gauss-Radau error bound per column, against dense float64 solves.
import pytest
import torch

from flashgp.linalg.quad_form import quad_form_cg, variance_acceptance


def spd(n, noise, seed, dtype=torch.float64):
    """A = K + noise I for a squared-exponential K on random 2-D points; B = K(X, X*) (n, 12)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, generator=gen, dtype=dtype)
    xs = torch.rand(12, 2, generator=gen, dtype=dtype)
    kern = lambda a, b: 1.5 * torch.exp(-0.5 * torch.cdist(a, b).square() / 0.2**2)
    return kern(x, x) + noise * torch.eye(n, dtype=dtype), kern(x, xs)


@pytest.mark.parametrize("noise", [1e-1, 1e-3])
def test_bound_holds_every_iteration_and_certifies_the_variance(noise):
    a, b = spd(400, noise, 0)
    exact = (b * torch.linalg.solve(a, b)).sum(0)
    prior = torch.full((12,), 1.5, dtype=torch.float64)
    for iters in (1, 3, 10, 30):
        res = quad_form_cg(lambda v: a @ v, b, noise, lambda q, e: torch.zeros_like(q, dtype=torch.bool),
                           max_iters=iters)
        true = exact - res.quad
        assert (true >= -1e-12).all()  # the quadratic form is a lower bound
        assert (true <= res.error_bound * (1 + 1e-8) + 1e-12).all()
        assert res.iterations == iters
    res = quad_form_cg(lambda v: a @ v, b, noise, variance_acceptance(prior, 1e-2), max_iters=2000)
    var, var_exact = prior - res.quad, prior - exact
    assert res.certified.all()
    assert ((var - var_exact) / var_exact).abs().max() < 1e-2
    assert (var >= var_exact - 1e-12).all()


def test_preconditioned_and_warm_started_bounds():
    a, b = spd(300, 1e-2, 1)
    exact = (b * torch.linalg.solve(a, b)).sum(0)
    # P = diag(A): mu = lambda_min(P^-1 A) from the dense matrix
    d = a.diagonal()
    mu = float(torch.linalg.eigvalsh(a / d.sqrt()[:, None] / d.sqrt()[None, :]).min())
    never = lambda q, e: torch.zeros_like(q, dtype=torch.bool)
    x0 = 0.5 * torch.linalg.solve(a, b)
    start = quad_form_cg(lambda v: a @ v, b, mu, never, precond=lambda r: r / d[:, None], x0=x0, max_iters=1)
    res = quad_form_cg(lambda v: a @ v, b, mu, never, precond=lambda r: r / d[:, None], x0=x0, max_iters=20)
    for r in (start, res):
        assert ((exact - r.quad) <= r.error_bound * (1 + 1e-8) + 1e-12).all()
    assert (res.error_bound < start.error_bound).all()
    # the warm start's own error is a quarter of the exact quadratic form (x0 = A^-1 b / 2)
    zero = quad_form_cg(lambda v: a @ v, b, mu, lambda q, e: torch.ones_like(q, dtype=torch.bool), x0=x0)
    assert zero.iterations == 0
    torch.testing.assert_close(zero.quad, 0.75 * exact, rtol=1e-9, atol=1e-12)


def test_stops_per_column_and_reports_uncertified():
    a, b = spd(300, 1e-3, 2)
    prior = torch.full((12,), 1.5, dtype=torch.float64)
    res = quad_form_cg(lambda v: a @ v, b, 1e-3, variance_acceptance(prior, 1e-2), max_iters=2)
    assert not res.certified.all()
    assert res.iterations == 2
    b[:, 0] = 0  # a zero column needs no iteration
    res = quad_form_cg(lambda v: a @ v, b, 1e-3, variance_acceptance(prior, 1e-2), max_iters=500)
    assert res.column_iterations[0] == 0 and res.certified.all()
    assert res.column_iterations.max() > res.column_iterations[1:].min()  # columns stop at their own pace


def test_residual_bound_for_an_unknown_preconditioner_spectrum():
    """mu unknown (None): ||r||^2 / lambda_min(A) bounds the error for any preconditioner."""
    a, b = spd(300, 1e-3, 3)
    exact = (b * torch.linalg.solve(a, b)).sum(0)
    prior = torch.full((12,), 1.5, dtype=torch.float64)
    d = a.diagonal()
    for iters in (2, 8, 400):
        res = quad_form_cg(lambda v: a @ v, b, None, variance_acceptance(prior, 1e-2),
                           precond=lambda r: r / d[:, None], floor=1e-3, max_iters=iters)
        assert ((exact - res.quad) <= res.error_bound * (1 + 1e-8) + 1e-12).all()
    assert res.certified.all()
    assert (((prior - res.quad) / (prior - exact) - 1).abs() < 1e-2).all()
    with pytest.raises(ValueError, match="mu, floor"):
        quad_form_cg(lambda v: a @ v, b, None, variance_acceptance(prior, 1e-2))
