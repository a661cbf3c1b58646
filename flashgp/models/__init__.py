# GP models built on the operator, linear-algebra and kernel layers.
# ExactGP: exact inference by Cholesky or BBMM.
from .exact_gp import ExactGP

__all__ = ["ExactGP"]
