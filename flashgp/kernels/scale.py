# Scale(base): multiplies a kernel by a learned output scale (signal variance).
# The inner kernel stays reachable as `.base`.
import torch

from .base import Kernel
from .constraints import positive_value, register_positive, set_positive
from .linear import _expand


class Scale(Kernel):
    """k(x, x') = outputscale * base(x, x'); ``outputscale`` has shape (*batch,)."""

    def __init__(self, base: Kernel, outputscale: float = 1.0):
        if not isinstance(base, Kernel):
            raise TypeError(f"base: expected a Kernel, got {type(base).__name__}")
        super().__init__(batch_shape=base.batch_shape)
        self.base = base
        register_positive(self, "outputscale", outputscale, self.batch_shape)

    @property
    def outputscale(self) -> torch.Tensor:
        return positive_value(self, "outputscale")

    @outputscale.setter
    def outputscale(self, value) -> None:
        set_positive(self, "outputscale", value)

    @property
    def is_stationary(self) -> bool:
        return self.base.is_stationary

    def evaluate(self, x1, x2, diag):
        k = self.base(x1, x2, diag=diag)
        return _expand(self.outputscale, diag) * k
