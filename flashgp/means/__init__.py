# Mean functions: Zero, Constant (learned), Linear (learned weights and bias); TaskMean (one per
# task of a multi-output model).
# Each maps x (*batch, n, d) to (*batch, n).
from .means import Constant, Linear, Mean, TaskMean, Zero

__all__ = ["Mean", "Zero", "Constant", "Linear", "TaskMean"]
