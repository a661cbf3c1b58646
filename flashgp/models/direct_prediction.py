# Posteriors computed directly from the cached solves with a dense cross covariance: differentiable
# in the test inputs (Bayesian optimization), and many small test sets in one pass.
"""Direct posteriors: the cached training solves held fixed, every test-side term by autograd.

``direct_posterior(cache, x)`` evaluates A = K(x, X) ``(*b, m, n)`` densely, the mean
m(x) + A alpha and the covariance k(x, x) - A K_hat^{-1} A^T with K_hat^{-1} A^T from the
cache's ``test_solve`` (a Cholesky solve, CG solves, or the Lanczos root). Gradients reach x
through A, k(x, x) and m(x) only: alpha and K_hat^{-1} A^T are constants of the backward pass
(``distributions.covariances.SolvedDowndated``), so a backward pass costs products, never a solve.
Parameters that enter A get those partial gradients too (the cached solves are not
differentiated, as GPyTorch's default ``detach_test_caches``); train through ``loss()``.

Test inputs may carry batch dimensions the model lacks: x ``(*t, *batch, m, d)`` is prod(t) test
sets; their columns are solved together (one Cholesky solve, one block CG run), each set getting
its own m x m covariance. Memory: A and its solve, two ``(*t, *batch, m, n)`` tensors
(``MAX_DIRECT_BYTES``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..distributions import Posterior
from ..distributions.covariances import SolvedDowndated, _size
from ..shapes import broadcast_shapes

# a direct posterior holds A = K(x, X) and its solve, each at most this many bytes
MAX_DIRECT_BYTES = 1024**3


@dataclass(frozen=True)
class TestSolve:
    """What a cache's ``test_solve`` gives for the columns rhs = K(X, x*) ``(*batch, n, c)``:
    ``solution`` ~ M rhs ``(*batch, n, c)`` and the ``method``'s name; for certified CG solves also
    their ``residual`` rhs - K_hat solution ``(*batch, n, c)`` (the covariance's value then is
    the certified one, A X + X^T R, PSD whenever the exact one is) and the posterior mean's
    correction ``shift`` ``(*batch, c)`` (``CGPrediction._mean_correction``)."""

    solution: torch.Tensor
    method: str
    residual: torch.Tensor | None = None
    shift: torch.Tensor | None = None


def fold_columns(cross: torch.Tensor, batch: torch.Size):
    """(rhs ``(*batch, n, T m)``, unfold) for A = ``cross`` ``(*t, *batch, m, n)`` (T = prod(t)): the
    test sets' rows as columns of one right-hand side per model batch element; unfold(solution
    ``(*batch, k, T m)``) gives them back as ``(*t, *batch, m, k)`` (k = n for solutions, 1 for
    per-column values)."""
    lead = cross.shape[:cross.dim() - 2 - len(batch)]
    m, n = cross.shape[-2:]
    count = math.prod(lead)
    stacked = cross.reshape(count, *batch, m, n).movedim(0, -3)  # (*batch, T, m, n)
    rhs = stacked.reshape(*batch, count * m, n).transpose(-1, -2)

    def unfold(solution: torch.Tensor) -> torch.Tensor:  # (*batch, k, T m) -> (*t, *batch, m, k)
        k = solution.shape[-2]
        back = solution.transpose(-1, -2).reshape(*batch, count, m, k).movedim(-3, 0)
        return back.reshape(*lead, *batch, m, k)
    return rhs, unfold


def direct_posterior(cache, x: torch.Tensor) -> Posterior:
    """The posterior at x ``(*t, *batch, m, d)`` from ``cache``, differentiable in x when grad mode
    is on (see the module docstring). The cache gives ``kernel``, ``mean_fn``, ``alpha``
    ``(*batch, n, 1)``, ``cross_inputs`` X ``(*batch, n, d)`` (training or inducing inputs; or
    ``direct_cross(x)``, the cross term itself ``(*batch, m, n)``),
    ``work_dtype(x)``, ``test_solve(rhs, m, prior)`` (a ``TestSolve``: M rhs for the downdate
    A M A^T, M symmetric: K_hat^{-1} for an exact GP; prior: k(x_i, x_i) of rhs's columns) and
    ``diagnostics``."""
    batch = cache.alpha.shape[:-2]
    work = cache.work_dtype(x)
    count = cache.alpha.shape[-2]  # columns of the cross covariance (training or inducing points)
    shape = broadcast_shapes(x.shape[:-2], cache.kernel.batch_shape, batch)
    nbytes = math.prod(shape) * x.shape[-2] * count * work.itemsize
    if nbytes > MAX_DIRECT_BYTES:
        raise ValueError(
            f"x: a direct posterior at {tuple(x.shape)} holds the cross covariance with the "
            f"{count:,} training (or inducing) points and its solve, {_size(nbytes)} each (limit "
            f"{_size(MAX_DIRECT_BYTES)}, models.direct_prediction.MAX_DIRECT_BYTES); pass fewer test "
            "points per call")
    xs = x.to(work)
    cross_of = getattr(cache, "direct_cross", None)
    cross = cache.kernel(xs, cache.cross_inputs.to(work)) if cross_of is None else cross_of(xs)
    cross = cross.expand(*shape, x.shape[-2], count)
    mean = cache.mean_fn(x) + (cross @ cache.alpha.to(work)).squeeze(-1).to(x.dtype)
    through = getattr(cache, "data_grad", False) and torch.is_grad_enabled()  # solves differentiated too
    rhs, unfold = fold_columns(cross if through else cross.detach(), batch)
    prior = cache.kernel.diag(xs).expand(*shape, x.shape[-2])  # k(x_i, x_i), differentiable
    folded = fold_columns(prior.detach().unsqueeze(-1), batch)[0].squeeze(-2)  # as the columns of rhs
    with torch.set_grad_enabled(through):
        solve = cache.test_solve(rhs, x.shape[-2], folded)
    residual = None if solve.residual is None else unfold(solve.residual.to(work)).detach()
    if solve.shift is not None:  # a constant of the backward pass, as the solves
        mean = mean + unfold(solve.shift.detach().unsqueeze(-2).to(work)).squeeze(-1).to(x.dtype)
    covariance = SolvedDowndated(cache.kernel, xs, cross, unfold(solve.solution.to(work)), x.dtype,
                                 fixed=not through, residual=residual, prior_diagonal=prior)
    cache.diagnostics["variance_method"] = solve.method
    return Posterior(mean.expand(*shape, x.shape[-2]), covariance, diagnostics=cache.diagnostics)
