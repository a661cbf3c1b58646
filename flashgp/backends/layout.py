# Memory layout of stored kernel matrices: rows padded so that every row starts on an aligned
# address, which the Triton stored-matrix product (read by TMA) needs. Torch-only (no triton).
"""Stored-matrix layout shared by the dense backend and ``triton_dense``."""
from __future__ import annotations

import torch

ROW_ALIGN = 16  # elements: float32 rows start on 64-byte boundaries (TMA needs 16 bytes)


def padded_rows(shape, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An uninitialized tensor of ``shape`` ``(*batch, n1, n2)`` whose rows start every
    ceil(n2 / ROW_ALIGN) * ROW_ALIGN elements: a view [..., :n2] into padded storage (at most
    ROW_ALIGN - 1 spare elements per row). Torch's matmul takes such views without a copy."""
    *lead, n2 = shape
    width = max(ROW_ALIGN, -(-n2 // ROW_ALIGN) * ROW_ALIGN)
    return torch.empty(*lead, width, device=device, dtype=dtype)[..., :n2]
