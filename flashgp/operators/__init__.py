# Matrix-free operators: what the solvers see of a matrix (products, diagonal, rows, gradients).
# Dense, Kernel (dense, blocked or fused backend), AddedDiag, LowRank(+Diag),
# LowRankPlusBlockDiag (the block preconditioner), Sum.
from .added_diag import AddedDiag
from .base import Operator
from .block_low_rank import LowRankPlusBlockDiag
from .dense import Dense
from .kernel import KernelOperator
from .low_rank import LowRank, LowRankPlusDiag
from .sum import SumOperator

__all__ = ["Operator", "Dense", "KernelOperator", "AddedDiag", "SumOperator", "LowRank", "LowRankPlusDiag",
           "LowRankPlusBlockDiag"]
