# The rational quadratic kernel: k = (1 + r2 / (2 alpha))^(-alpha), alpha learned.
# A scale mixture of RBF kernels; alpha -> infinity recovers the RBF.
import torch

from .constraints import PositiveProperty, register_positive
from .stationary import Stationary


class RQ(Stationary):
    """Rational quadratic kernel with learned mixture parameter ``alpha`` (default 1.0)."""

    def __init__(self, alpha: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        register_positive(self, "alpha", alpha, self.batch_shape)

    alpha = PositiveProperty("Mixture parameter alpha, shape (*batch,).")

    def profile(self, r2: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha
        alpha = alpha.reshape(*alpha.shape, *([1] * (r2.dim() - alpha.dim())))
        return torch.pow(1 + r2 / (2 * alpha), -alpha)
