# Matrix-free operators: what the solvers see of a matrix (products, diagonal, rows, gradients).
# Dense, Kernel (dense, blocked or fused backend), AddedDiag, LowRank(+Diag),
# LowRankPlusBlockDiag (the block preconditioner), Sum; for structured kernel interpolation (SKI)
# Toeplitz, Kronecker, Interpolation and InterpolatedOperator; for multi-output kernels Kronecker
# (B ⊗ K_x) and TaskBlocks (tasks observed apart); kernel_operator picks the kernel's.
from .added_diag import AddedDiag
from .base import Operator
from .block_low_rank import LowRankPlusBlockDiag
from .dense import Dense
from .factory import kernel_operator
from .interpolated import InterpolatedOperator
from .interpolation import Interpolation
from .kernel import KernelOperator
from .kronecker import Kronecker
from .low_rank import LowRank, LowRankPlusDiag
from .sum import SumOperator
from .task_blocks import TaskBlocks
from .toeplitz import Toeplitz

__all__ = ["Operator", "Dense", "KernelOperator", "AddedDiag", "SumOperator", "LowRank", "LowRankPlusDiag",
           "LowRankPlusBlockDiag", "Toeplitz", "Kronecker", "Interpolation", "InterpolatedOperator",
           "TaskBlocks", "kernel_operator"]
