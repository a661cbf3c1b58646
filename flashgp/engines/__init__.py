# Inference engines: how K_hat = K + diag(noise) is solved. CholeskyEngine (float64, exact) and
# CGEngine (BBMM) behind one interface (``Engine``); a solver configuration gives its engine
# (``fg.Cholesky().engine()``), and every solve returns a typed record (``records``).
from .base import Engine, seconds_since
from .bbmm import CGEngine, CGSystem, LanczosRoot
from .cholesky import CholeskyEngine, CholeskySystem
from .records import CGMeanSolveInfo, CGSolveInfo, CGTrainingInfo, CholeskyInfo, PreconditionerBuild

__all__ = ["Engine", "CholeskyEngine", "CGEngine", "CholeskySystem", "CGSystem", "LanczosRoot", "CGSolveInfo", "CGTrainingInfo",
           "CGMeanSolveInfo", "CholeskyInfo", "PreconditionerBuild", "seconds_since"]
