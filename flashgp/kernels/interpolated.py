# Structured kernel interpolation (SKI / KISS-GP): a stationary base kernel approximated by cubic
# interpolation from a regular grid, k(x, x') ~ w(x)^T K_UU w(x'), K_UU Toeplitz-structured.
"""``Interpolated(base, grid_size, grid_bounds=None)``: the SKI approximation of ``base``.

The grid: ``grid_size`` points per input dimension (d <= 3), spacing h = (hi - lo) / (g - 3)
from the first point lo - h to the last hi + h, so that every point in [lo, hi] has the four
neighbours cubic interpolation needs in each dimension. ``grid_bounds`` None: (lo, hi) are set
from the inputs of the first covariance the kernel computes (in a model: the training inputs, at
the first training step or prediction), widened by 2 grid spacings on each side (as GPyTorch's
``GridInterpolationKernel`` does) so that test points a little outside the training range can be
predicted; from then on the grid is fixed: the ``grid_bounds`` buffer, in the model's state (files,
checkpoints) while its configuration keeps ``grid_bounds=None``, so a loaded model gets the saved
grid and a resumed fit recomputes the same one. Diagonals computed before that (a model's input
checks) use the grid their own inputs would give, without fixing it.

K_UU, the base kernel on the grid, is never formed: on a regular grid a stationary kernel's
matrix is (multi-level) Toeplitz, given by the kernel at the grid's offsets from its first point.

* kernels that factor over the input dimensions (RBF with or without ARD, Periodic, ``Scale``
  of them, products of such and of kernels that each see one dimension, any kernel in 1-D):
  K_UU = ``Kronecker`` of one ``Toeplitz`` factor per dimension (1-D FFTs along each axis);
* other stationary kernels in d = 2, 3 (Matern, RQ, sums): one multi-level ``Toeplitz``
  (block Toeplitz with Toeplitz blocks, products by d-dimensional FFTs of the embedded grid):
  exact for any stationary kernel. (GPyTorch's GridInterpolationKernel uses a Kronecker product
  of per-dimension kernels in both cases, which is a different kernel for Matern or RQ.)

Kernels that are not translation invariant (Linear, Polynomial) are refused: their grid matrix
has no Toeplitz structure. d > 3 is refused (the grid would have grid_size^d points; SKIP, the
product-structured variant for more dimensions, is not implemented).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from .base import Kernel, Product, Sum, check_operator_inputs
from .periodic import Periodic
from .rbf import RBF
from .scale import Scale
from .stationary import Stationary

MAX_DIMS = 3
MIN_GRID = 4  # cubic interpolation needs 4 grid points per dimension
MAX_GRID_POINTS = 1 << 28  # all dimensions together (the generator and FFT buffers hold ~2^d of this)
MARGIN = 2.0  # grid spacings added on each side of the inputs' range when the bounds come from data
# interpolation matrices kept for the last inputs seen (a model's training inputs come back at every
# training step and prediction; W of 1M points takes ~0.2 s to build and ~100 MB in float64)
CACHED_INPUTS = 2


@dataclass(frozen=True)
class GridSpec:
    """A regular grid: ``shape`` points per dimension, the first at ``start``, ``spacing`` apart."""

    start: tuple
    spacing: tuple
    shape: tuple

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def axis_points(self, k: int, dtype, device) -> torch.Tensor:
        """(g_k, d) points on axis k: offsets j h_k from the origin along dimension k, 0 elsewhere."""
        pts = torch.zeros(self.shape[k], len(self.shape), dtype=torch.float64, device=device)
        pts[:, k] = torch.arange(self.shape[k], dtype=torch.float64, device=device) * self.spacing[k]
        return pts.to(dtype)

    def lattice(self, dtype, device) -> torch.Tensor:
        """(G, d) every offset of the grid from its first point, row-major."""
        axes = [torch.arange(g, dtype=torch.float64, device=device) * h for g, h in zip(self.shape, self.spacing)]
        return torch.cartesian_prod(*axes).reshape(self.size, len(self.shape)).to(dtype)


def _kernel_name(kernel) -> str:
    return type(kernel).__name__


def _shift_invariant(kernel) -> bool:
    """Whether k(x, x') depends on x - x' only, evenly in each coordinate (stationary kernels,
    Periodic, and Scale, Sum, Product of them)."""
    if isinstance(kernel, (Stationary, Periodic)):
        return True
    if isinstance(kernel, Scale):
        return _shift_invariant(kernel.base)
    if isinstance(kernel, (Sum, Product)):
        return all(_shift_invariant(k) for k in kernel.kernels)
    return False


def _separable(kernel, columns: int) -> bool:
    """Whether k(x, x') = prod_k f_k(x_k - x'_k) over the ``columns`` input dimensions it sees."""
    if kernel.active_dims is not None:
        columns = len(kernel.active_dims)
    if columns <= 1 or isinstance(kernel, (RBF, Periodic)):
        return True
    if isinstance(kernel, Scale):
        return _separable(kernel.base, columns)
    if isinstance(kernel, Product):
        return all(_separable(k, columns) for k in kernel.kernels)
    return False


def _check_grid_size(grid_size):
    """An int >= MIN_GRID, or a sequence of them (one per dimension, at most MAX_DIMS)."""
    def one(g):
        return isinstance(g, numbers.Integral) and not isinstance(g, bool) and MIN_GRID <= g <= MAX_GRID_POINTS
    if isinstance(grid_size, numbers.Integral) and not isinstance(grid_size, bool):
        if not one(grid_size):
            raise ValueError(f"grid_size: expected an int >= {MIN_GRID} (cubic interpolation needs 4 grid points "
                             f"per dimension), got {grid_size!r}")
        return int(grid_size)
    if isinstance(grid_size, (str, bytes)) or not hasattr(grid_size, "__iter__"):
        raise TypeError(f"grid_size: expected an int or one int per input dimension, got {grid_size!r}")
    sizes = list(grid_size)
    if not 1 <= len(sizes) <= MAX_DIMS or not all(one(g) for g in sizes) or math.prod(sizes) > MAX_GRID_POINTS:
        raise ValueError(f"grid_size: expected 1 to {MAX_DIMS} ints >= {MIN_GRID} (one per input dimension, "
                         f"{MAX_GRID_POINTS} grid points at most), got {grid_size!r}")
    return tuple(int(g) for g in sizes)


def _check_bounds(grid_bounds):
    """None, or ((lo, hi), ...) of finite floats with lo < hi, one pair per dimension (1-3); a
    single pair (lo, hi) is read as one dimension."""
    if grid_bounds is None:
        return None
    if isinstance(grid_bounds, torch.Tensor):
        grid_bounds = grid_bounds.tolist()
    try:
        pairs = [list(grid_bounds)] if all(isinstance(v, numbers.Real) for v in grid_bounds) else \
            [list(pair) for pair in grid_bounds]
    except TypeError:
        pairs = None
    ok = pairs is not None and 1 <= len(pairs) <= MAX_DIMS and all(
        len(p) == 2 and all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
                            for v in p) and p[0] < p[1] for p in pairs)
    if not ok:
        raise ValueError(f"grid_bounds: expected None or one (low, high) pair of finite numbers with low < high "
                         f"per input dimension (1 to {MAX_DIMS}), got {grid_bounds!r}")
    return tuple((float(lo), float(hi)) for lo, hi in pairs)


class Interpolated(Kernel):
    """SKI / KISS-GP: ``base`` approximated as w(x)^T K_UU w(x') on a regular grid (see the module
    docstring for the grid, the structure of K_UU and what is refused).

    Args:
        base: a translation-invariant kernel (RBF, Matern, RQ, Periodic; Scale, Sum, Product of
            them). Put the output scale inside: ``Interpolated(Scale(RBF()), ...)``.
        grid_size: grid points per input dimension, an int (every dimension) or one per dimension;
            at least 4. The accuracy is set by the grid spacings per lengthscale: at n = 2,000
            (float64) 4 of them left an mll error of 3e-5 per point for the RBF in 1-D and 2e-4 in
            2-D, Matern 5/2 needed 9 for 4e-4 (``python benchmarks/ski_accuracy.py --n 2000``).
        grid_bounds: None (from the first inputs, widened by 2 grid spacings on each side), or one
            (low, high) pair per input dimension: every input, training and test, must lie in it.

    ``operator(x1, x2=None)`` gives the structured ``flashgp.operators.InterpolatedOperator``
    (what the CG engine and predictions use); calling the kernel gives the dense matrix
    W1 K_UU W2^T (differentiable; for the Cholesky path and small problems), its diagonal the
    SKI diagonal w_i^T K_UU w_i. Gradients with respect to the inputs are not supported.
    """

    def __init__(self, base: Kernel, grid_size, grid_bounds=None):
        if not isinstance(base, Kernel):
            raise TypeError(f"base: expected a flashgp kernel, got {type(base).__name__}")
        if any(isinstance(m, Interpolated) for m in base.modules()):
            raise TypeError("base: an Interpolated kernel cannot contain another one")
        if not _shift_invariant(base):
            raise TypeError(f"base: Interpolated (SKI) needs a translation-invariant kernel (RBF, Matern, RQ, "
                            f"Periodic, or Scale, Sum, Product of them) whose grid matrix is Toeplitz; got "
                            f"{_kernel_name(base)}, which is not. Use the kernel without Interpolated (an "
                            f"exact GP with fg.CG) instead")
        super().__init__(batch_shape=base.batch_shape)
        self.base = base
        self.grid_size = _check_grid_size(grid_size)
        bounds = _check_bounds(grid_bounds)
        if bounds is not None and isinstance(self.grid_size, tuple) and len(self.grid_size) != len(bounds):
            raise ValueError(f"grid_bounds: {len(bounds)} (low, high) pairs but grid_size has {len(self.grid_size)} "
                             f"entries; give one of each per input dimension")
        self._given_bounds = bounds  # the constructor argument (the configuration's grid_bounds)
        self.register_buffer("grid_bounds", None if bounds is None else torch.tensor(bounds, dtype=torch.float64))
        self._interpolations = {}  # id(x) -> (x, key, Interpolation): the last CACHED_INPUTS inputs' W

    def config_args(self) -> dict:
        """The constructor arguments as JSON-ready values (``flashgp.serialize``): grid_size and
        grid_bounds as given (None: from the data; the grid they gave travels in the state dict)."""
        size = self.grid_size if isinstance(self.grid_size, int) else list(self.grid_size)
        bounds = None if self._given_bounds is None else [list(pair) for pair in self._given_bounds]
        return {"grid_size": size, "grid_bounds": bounds}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """A state dict with grid bounds fixes an unset grid to them (``load_state_dict`` from a
        model that has computed a covariance into one that has not)."""
        key = prefix + "grid_bounds"
        value = state_dict.get(key)
        if self.grid_bounds is None and isinstance(value, torch.Tensor):
            _check_bounds(value.tolist() if value.dim() == 2 else None)
            device = next((p.device for p in self.base.parameters()), value.device)
            self.grid_bounds = torch.empty(value.shape, dtype=value.dtype, device=device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def is_stationary(self) -> bool:
        return False  # w(x)^T K_UU w(x') depends on where x and x' lie on the grid

    # ----- the grid ----------------------------------------------------------------------
    def _sizes(self, d: int) -> tuple:
        if d > MAX_DIMS:
            raise ValueError(f"x: Interpolated (SKI) supports inputs of 1 to {MAX_DIMS} columns (the grid has "
                             f"grid_size^d points), got {d}. For more dimensions use an exact GP with fg.CG "
                             f"(SKIP, SKI's product form for many dimensions, is not implemented)")
        sizes = (self.grid_size,) * d if isinstance(self.grid_size, int) else self.grid_size
        if len(sizes) != d:
            raise ValueError(f"grid_size: {len(sizes)} sizes for inputs of {d} columns; give one per column "
                             f"(or one int for all)")
        if math.prod(sizes) > MAX_GRID_POINTS:
            raise ValueError(f"grid_size: {sizes} gives {math.prod(sizes)} grid points, more than "
                             f"{MAX_GRID_POINTS}; use fewer points per dimension")
        return sizes

    def _bounds_from(self, xs, sizes: tuple) -> list:
        """(lo, hi) per dimension from the range of the inputs, widened by MARGIN grid spacings
        (fewer on grids too small for that: at least one stencil's width stays for the data)."""
        cols = torch.cat([x.detach().reshape(-1, x.shape[-1]) for x in xs], 0).to(torch.float64)
        if not bool(torch.isfinite(cols).all()):
            raise ValueError("x: the grid bounds come from the inputs, which hold NaN or infinite values")
        low, high = cols.min(0).values.tolist(), cols.max(0).values.tolist()
        bounds = []
        for lo, hi, g in zip(low, high, sizes):
            span = hi - lo if hi > lo else max(1.0, abs(lo))
            margin = min(MARGIN, (g - MIN_GRID) / 2)
            h = span / (g - 3 - 2 * margin)
            bounds.append((lo - margin * h, hi + margin * h) if hi > lo else (lo - span / 2, lo + span / 2))
        return bounds

    def grid(self, *xs: torch.Tensor, fix: bool = True) -> GridSpec:
        """The grid (``GridSpec``) for inputs xs (*batch, n, d): the fixed one, or, while unset, the
        one from their range, which ``fix`` keeps (as the ``grid_bounds`` buffer, in their dtype)."""
        d = xs[0].shape[-1]
        sizes = self._sizes(d if self.grid_bounds is None else self.grid_bounds.shape[0])
        if self.grid_bounds is None:
            bounds = self._bounds_from(xs, sizes)
            if fix:  # then read back: the grid is that of the stored (dtype-rounded) bounds from now on
                self.grid_bounds = torch.tensor(bounds, dtype=xs[0].dtype, device=xs[0].device)
        if self.grid_bounds is not None:
            bounds = self.grid_bounds.tolist()
        start, spacing = [], []
        for (lo, hi), g in zip(bounds, sizes):
            h = (hi - lo) / (g - 3)
            start.append(lo - h)
            spacing.append(h)
        return GridSpec(tuple(start), tuple(spacing), tuple(sizes))

    def grid_operator(self, spec: GridSpec, dtype, device):
        """K_UU (*batch, G, G) as a structured operator built from the current parameters
        (differentiable in them where grad is on): a Kronecker of Toeplitz factors for kernels that
        factor over the dimensions, else a multi-level Toeplitz."""
        from ..operators import Kronecker, Toeplitz  # operators sit below kernels in the layers
        d = len(spec.shape)
        origin = torch.zeros(1, d, dtype=dtype, device=device)
        if _separable(self.base, d):
            columns = [self.base(spec.axis_points(k, dtype, device), origin).squeeze(-1) for k in range(d)]
            if d == 1:
                return Toeplitz(columns[0])
            zero = self.base(origin, origin).squeeze(-1)  # (*batch, 1): k(0, 0), in every factor once
            return Kronecker(Toeplitz(columns[0]), *(Toeplitz(c / zero) for c in columns[1:]))
        column = self.base(spec.lattice(dtype, device), origin).squeeze(-1)  # (*batch, G)
        return Toeplitz(column.reshape(*column.shape[:-1], *spec.shape), levels=d)

    # ----- the operator and the dense matrix -----------------------------------------------
    def operator(self, x1: torch.Tensor, x2: torch.Tensor | None = None, **options):
        """W1 K_UU W2^T (*batch, n1, n2) as a ``flashgp.operators.InterpolatedOperator`` (x2 None:
        the symmetric W1 K_UU W1^T). ``options`` (the CG engine's backend, precision,
        memory_budget) are accepted and unused: SKI has one way to multiply."""
        from ..operators import InterpolatedOperator
        check_operator_inputs(x1, x2, "Interpolated (SKI) does not differentiate with respect to its inputs (the "
                              "interpolation weights carry no gradient); pass inputs that do not require grad")
        spec = self.grid(x1, *([] if x2 is None else [x2]))
        left = self.interpolation(x1, spec)
        right = None if x2 is None else self.interpolation(x2, spec)
        dtype, device = x1.dtype, x1.device
        return InterpolatedOperator(left, lambda: self.grid_operator(spec, dtype, device), right,
                                    params=tuple(self.base.parameters()))

    def interpolation(self, x: torch.Tensor, spec: GridSpec):
        """W of inputs x on the grid ``spec`` (``flashgp.operators.Interpolation``), reused while x
        is the same tensor, unchanged (its version), on the same grid: the last CACHED_INPUTS kept."""
        from ..operators import Interpolation
        key = (x._version, x.shape, x.stride(), x.dtype, x.device, spec)
        cached = self._interpolations.get(id(x))
        if cached is not None and cached[0] is x and cached[1] == key:
            return cached[2]
        out = Interpolation.cubic(x, spec.start, spec.spacing, spec.shape)
        self._interpolations.pop(id(x), None)
        while len(self._interpolations) >= CACHED_INPUTS:
            self._interpolations.pop(next(iter(self._interpolations)))
        self._interpolations[id(x)] = (x, key, out)
        return out

    def evaluate(self, x1, x2, diag):
        from ..operators import Interpolation
        if x1.requires_grad or x2.requires_grad:
            raise ValueError("x1, x2: Interpolated (SKI) does not differentiate with respect to its inputs "
                             "(the interpolation weights carry no gradient); pass inputs that do not require grad")
        if diag:  # w_i^T B w_i, B the 4^d x 4^d block of K_UU every stencil sees
            spec = self.grid(x1, x2, fix=False)
            w1 = Interpolation.cubic(x1, spec.start, spec.spacing, spec.shape)
            grid = self.grid_operator(spec, x1.dtype, x1.device)
            block = grid.entries(w1.offsets.unsqueeze(-1), w1.offsets)
            if x2 is x1:
                return ((w1.weights @ block) * w1.weights).sum(-1)
            w2 = Interpolation.cubic(x2, spec.start, spec.spacing, spec.shape)
            # different stencils per pair: B_ab = K_UU[corner1 + o_a, corner2 + o_b]
            entries = grid.entries(w1.index().unsqueeze(-1), w2.index().unsqueeze(-2))
            return (w1.weights.unsqueeze(-2) @ entries @ w2.weights.unsqueeze(-1)).squeeze(-1).squeeze(-1)
        op = self.operator(x1, None if x2 is x1 else x2)
        return op.to_dense(self.grid_operator(self.grid(x1), x1.dtype, x1.device))
