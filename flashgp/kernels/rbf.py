# The squared-exponential (RBF) kernel: k = exp(-r2 / 2).
# r2 is the squared distance scaled by the lengthscales (see stationary.py).
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
