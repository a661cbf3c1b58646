# Gaussian observation models: y = f(x) + eps, eps ~ N(0, noise) with learned or fixed noise.
# `noise_diag(n)` gives the (*batch, n) diagonal that inference adds to K.
from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch
from torch import nn

from ..kernels.constraints import PositiveProperty, register_positive
from ..shapes import as_batch_shape


class Likelihood(nn.Module):
    """Base class: ``noise_diag(n, noise=None)`` -> (*batch, n) observation noise variances."""

    batch_shape = torch.Size()

    def noise_diag(self, n: int, noise: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError


class Gaussian(Likelihood):
    """Homoscedastic Gaussian noise, learned, kept above ``noise_floor``.

    Args:
        noise: initial noise variance (default 0.1 for standardized targets).
        noise_floor: lower bound of the noise variance (default 1e-4), which keeps K_hat
            well conditioned.
        batch_shape: leading shape for batches of independent GPs.
    """

    def __init__(self, noise: float = 0.1, noise_floor: float = 1e-4, batch_shape: Sequence[int] = ()):
        super().__init__()
        if (isinstance(noise_floor, bool) or not isinstance(noise_floor, numbers.Real)
                or not 0 <= noise_floor < math.inf):
            raise ValueError(f"noise_floor: expected a finite number >= 0, got {noise_floor!r}")
        self.batch_shape = as_batch_shape(batch_shape)
        register_positive(self, "noise", noise, self.batch_shape, lower=noise_floor)

    noise = PositiveProperty("Noise variance, shape (*batch,).")

    def noise_diag(self, n: int, noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is not None:
            raise ValueError("noise: per-point test noise variances need a FixedNoise likelihood; "
                             "the Gaussian likelihood predicts with its learned noise")
        return self.noise.unsqueeze(-1).expand(*self.batch_shape, n)


class FixedNoise(Likelihood):
    """Known per-point noise variances ``noise`` of shape (*batch, n) for the training points.

    At prediction time pass the test points' variances to ``model.predict(x, noise=...)``;
    without them the mean training noise is used.
    """

    def __init__(self, noise: torch.Tensor):
        super().__init__()
        try:
            noise = torch.as_tensor(noise)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"noise: expected a tensor of variances, got {type(noise).__name__}") from err
        if noise.is_complex() or noise.dtype == torch.bool:
            raise TypeError(f"noise: expected real variances, got {noise.dtype}")
        if not noise.is_floating_point():
            noise = noise.to(torch.get_default_dtype())
        if noise.dim() < 1 or not torch.all(torch.isfinite(noise)) or torch.any(noise <= 0):
            raise ValueError("noise: expected a (*batch, n) tensor of finite positive variances")
        self.register_buffer("noise", noise)

    @property
    def batch_shape(self) -> torch.Size:
        return self.noise.shape[:-1]

    def noise_diag(self, n: int, noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is None:
            if self.noise.shape[-1] == n:
                return self.noise
            return self.noise.mean(-1, keepdim=True).expand(*self.noise.shape[:-1], n)
        try:
            noise = torch.as_tensor(noise, device=self.noise.device)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"noise: expected a tensor of {n} variances, got {type(noise).__name__}") from None
        if noise.is_complex() or noise.dtype == torch.bool:
            raise TypeError(f"noise: expected real variances, got {noise.dtype}")
        noise = noise.to(self.noise.dtype)
        if noise.shape[-1:] != (n,) or not torch.all(torch.isfinite(noise)) or torch.any(noise < 0):
            raise ValueError(f"noise: expected {n} finite non-negative variances, got shape "
                             f"{tuple(noise.shape)} (min {float(noise.min()) if noise.numel() else 'n/a'})")
        return noise
