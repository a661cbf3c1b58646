# Scale(base): multiplies a kernel by a learned output scale (signal variance).
# The inner kernel stays reachable as `.base`.
from .base import Kernel
from .constraints import PositiveProperty, register_positive
from .linear import _expand


class Scale(Kernel):
    """k(x, x') = outputscale * base(x, x'); ``outputscale`` has shape ``(*batch,)``.

    ``outputscale``: the initial value. None (default): not given; ``ExactGP`` then starts it at
    the variance of the training targets (``fg.init_from_data``); it is 1.0 where the kernel is
    used without a model.
    """

    def __init__(self, base: Kernel, outputscale: float | None = None):
        if not isinstance(base, Kernel):
            raise TypeError(f"base: expected a Kernel, got {type(base).__name__}")
        super().__init__(batch_shape=base.batch_shape)
        self.base = base
        register_positive(self, "outputscale", outputscale, self.batch_shape, placeholder=1.0)

    outputscale = PositiveProperty("Output scale (signal variance), shape (*batch,).")

    @property
    def is_stationary(self) -> bool:
        return self.base.is_stationary

    @property
    def has_features(self) -> bool:
        return self.base.has_features

    def feature_map(self, x):
        """sqrt(outputscale) times the base kernel's features."""
        return self.outputscale.sqrt()[..., None, None] * self.base.features(x)

    def factored_map(self, x):
        parts = self.base.factored_features(x)
        return None if parts is None else (parts[0], self.outputscale.sqrt()[..., None, None] * parts[1])

    def evaluate(self, x1, x2, diag):
        k = self.base(x1, x2, diag=diag)
        return _expand(self.outputscale, diag) * k
