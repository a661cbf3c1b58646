# Mean functions: Zero, Constant (learned), Linear (learned weights and bias).
# Each maps x (*batch, n, d) to (*batch, n).
from .means import Constant, Linear, Mean, Zero

__all__ = ["Mean", "Zero", "Constant", "Linear"]
