# The block preconditioner P = L L^T + blockdiag(K_hat - L L^T) over spatial blocks of points:
# the pivoted-Cholesky factor for long range, exact diagonal blocks of the rest for short range.
from __future__ import annotations

import torch
from torch import Tensor

from ..operators.base import Operator
from ..operators.block_low_rank import LowRankPlusBlockDiag
from ..operators.low_rank import _gather_rows
from ..linalg.spatial import block_index

# block entries built at a time (float64 temporaries: the kernel block, L_j L_j^T, the Cholesky
# factor and its inverse, each this many doubles: 256 MB)
BUILD_CHUNK_ENTRIES = 1 << 25
# a block whose Cholesky fails (K_j - L_j L_j^T rounded below zero: L comes from float32 kernel
# rows, which can be coarse far from the data's centre) gets this much of the largest diagonal
# entry of K_j added, times 10 per retry, at most BLOCK_RETRIES times (up to 1e-3 of it); a block
# that still fails keeps only its diagonal (never below the noise), which is SPD
BLOCK_JITTER = 1e-7
BLOCK_RETRIES = 5


def _block_cholesky(blocks: Tensor, scale: Tensor, floor: Tensor, info: dict) -> Tensor:
    """Lower Cholesky factors of the SPD float64 blocks (*, b, b).

    Blocks that fail get jitter in units of ``scale`` (*,), the largest diagonal entry of their
    kernel blocks; those that fail BLOCK_RETRIES times are replaced by their diagonal, at least
    ``floor`` (*, b) (the noise). ``info`` counts jittered_blocks (max_jitter: the largest jitter
    that sufficed or was tried) and diagonal_blocks (the replaced ones).
    """
    if not bool(torch.isfinite(blocks).all()):
        raise ValueError("block preconditioner: the diagonal blocks of K_hat - L L^T hold non-finite "
                         "values (non-finite inputs, hyperparameters or preconditioner factor?)")
    chol, failed = torch.linalg.cholesky_ex(blocks)
    jitter = BLOCK_JITTER * scale
    eye = torch.eye(blocks.shape[-1], dtype=blocks.dtype, device=blocks.device)
    bad = failed != 0
    if bool(bad.any()):
        info["jittered_blocks"] = info.get("jittered_blocks", 0) + int(bad.sum())
    for _ in range(BLOCK_RETRIES):
        if not bool(bad.any()):
            return chol
        info["max_jitter"] = max(info.get("max_jitter", 0.0), float(jitter[bad].max()))
        retry, retry_failed = torch.linalg.cholesky_ex(blocks[bad] + jitter[bad][:, None, None] * eye)
        chol[bad], failed[bad] = retry, retry_failed
        bad = failed != 0
        jitter = jitter * 10
    if bool(bad.any()):
        info["diagonal_blocks"] = info.get("diagonal_blocks", 0) + int(bad.sum())
        diag = torch.maximum(blocks[bad].diagonal(dim1=-2, dim2=-1), floor[bad])
        chol[bad] = torch.diag_embed(diag.sqrt())
    return chol


@torch.no_grad()
def block_preconditioner(kernel_op: Operator, noise: Tensor, factor: Tensor, block_size: int,
                         info: dict | None = None, index: Tensor | None = None) -> LowRankPlusBlockDiag:
    """P = L L^T + blockdiag(K + diag(noise) - L L^T) over spatial blocks of ``block_size`` points.

    kernel_op: the KernelOperator K ``(*batch, n, n)`` (it gives ``locality_inputs`` for the spatial
    order and ``diagonal_blocks``); noise: ``(*batch, n)`` positive; factor: L ``(*batch, n, k)`` with
    L L^T <= K (a pivoted-Cholesky factor; k may be 0: block Jacobi). K - L L^T is PSD, so each
    block is at least diag(noise) and P is SPD. The blocks are factored in float64; the whiteners
    and W L are stored in the factor's dtype (n (b + k) numbers, as many as b more columns of L).
    ``info`` (also kept as the result's ``build_info``) receives jittered_blocks and max_jitter
    if any block needed jitter, and diagonal_blocks if any kept only its diagonal. ``index``:
    the blocks ``(*batch, m, b)`` of an earlier build on the same points (its ``.index``), reused
    instead of a new spatial order (which takes most of a build at UCI sizes: 6-9 of 9-13 ms
    on an H200); used only if its shape fits n and the block size.
    """
    if not hasattr(kernel_op, "diagonal_blocks") or not hasattr(kernel_op, "locality_inputs"):
        raise TypeError(f"kernel_op: the block preconditioner needs a KernelOperator, got "
                        f"{type(kernel_op).__name__}")
    info = {} if info is None else info
    batch, n, k = kernel_op.batch_shape, kernel_op.shape[-1], factor.shape[-1]
    b = min(block_size, n)
    m = -(-n // b)
    if index is None or index.shape[-2:] != (m, b) or index.device != factor.device:
        index = block_index(kernel_op.locality_inputs(), b)
    index = index.expand(*batch, m, b)
    real = index < n  # (*batch, m, b)
    safe = index.clamp_max(n - 1)
    noise = noise.detach().expand(*batch, n)
    factor = factor.expand(*batch, n, k)
    whitener = torch.empty(*batch, m, b, b, dtype=factor.dtype, device=factor.device)
    whitened = torch.empty(*batch, m * b, k, dtype=factor.dtype, device=factor.device)
    eye = torch.eye(b, dtype=torch.float64, device=factor.device)
    step = max(1, BUILD_CHUNK_ENTRIES // (b * b))
    for start in range(0, m, step):
        blocks = slice(start, start + step)
        idx, ok = safe[..., blocks, :], real[..., blocks, :]
        flat = idx.flatten(-2)
        low = _gather_rows(factor, flat).double().unflatten(-2, idx.shape[-2:])  # (*batch, c, b, k)
        low = low * ok.unsqueeze(-1)
        diag = noise.gather(-1, flat).double().unflatten(-1, idx.shape[-2:])
        kernel_blocks = kernel_op.diagonal_blocks(idx)
        scale = kernel_blocks.diagonal(dim1=-2, dim2=-1).amax(-1)
        resid = kernel_blocks - low @ low.transpose(-1, -2)
        resid.diagonal(dim1=-2, dim2=-1).add_(diag)
        pair = ok.unsqueeze(-1) & ok.unsqueeze(-2)
        resid = torch.where(pair, resid, eye)  # padding: identity rows and columns
        resid = 0.5 * (resid + resid.transpose(-1, -2))
        chol = _block_cholesky(resid, scale, torch.where(ok, diag, 1.0), info)
        w = torch.linalg.solve_triangular(chol, eye.expand_as(resid), upper=False)
        whitener[..., blocks, :, :] = w
        whitened[..., start * b:(start + idx.shape[-2]) * b, :] = (w @ low).flatten(-3, -2)
    return LowRankPlusBlockDiag(index, whitener, whitened, n, build_info=info)
