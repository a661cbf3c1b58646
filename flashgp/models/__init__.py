# GP models built on the operator, linear-algebra and kernel layers.
# GPModel: the interface of every model; ExactGP: exact inference by Cholesky or BBMM.
from .base import GPModel, Prior
from .exact_gp import ExactGP

__all__ = ["ExactGP", "GPModel", "Prior"]
