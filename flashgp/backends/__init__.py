# How K @ V and its gradients are computed: dense torch (small n), blocked torch (any n) or
# fused Triton kernels (CUDA). `choose_backend` picks one from the matrix size and a memory budget.
from .blocked import block_rows_for, blocked_bilinear_grad, blocked_matmul
from .choice import BACKENDS, choose_backend
from .fused import PRECISIONS, fused_bilinear_grad, fused_matmul, fused_parts, fused_ready, fused_supported

__all__ = ["BACKENDS", "PRECISIONS", "choose_backend", "block_rows_for", "blocked_matmul",
           "blocked_bilinear_grad", "fused_supported", "fused_ready", "fused_parts", "fused_matmul",
           "fused_bilinear_grad"]
