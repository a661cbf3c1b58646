# Dense float64 references for the contract tests, written out by hand from the definitions
# (coordinate differences, not the |a|^2 + |b|^2 - 2 a.b expansion the operators use), and
# builders of the small random problems the contract tests share.
import math

import torch

from flashgp.kernels import RQ, RBF, Matern, Scale

F64 = torch.float64


def generator(seed):
    return torch.Generator().manual_seed(seed)


def randomized(kernel, seed=1, dtype=F64):
    """``kernel`` in ``dtype`` with random raw hyperparameters (0.2 +- 0.3: no degenerate gradient)."""
    kernel = kernel.to(dtype)
    gen = generator(seed)
    with torch.no_grad():
        for p in kernel.parameters():
            p.copy_((torch.randn(p.shape, generator=gen, dtype=F64) * 0.3 + 0.2).to(dtype))
    return kernel


def inputs(n, d=3, seed=2, batch=(), dtype=F64):
    """Points (*batch, n, d) uniform on [-1.5, 1.5]^d."""
    return (torch.rand(*batch, n, d, generator=generator(seed), dtype=F64) * 3 - 1.5).to(dtype)


def _profile(kernel, r2):
    if isinstance(kernel, RBF):
        return torch.exp(-0.5 * r2)
    if isinstance(kernel, Matern):
        pos = r2 > 0  # sqrt without its infinite derivative at r = 0 (the diagonal)
        r = torch.where(pos, torch.where(pos, r2, 1.0).sqrt(), 0.0)
        s = math.sqrt(2 * kernel.nu) * r
        if kernel.nu == 0.5:
            return torch.exp(-r)
        if kernel.nu == 1.5:
            return (1 + s) * torch.exp(-s)
        return (1 + s + s * s / 3) * torch.exp(-s)
    alpha = kernel.alpha.to(F64).reshape(*kernel.alpha.shape, 1, 1)
    return (1 + r2 / (2 * alpha)) ** -alpha


def dense_kernel(kernel, x1, x2=None):
    """K(x1, x2) in float64 (*batch, n1, n2), differentiable in the kernel's parameters and the inputs.

    RBF, Matern and RQ (bare or in Scale) are written out from coordinate differences; other
    kernels are evaluated by their own formula on float64 inputs, with float64 parameters."""
    x2 = x1 if x2 is None else x2
    x1, x2 = x1.to(F64), x2.to(F64)
    base, scale = (kernel.base, kernel.outputscale) if isinstance(kernel, Scale) else (kernel, None)
    if isinstance(base, (RBF, Matern, RQ)) and base.active_dims is None:
        ls = base.lengthscale.to(F64)  # (*batch, 1, d or 1)
        diff = (x1.unsqueeze(-2) - x2.unsqueeze(-3)) / ls.unsqueeze(-2)
        out = _profile(base, diff.square().sum(-1))
        return out if scale is None else scale.to(F64)[..., None, None] * out
    params = {name: p.data for name, p in kernel.named_parameters()}
    if all(p.dtype == F64 for p in params.values()):
        return kernel(x1, x2)
    raise ValueError("dense_kernel: kernels other than RBF/Matern/RQ need float64 parameters")


def dense_block_low_rank(op):
    """The matrix a LowRankPlusBlockDiag stores, W^{-1} (I + M M^T) W^{-T}, rebuilt densely from its
    whitener blocks W_j and whitened factor M (float64, (*batch, n, n))."""
    n, (m, b) = op.n_rows, op.index.shape[-2:]
    batch = op.batch_shape
    w = torch.zeros(*batch, n + 1, n + 1, dtype=F64)  # one padding row / column at n
    idx = op.index.expand(*batch, m, b)
    rows = idx.unsqueeze(-1).expand(*batch, m, b, b)
    cols = idx.unsqueeze(-2).expand(*batch, m, b, b)
    flat = (rows * (n + 1) + cols).flatten(-3)
    w.flatten(-2).scatter_(-1, flat, op.whitener.to(F64).expand(*batch, m, b, b).flatten(-3))
    w = w[..., :n, :n]
    low = torch.zeros(*batch, n + 1, op.rank, dtype=F64)
    low.scatter_(-2, idx.flatten(-2).unsqueeze(-1).expand(*batch, m * b, op.rank), op.inner.factor.to(F64))
    low = low[..., :n, :]
    inner = torch.eye(n, dtype=F64) + low @ low.transpose(-1, -2)
    w_inv = torch.linalg.inv(w)
    return w_inv @ inner @ w_inv.transpose(-1, -2)


def dense_sparse_factor(precond):
    """U of a SparseInverseCholesky as a dense float64 (*batch, n, n), entry by entry from its
    index and weights (padding entries, index n, dropped)."""
    index, weights = precond.index, precond.weights.to(F64)
    n = precond.n
    out = torch.zeros(*index.shape[:-1], n, dtype=F64)
    flat_index, flat_weights, flat_out = index.reshape(-1, n, index.shape[-1]), \
        weights.reshape(-1, n, index.shape[-1]), out.reshape(-1, n, n)
    for b in range(flat_index.shape[0]):
        for i in range(n):
            for j, w in zip(flat_index[b, i].tolist(), flat_weights[b, i].tolist()):
                if j < n:
                    flat_out[b, i, j] += w
    return out
