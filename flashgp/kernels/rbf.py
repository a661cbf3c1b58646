# The squared-exponential (RBF) kernel: k = exp(-r2 / 2).
# r2 is the squared distance scaled by the lengthscales (see stationary.py).
import torch

from .stationary import Stationary


class RBF(Stationary):
    """Squared-exponential kernel k(x, x') = exp(-|x - x'|^2 / (2 l^2)), with ARD if ard_dims."""

    def profile(self, r2: torch.Tensor) -> torch.Tensor:
        return torch.exp(-0.5 * r2)
