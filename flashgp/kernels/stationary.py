# Stationary kernels k(x, x') = profile(r2), r2 the squared distance scaled by lengthscales.
# Subclasses give only the profile; distances, ARD and batching live here.
from __future__ import annotations

from typing import Sequence

import torch

from .base import Kernel
from .constraints import PositiveProperty, check_ard_dims, register_positive


# Largest round-off (in squared lengthscales) accepted in low-precision squared distances.
LOW_PRECISION_RESOLUTION = 1e-3


def roundoff_resolution(dtype: torch.dtype, a2: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """``(*b, n1, 1)``: the smallest squared distance that r2 = |a|^2 + |b|^2 - 2 a.b resolves in
    ``dtype`` for rows with squared norms a2 ``(*b, n1, 1)`` against columns b2 ``(*b, 1, n2)``."""
    return (8 * torch.finfo(dtype).eps) * (a2 + b2.amax(-1, keepdim=True))


def scaled_sq_dist(x1: torch.Tensor, x2: torch.Tensor, diag: bool = False) -> torch.Tensor:
    """Squared Euclidean distances between rows of x1 ``(*b, n1, d)`` and x2 ``(*b, n2, d)``.

    Returns ``(*b, n1, n2)``, or ``(*b, n)`` with ``diag=True``. Uses |a|^2 + |b|^2 - 2 a.b on inputs
    centred by the mean of x2 (which keeps float32 accurate away from the origin). That formula
    resolves distances only down to its round-off, ~eps (|a|^2 + |b|^2): values at or below
    that level (identical points above all) are set to exactly 0, so K(x, x) has the exact
    diagonal and kernels with a cusp at 0 (Matern-1/2) do not amplify the round-off.
    Below float64, when that resolution exceeds ``LOW_PRECISION_RESOLUTION`` (points many
    lengthscales from the centre, where float32 cannot tell nearby points from identical ones),
    the distances are computed in float64 and cast back.
    """
    if diag:
        return (x1 - x2).pow(2).sum(-1)
    shift = x2.mean(-2, keepdim=True).detach()
    a, b = x1 - shift, x2 - shift
    a2 = a.pow(2).sum(-1, keepdim=True)
    b2 = b.pow(2).sum(-1, keepdim=True).transpose(-1, -2)
    same_batch = a.dim() == 3 and a.shape[:-2] == b.shape[:-2]  # baddbmm does not broadcast
    norms = a2 + b2
    r2 = torch.baddbmm(norms, a, b.transpose(-1, -2), alpha=-2) if same_batch else (
        norms - 2 * a @ b.transpose(-1, -2)
    )
    resolution = roundoff_resolution(r2.dtype, a2, b2).detach()
    if r2.dtype != torch.float64 and r2.numel() and float(resolution.max()) > LOW_PRECISION_RESOLUTION:
        return scaled_sq_dist(x1.double(), x2.double()).to(r2.dtype)
    return r2.masked_fill(r2 <= resolution, 0.0)


class Stationary(Kernel):
    """Base of kernels that depend on r2 = |(x - x') / lengthscale|^2 only.

    Args:
        ard_dims: number of input dimensions with their own lengthscale (None: one shared).
        lengthscale: initial lengthscale(s). None (default): not given; ``ExactGP`` then starts
            each at half the standard deviation of its input column in the training data
            (``fg.init_from_data``); it is 1.0 where the kernel is used without a model.
        active_dims, batch_shape: see ``Kernel``.
    """

    def __init__(self, ard_dims: int | None = None, lengthscale: float | None = None,
                 active_dims: Sequence[int] | None = None, batch_shape: Sequence[int] = ()):
        super().__init__(active_dims=active_dims, batch_shape=batch_shape)
        ard_dims = check_ard_dims(ard_dims)
        self.ard_dims = ard_dims
        register_positive(self, "lengthscale", lengthscale, (*self.batch_shape, 1, ard_dims or 1),
                          placeholder=1.0)

    lengthscale = PositiveProperty("Lengthscales, shape (*batch, 1, ard_dims or 1).")

    @property
    def is_stationary(self) -> bool:
        return True

    def evaluate(self, x1, x2, diag):
        if self.ard_dims is not None and x1.shape[-1] != self.ard_dims:
            raise ValueError(f"x1: expected {self.ard_dims} columns (ard_dims), got {x1.shape[-1]}")
        ls = self.lengthscale
        return self.profile(scaled_sq_dist(x1 / ls, x2 / ls, diag))

    def profile(self, r2: torch.Tensor) -> torch.Tensor:
        """k as a function of the scaled squared distance r2 (any shape)."""
        raise NotImplementedError

    # Kernels whose profile has a finite derivative everywhere may also define
    # ``profile_and_derivative(r2) -> (k, dk/dr2)``, consuming r2 (it may be overwritten).
    # Backends then compute gradients analytically instead of by autograd over blocks.
    profile_and_derivative = None

    @property
    def has_profile_derivative(self) -> bool:
        return self.profile_and_derivative is not None


def safe_sqrt(r2: torch.Tensor) -> torch.Tensor:
    """sqrt with a finite gradient at 0 (where the true derivative of r2 is zero anyway)."""
    return r2.clamp_min(1e-30).sqrt()
