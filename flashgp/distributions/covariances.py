# The covariance operators posteriors return: the prior at the test points minus a downdate by the
# training data, never formed densely unless asked, with size checks and a staleness guard.
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..operators.base import Operator
from ..shapes import broadcast_shapes

# ``to_dense`` refuses covariances whose (*batch, m, m) matrix would take more bytes than this
# (2 GiB: 16,384 test points in float64, 23,170 in float32); it allocates the identity of the
# same size besides.
MAX_DENSE_BYTES = 2 * 1024**3


def _size(nbytes: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{int(nbytes)} bytes"


def _gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` of x ``(*batch, m, d)``: index (r,) or ``(*batch, r)`` -> ``(*batch, r, d)``."""
    if index.dim() == 1:
        return x[..., index, :]
    x = x.expand(*index.shape[:-1], *x.shape[-2:])
    return x.gather(-2, index.unsqueeze(-1).expand(*index.shape, x.shape[-1]))


class PosteriorCovariance(Operator):
    """Base of posterior covariance operators ``(*batch, m, m)``.

    ``guard``: None, or a function called before every evaluation (``matmul``, ``diagonal``,
    ``rows``, ``to_dense``) that raises when the model the posterior came from has changed since
    (a model sets it: the operator is lazy, and would otherwise mix the old solves with the new
    parameters). ``to_dense`` checks the size first (``MAX_DENSE_BYTES``). Subclasses implement
    ``_matmul``, ``_diagonal`` and ``_rows``.
    """

    guard: Callable[[], None] | None = None

    def _check(self) -> None:
        if self.guard is not None:
            self.guard()

    def matmul(self, rhs):
        self._check()
        return super().matmul(rhs)

    def diagonal(self):
        self._check()
        return self._diagonal()

    def rows(self, index):
        self._check()
        return self._rows(index)

    def to_dense(self):
        self._check_dense_size()
        self._check()
        return super().to_dense()

    def _check_dense_size(self) -> None:
        """ValueError when the dense matrix would take more than MAX_DENSE_BYTES."""
        m, nbytes = self.shape[-1], math.prod(self.shape) * self.dtype.itemsize
        if nbytes > MAX_DENSE_BYTES:
            raise ValueError(
                f"covariance: a dense {' x '.join(map(str, self.shape))} covariance of {m:,} test points takes "
                f"{_size(nbytes)} in {str(self.dtype).replace('torch.', '')} (to_dense allows up to "
                f"{_size(MAX_DENSE_BYTES)}, distributions.covariances.MAX_DENSE_BYTES). For marginal variances "
                "use posterior.variance; for parts of the covariance covariance.rows(index) or "
                "covariance.matmul(v); or predict fewer test points at a time")

    def _diagonal(self):
        raise NotImplementedError

    def _rows(self, index):
        raise NotImplementedError


class Downdated(PosteriorCovariance):
    """prior - left @ right^T, shape ``(*batch, m, m)``, never formed densely.

    prior: Operator ``(*batch, m, m)`` (the kernel at the test points); left, right: ``(*batch, m, k)``.
    With left == right == K_*X R (R R^T ~ K_hat^{-1}) this is the posterior covariance.
    ``variances`` ``(*batch, m)``: more accurate marginal variances (certified CG solves). The
    operator is then S (prior - left right^T) S with S = diag(sqrt(variances / its diagonal)):
    the correlations of the low-rank form with these variances, PSD whenever it is (a congruence;
    replacing the diagonal alone made LOVE covariances indefinite, down to -0.19 of the largest
    eigenvalue in benchmarks/variance_accuracy.py).
    """

    def __init__(self, prior: Operator, left: torch.Tensor, right: torch.Tensor,
                 variances: torch.Tensor | None = None):
        self.prior, self.left, self.right = prior, left, right
        self.shape = torch.Size((*broadcast_shapes(prior.batch_shape, left.shape[:-2]), *prior.shape[-2:]))
        self.dtype, self.device = prior.dtype, prior.device
        self.scale = None
        if variances is not None:
            base = self._low_rank_diagonal()
            ok = (base > 0) & (variances > 0)
            self.scale = torch.where(ok, (variances.clamp_min(0) / torch.where(ok, base, 1.0)).sqrt(), 0.0)

    def _low_rank_diagonal(self):
        return self.prior.diagonal() - (self.left * self.right).sum(-1)

    def _matmul(self, rhs):
        if self.scale is not None:
            rhs = self.scale.unsqueeze(-1) * rhs
        out = self.prior._matmul(rhs) - self.left @ (self.right.transpose(-1, -2) @ rhs)
        return out if self.scale is None else self.scale.unsqueeze(-1) * out

    def _diagonal(self):
        diag = self._low_rank_diagonal()
        return diag if self.scale is None else diag * self.scale.square()

    def _rows(self, index):
        down = self.left[..., index, :] if index.dim() == 1 else self.left.gather(
            -2, index.unsqueeze(-1).expand(*index.shape, self.left.shape[-1]))
        out = self.prior.rows(index) - down @ self.right.transpose(-1, -2)
        if self.scale is None:
            return out
        picked = self.scale[..., index] if index.dim() == 1 else self.scale.gather(-1, index)
        return picked.unsqueeze(-1) * out * self.scale.unsqueeze(-2)


class FactorDowndated(PosteriorCovariance):
    """prior - W W^T, shape ``(*batch, m, m)``, with the factor W ``(*batch, m, k)`` never held whole: its
    rows are recomputed from the test inputs, ``chunk`` points at a time, by ``factor``.

    For test sets whose W would be too large to keep (a Cholesky prediction's W = K_*X L^{-T} is
    m x n; LOVE's K_*X R is m x root_rank). prior: Operator ``(*batch, m, m)``; x: the test inputs
    ``(*batch, m, d)``; factor(x_part) gives W's rows ``(*batch, c, k)`` for inputs x_part ``(*batch, c, d)``;
    variances ``(*batch, m)``: the diagonal, computed with the posterior mean. ``scale`` ``(*batch, m)``,
    optional: the operator is then S (prior - W W^T) S with S = diag(scale) (certified variances,
    as in ``Downdated``). ``signs`` ``(k,)``, optional: +1 or -1 per column of W, the operator
    then prior - W diag(signs) W^T (a downdate and an update, e.g. SGPR's K** - V1 V1^T +
    V2 V2^T). ``matmul`` evaluates W twice (W^T v, then W (W^T v)), ``rows`` once; memory stays
    at a chunk of W.
    """

    def __init__(self, prior: Operator, x: torch.Tensor, factor: Callable, variances: torch.Tensor,
                 chunk: int, scale: torch.Tensor | None = None, signs: torch.Tensor | None = None):
        self.prior, self.x, self.factor, self.variances, self.chunk = prior, x, factor, variances, max(1, chunk)
        self.scale, self.signs = scale, signs
        self.shape = torch.Size((*broadcast_shapes(prior.batch_shape, variances.shape[:-1]), *prior.shape[-2:]))
        self.dtype, self.device = prior.dtype, prior.device

    def _parts(self):
        m = self.shape[-1]
        return [slice(begin, begin + self.chunk) for begin in range(0, m, self.chunk)]

    def _matmul(self, rhs):
        if self.scale is not None:
            rhs = self.scale.unsqueeze(-1) * rhs
        out = self.prior._matmul(rhs)
        inner = None
        for part in self._parts():  # W^T rhs, (*batch, k, t)
            step = self.factor(self.x[..., part, :]).transpose(-1, -2) @ rhs[..., part, :]
            inner = step if inner is None else inner + step
        if self.signs is not None:
            inner = self.signs.unsqueeze(-1) * inner
        out = out - torch.cat([self.factor(self.x[..., part, :]) @ inner for part in self._parts()], -2)
        return out if self.scale is None else self.scale.unsqueeze(-1) * out

    def _diagonal(self):
        return self.variances.expand(self.shape[:-1])

    def _rows(self, index):
        picked = self.factor(_gather_rows(self.x, index))  # (*batch, r, k)
        if self.signs is not None:
            picked = picked * self.signs
        downs = [picked @ self.factor(self.x[..., part, :]).transpose(-1, -2) for part in self._parts()]
        out = self.prior.rows(index) - torch.cat(downs, -1)
        if self.scale is None:
            return out
        chosen = self.scale[..., index] if index.dim() == 1 else self.scale.gather(-1, index)
        return chosen.unsqueeze(-1) * out * self.scale.unsqueeze(-2)


class DenseDowndated(PosteriorCovariance):
    """prior - D with D ``(*batch, m, m)`` a dense symmetric downdate (certified CG solves:
    D = K_*X X + X^T R for solutions X and residuals R = K_*X^T - K_hat X, which is
    K_*X K_hat^{-1} K_X* minus a PSD error term, so prior - D is PSD whenever the exact
    posterior covariance is)."""

    def __init__(self, prior: Operator, downdate: torch.Tensor):
        self.prior, self.downdate = prior, 0.5 * (downdate + downdate.transpose(-1, -2))
        self.shape = torch.Size((*broadcast_shapes(prior.batch_shape, downdate.shape[:-2]), *prior.shape[-2:]))
        self.dtype, self.device = prior.dtype, prior.device

    def _matmul(self, rhs):
        return self.prior._matmul(rhs) - self.downdate @ rhs

    def _diagonal(self):
        return self.prior.diagonal() - self.downdate.diagonal(dim1=-2, dim2=-1)

    def _rows(self, index):
        down = self.downdate[..., index, :] if index.dim() == 1 else self.downdate.gather(
            -2, index.unsqueeze(-1).expand(*index.shape, self.downdate.shape[-1]))
        return self.prior.rows(index) - down


class MarginalOnly(PosteriorCovariance):
    """A covariance ``(*batch, m, m)`` known only by its diagonal ``variances`` ``(*batch, m)``: local
    variances (``CG(local_neighbors=...)``) come without covariances between test points."""

    def __init__(self, variances: torch.Tensor):
        self.variances = variances
        self.shape = torch.Size((*variances.shape, variances.shape[-1]))
        self.dtype, self.device = variances.dtype, variances.device

    def _unknown(self, *args):
        raise ValueError("covariance: only marginal variances are known (local variances, "
                         "CG(local_neighbors=k)); for covariances or joint samples predict with "
                         "local_neighbors=0 (LOVE) or within CG(exact_var_max=...)")

    _matmul = _rows = _unknown

    def to_dense(self):
        self._unknown()

    def _diagonal(self):
        return self.variances


class SolvedDowndated(PosteriorCovariance):
    """k(x, x) - A K_hat^{-1} A^T for a dense cross covariance A = K(x, X) ``(*batch, m, n)`` and its
    solve S = (K_hat^{-1} A^T)^T ``(*batch, m, n)`` (Cholesky or CG solves, or R R^T A^T with a Lanczos
    root R), differentiable with respect to A and the kernel's test-side evaluations.

    S is held fixed (computed without gradients): the downdate is written as
    sym(A_0 S^T) + (A - A_0) S^T + S (A - A_0)^T with A_0 = A detached, whose value is A K_hat^{-1} A^T
    and whose derivative in A is that of A K_hat^{-1} A^T (K_hat symmetric), so a backward pass
    costs products with S and never a solve. ``x``: the test inputs the prior is evaluated at
    (the kernel's dtype of work, e.g. float64); ``dtype``: the dtype of the results. With
    ``fixed=False`` S keeps its own graph (a solve differentiated by autograd) and the downdate
    is plain A S^T. ``prior_diagonal`` ``(*batch, m)``: k(x_i, x_i) when the caller has it (else
    evaluated here). ``residual`` R ``(*batch, m, n)``, the residuals of certified CG solves
    (rows, like S): the downdate's value is then A S^T + S R^T (``DenseDowndated``'s certified
    form), its derivative unchanged.
    """

    def __init__(self, kernel, x: torch.Tensor, cross: torch.Tensor, solved: torch.Tensor, dtype: torch.dtype,
                 fixed: bool = True, residual: torch.Tensor | None = None,
                 prior_diagonal: torch.Tensor | None = None):
        self.kernel, self.x, self.cross, self.prior_diagonal = kernel, x, cross, prior_diagonal
        self.solved = solved.detach() if fixed else solved
        self.fixed, self.residual = fixed, residual
        self.shape = torch.Size((*broadcast_shapes(cross.shape[:-2], kernel.batch_shape), cross.shape[-2],
                                 cross.shape[-2]))
        self.dtype, self.device = dtype, cross.device

    def _moving(self) -> torch.Tensor:
        """A - A_0: zero, with the derivative of A."""
        return self.cross - self.cross.detach()

    def _diagonal(self):
        if not self.fixed:  # S carries its own graph: plain autograd through A S^T
            down = (self.cross * self.solved).sum(-1)
        else:
            fixed, moving = self.cross.detach(), self._moving()
            down = (fixed * self.solved).sum(-1) + 2 * (moving * self.solved).sum(-1)
        if self.residual is not None:
            down = down + (self.solved * self.residual).sum(-1)
        prior = self.kernel.diag(self.x) if self.prior_diagonal is None else self.prior_diagonal
        return (prior - down).expand(self.shape[:-1]).to(self.dtype)

    def to_dense(self):
        self._check_dense_size()
        self._check()
        if not self.fixed:
            down = self.cross @ self.solved.transpose(-1, -2)
            down = 0.5 * (down + down.transpose(-1, -2))
        else:
            fixed = self.cross.detach() @ self.solved.transpose(-1, -2)
            if self.residual is not None:  # the certified value A X + X^T R
                fixed = fixed + self.solved @ self.residual.transpose(-1, -2)
            moving = self._moving() @ self.solved.transpose(-1, -2)
            down = 0.5 * (fixed + fixed.transpose(-1, -2)) + moving + moving.transpose(-1, -2)
        return (self.kernel(self.x) - down).expand(self.shape).to(self.dtype)

    def _matmul(self, rhs):
        return self.to_dense() @ rhs.to(self.dtype)

    def _rows(self, index):
        dense = self.to_dense()
        if index.dim() == 1:
            return dense[..., index, :]
        return dense.gather(-2, index.unsqueeze(-1).expand(*index.shape, self.shape[-1]))
