# Kernel modules: one pairwise formula each, lifted to matrices, diagonals and rows by Kernel.
# Combine with + and *; wrap in Scale for an output scale; Interpolated for SKI (KISS-GP);
# Multitask (ICM) and LMC for several outputs on task-indexed inputs; Warped (with MLP) for deep kernels;
# Categorical for a column of level codes; HilbertSpace for a stationary kernel as a finite basis.
from .base import Kernel, Product, Sum
from .categorical import Categorical
from .interpolated import Interpolated
from .linear import Linear, Polynomial
from .matern import Matern
from .multitask import LMC, Multitask
from .periodic import Periodic
from .rbf import RBF
from .rq import RQ
from .scale import Scale
from .stationary import Stationary
from .features import MLP
from .hilbert import HilbertSpace
from .warped import Warped

__all__ = ["Kernel", "Sum", "Product", "Stationary", "RBF", "Matern", "RQ", "Periodic", "Linear",
           "Polynomial", "Scale", "Interpolated", "Multitask", "LMC", "Warped", "MLP", "Categorical",
           "HilbertSpace"]
