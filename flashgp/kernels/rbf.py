# The squared-exponential (RBF) kernel: k = exp(-r2 / 2).
# r2 is the squared distance scaled by the lengthscales (see stationary.py).
import math

import torch

from .stationary import Stationary


class RBF(Stationary):
    """Squared-exponential kernel k(x, x') = exp(-|x - x'|^2 / (2 l^2)), with ARD if ard_dims."""

    def profile(self, r2: torch.Tensor) -> torch.Tensor:
        return torch.exp(-0.5 * r2)

    def profile_and_derivative(self, r2: torch.Tensor):
        """(k, dk/dr2) for the RBF; overwrites r2."""
        k = r2.mul_(-0.5).exp_()
        return k, k * -0.5

    def log_spectral_density(self, omega: torch.Tensor) -> torch.Tensor:
        """log S(omega) ``(*batch, M)`` at angular frequencies omega ``(M, d)``, where
        k(r) = (2 pi)^-d int S(w) exp(i w.r) dw: S = (2 pi)^(d/2) prod(l) exp(-|l * omega|^2 / 2)."""
        ls = self.lengthscale.expand(*self.lengthscale.shape[:-1], omega.shape[-1])  # (*batch, 1, d)
        scaled = (ls * omega).square().sum(-1)
        return 0.5 * omega.shape[-1] * math.log(2 * math.pi) + ls.log().sum(-1) - 0.5 * scaled
