# GP models built on the operator, linear-algebra and kernel layers.
# GPModel: the interface of every model; ExactGP: exact inference by Cholesky or BBMM; SGPR: inducing points;
# MultitaskGP: correlated outputs (ICM / LMC); BasisGP: finite feature maps (Hilbert-space, categorical).
from .base import GPModel, Prior
from .basis_gp import BasisGP
from .dirichlet import DirichletGP
from .exact_gp import ExactGP
from .itergp import IterGP, IterGPPosterior
from .multitask import MultitaskGP
from .regression import RegressionModel
from .sgpr import SGPR
from .svgp import SVGP

__all__ = ["BasisGP", "DirichletGP", "ExactGP", "GPModel", "IterGP", "IterGPPosterior", "MultitaskGP", "Prior", "RegressionModel", "SGPR", "SVGP"]
