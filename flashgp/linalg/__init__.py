# Algorithms on operators: mBCG, Lanczos, stochastic Lanczos quadrature, safe Cholesky and
# preconditioners. Plain functions; nothing here builds a dense n x n matrix unless asked to.
from .cholesky import safe_cholesky
from .inv_quad_logdet import cg_solve, inv_quad_logdet
from .lanczos import lanczos, lanczos_root_inverse
from .mbcg import CGResult, mbcg
from .pivot_cache import PivotCache
from .preconditioners import (nystrom_factor, pivoted_cholesky, pivoted_cholesky_preconditioner,
                              pivoted_cholesky_with_pivots)
from .slq import slq, slq_logdet

__all__ = [
    "CGResult",
    "PivotCache",
    "cg_solve",
    "inv_quad_logdet",
    "lanczos",
    "lanczos_root_inverse",
    "mbcg",
    "nystrom_factor",
    "pivoted_cholesky",
    "pivoted_cholesky_preconditioner",
    "pivoted_cholesky_with_pivots",
    "safe_cholesky",
    "slq",
    "slq_logdet",
]
