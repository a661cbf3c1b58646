# The one place that turns (kernel, inputs) into the operator solvers multiply with: a kernel's own
# structured operator where it has one (duck typing: an ``operator`` method), else a KernelOperator.
from __future__ import annotations

from .kernel import KernelOperator


def kernel_operator(kernel, x1, x2=None, **options):
    """K(x1, x2) as an operator: ``kernel.operator(x1, x2, **options)`` when the kernel provides a
    structured one (``flashgp.kernels.Interpolated``: SKI), else ``KernelOperator(kernel, x1, x2,
    **options)`` (options: backend, precision, memory_budget, block_rows).

    A structured kernel inside another kernel (``Scale(Interpolated(...))``) is refused: its
    structure would be lost to entry-by-entry evaluation. Put the other kernel inside instead
    (``Interpolated(Scale(RBF()), ...)``)."""
    make = getattr(kernel, "operator", None)
    if callable(make):
        return make(x1, x2, **options)
    for name, module in kernel.named_modules():
        if name and callable(getattr(module, "operator", None)):
            raise TypeError(f"kernel: {type(module).__name__} (at kernel.{name}) gives a structured operator only "
                            f"as the outermost kernel; write it around the others, e.g. "
                            f"Interpolated(Scale(RBF()), grid_size=...) instead of Scale(Interpolated(RBF(), ...))")
    return KernelOperator(kernel, x1, x2, **options)
