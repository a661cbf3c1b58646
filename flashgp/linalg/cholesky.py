# Cholesky factorization that adds (and reports) diagonal jitter when a matrix is near singular.
# Raises NotPSDError when even the largest jitter does not make the matrix positive definite.
from __future__ import annotations

import warnings

import torch
from torch import Tensor

from ..errors import NotPSDError, NumericalWarning


def _check_matrix(matrix: Tensor) -> None:
    """Validate the input of safe_cholesky, naming the argument."""
    if not isinstance(matrix, Tensor):
        raise TypeError(f"matrix: expected a torch.Tensor, got {type(matrix).__name__}")
    if matrix.dim() < 2 or matrix.shape[-1] != matrix.shape[-2]:
        raise ValueError(f"matrix: expected shape (*batch, n, n), got {tuple(matrix.shape)}")
    if not bool(torch.isfinite(matrix).all()):
        raise ValueError("matrix: contains NaN or infinite entries")


def _base_jitter(matrix: Tensor, jitter: float | None) -> float:
    """Starting jitter: the given one, or 1e-8 (float64) / 1e-6 (otherwise) times the mean diagonal."""
    if jitter is not None:
        if jitter <= 0:
            raise ValueError(f"jitter: expected a positive number, got {jitter}")
        return float(jitter)
    mean_diag = float(matrix.detach().diagonal(dim1=-2, dim2=-1).mean()) if matrix.shape[-1] else 1.0
    scale = mean_diag if mean_diag > 0 else 1.0
    return (1e-8 if matrix.dtype == torch.float64 else 1e-6) * scale


def safe_cholesky(matrix: Tensor, max_tries: int = 6, jitter: float | None = None) -> tuple[Tensor, float]:
    """Lower Cholesky factor of matrix ``(*batch, n, n)``, adding jitter to the diagonal if needed.

    Tries without jitter first; on failure adds ``jitter`` (default 1e-8 for float64, 1e-6
    otherwise, times the mean diagonal), multiplied by 10 on each of up to ``max_tries`` tries,
    one value for the whole batch. Warns (NumericalWarning) with the jitter when any was added.
    Returns (L ``(*batch, n, n)``, jitter_added as a float, 0.0 when none). Raises NotPSDError
    when all tries fail, ValueError on non-finite input.
    """
    _check_matrix(matrix)
    if not isinstance(max_tries, int) or max_tries < 0:
        raise ValueError(f"max_tries: expected a non-negative integer, got {max_tries!r}")
    factor, info = torch.linalg.cholesky_ex(matrix)
    if not bool(info.any()):
        return factor, 0.0
    base = _base_jitter(matrix, jitter)
    eye = torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device)
    added = base
    for i in range(max_tries):
        added = base * 10.0**i
        factor, info = torch.linalg.cholesky_ex(matrix + added * eye)
        if not bool(info.any()):
            warnings.warn(
                f"safe_cholesky: matrix not positive definite, added jitter {added:.3g} to the diagonal",
                NumericalWarning,
                stacklevel=2,
            )
            return factor, added
    min_diag = float(matrix.detach().diagonal(dim1=-2, dim2=-1).min())
    raise NotPSDError(
        f"matrix: not positive definite even with jitter {added:.3g} added "
        f"({max_tries} tries; min diagonal entry {min_diag:.3g})"
    )
