# flashgp: Gaussian processes on PyTorch with blackbox matrix-matrix (BBMM) inference.
# The public names: kernels, likelihoods, means, ExactGP, SGPR, solvers, fit, init_from_data, save/load.
from . import kernels, likelihoods, linalg, means, operators, preconditioners, priors
from .errors import ModelFileError, NonFiniteError, NotPSDError, NumericalWarning
from .fit import History, fit
from .initial_values import init_from_data
from .models import SGPR, SVGP, BasisGP, DirichletGP, ExactGP, IterGP, MultitaskGP
from .solvers import CG, Auto, Cholesky, Nystrom, PivotedCholesky, RPCholesky, Vecchia
from .io import load, save

__version__ = "0.1.0"

__all__ = ["kernels", "likelihoods", "means", "priors", "operators", "linalg", "preconditioners", "ExactGP", "IterGP", "SGPR", "BasisGP", "SVGP", "DirichletGP", "MultitaskGP", "fit", "History",
           "init_from_data", "CG", "Cholesky", "Auto", "PivotedCholesky", "RPCholesky", "Nystrom", "Vecchia",
           "NumericalWarning", "NotPSDError", "NonFiniteError", "ModelFileError", "save", "load", "__version__"]
