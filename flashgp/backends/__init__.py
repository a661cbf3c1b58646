# How K @ V and its gradients are computed: dense torch (small n) or blocked torch (any n).
# `choose_backend` picks one from the matrix size and a memory budget.
from .blocked import block_rows_for, blocked_bilinear_grad, blocked_matmul
from .choice import BACKENDS, choose_backend

__all__ = ["BACKENDS", "choose_backend", "block_rows_for", "blocked_matmul", "blocked_bilinear_grad"]
