# The Hilbert-space approximation of a stationary kernel (Solin and Sarkka 2020): the Laplacian's
# eigenfunctions on a box around the data, weighted by the kernel's spectral density.
"""``HilbertSpace(base, num_basis, boundary_factor)``: a stationary kernel as a finite sum.

On the box [c - L, c + L] (per input column: centre c_k, half-width L_k) the Laplacian with
Dirichlet boundary conditions has the eigenfunctions and eigenvalues, for j = 1..m per column,

    phi_j(x) = L^(-1/2) sin(pi j (x - c + L) / (2 L)),      sqrt(lambda_j) = pi j / (2 L),

and a product over the columns for each multi-index J = (j_1, ..., j_d). A stationary kernel with
spectral density S (``log_spectral_density`` of RBF and Matern) is approximated by

    k(x, x') ~ sum_J S(omega_J) phi_J(x) phi_J(x'),         omega_J = (pi j_k / (2 L_k))_k,

which converges to k inside the box as the m_k grow and the box widens (the error is largest
near its edges, where every phi_J vanishes: the prior variance falls to 0 on the boundary). The
features f_J(x) = sqrt(S(omega_J)) phi_J(x) make it a Bayesian linear model in M = prod(m_k)
weights: ``models.BasisGP`` solves it at O(n M^2 + M^3). The frequencies are fixed by the box, so
the hyperparameters (lengthscales, and an output scale outside) enter only through S: they stay
differentiable and the features need no new evaluation of the sines when they change.

The box is set from training inputs (``set_domain(x)``: the columns' midrange as centre, half
their range times ``boundary_factor`` as half-width; ``BasisGP`` does it when built) or given
(``center``, ``half_width``); it is part of the kernel's configuration, kept in model files.
"""
from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch

from .base import Kernel

# the most basis functions (the product of the counts per column) one HilbertSpace kernel takes
MAX_BASIS = 20_000


def _counts(num_basis, columns: int) -> list[int]:
    if isinstance(num_basis, numbers.Integral) and not isinstance(num_basis, bool):
        counts = [int(num_basis)] * columns
    elif isinstance(num_basis, (list, tuple)) and len(num_basis) == columns:
        counts = list(num_basis)
    else:
        raise ValueError(f"num_basis: expected an int or a list of {columns} ints (one per input column), "
                         f"got {num_basis!r}")
    if not all(isinstance(m, numbers.Integral) and not isinstance(m, bool) and m >= 1 for m in counts):
        raise ValueError(f"num_basis: expected counts >= 1, got {num_basis!r}")
    total = math.prod(counts)
    if total > MAX_BASIS:
        raise ValueError(f"num_basis: {counts} gives {total:,} basis functions (their product), more than "
                         f"{MAX_BASIS:,} (kernels.hilbert.MAX_BASIS); the count grows as m^d, so use fewer per "
                         "column or approximate fewer columns (active_dims on the base kernel)")
    return [int(m) for m in counts]


def _box(values, name: str, columns: int, positive: bool) -> list[float] | None:
    if values is None:
        return None
    values = [values] * columns if isinstance(values, numbers.Real) else values
    if not isinstance(values, (list, tuple)) or len(values) != columns or not all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and (v > 0 or not positive)
            for v in values):
        raise ValueError(f"{name}: expected {columns} finite numbers{' > 0' if positive else ''} (one per input "
                         f"column), got {values!r}")
    return [float(v) for v in values]


class HilbertSpace(Kernel):
    """A stationary kernel (RBF or Matern, with or without ARD) approximated by M basis functions.

    Args:
        base: the kernel approximated; it must give ``log_spectral_density`` (RBF, Matern). Its
            ``active_dims`` say which columns are approximated; put ``Scale`` outside
            (``Scale(HilbertSpace(RBF(), 20))``).
        num_basis: basis functions per input column (an int for all, or one per column); M is
            their product (at most ``MAX_BASIS``).
        boundary_factor: half-width of the box over half the range of the training inputs (> 1;
            default 1.5). Larger boxes need more basis functions for the same accuracy; a
            lengthscale long against the data needs a larger factor.
        center, half_width: the box itself (one number per column, or one for all); None: set
            by ``set_domain`` (``BasisGP`` calls it with its training inputs).
        num_columns: the number of input columns the base kernel sees (default: its ``ard_dims``,
            else its active_dims' count, else the inputs' columns at ``set_domain``).

    ``evaluate`` gives f(x1) f(x2)^T (O(n1 n2 M); for checks and small problems), ``features`` the
    map f ``(*batch, n, M)``.
    """

    def __init__(self, base: Kernel, num_basis: int | Sequence[int] = 16, boundary_factor: float = 1.5,
                 center=None, half_width=None, num_columns: int | None = None):
        if not isinstance(base, Kernel):
            raise TypeError(f"base: expected a Kernel, got {type(base).__name__}")
        if not callable(getattr(base, "log_spectral_density", None)):
            raise TypeError(f"base: {type(base).__name__} has no spectral density; HilbertSpace approximates RBF and "
                            "Matern kernels (put Scale outside: Scale(HilbertSpace(RBF(), 16)))")
        super().__init__(batch_shape=base.batch_shape)
        self.base = base
        if num_columns is None and (base.ard_dims is not None or base.active_dims is not None):
            num_columns = base.ard_dims or int(base.active_dims.numel())
        if num_columns is not None and (isinstance(num_columns, bool) or not isinstance(num_columns, numbers.Integral)
                                        or num_columns < 1):
            raise ValueError(f"num_columns: expected None or an int >= 1, got {num_columns!r}")
        if (isinstance(boundary_factor, bool) or not isinstance(boundary_factor, numbers.Real)
                or not 1 < boundary_factor < math.inf):
            raise ValueError(f"boundary_factor: expected a number > 1, got {boundary_factor!r}")
        self.boundary_factor = float(boundary_factor)
        self.requested_basis = num_basis
        self.num_columns = None
        if num_columns is not None:
            self._set_columns(int(num_columns))
        elif center is not None or half_width is not None:
            raise ValueError("num_columns: give it with center and half_width when the base kernel has neither "
                             "ard_dims nor active_dims")
        self.center = None if center is None else _box(center, "center", self.num_columns, positive=False)
        self.half_width = None if half_width is None else _box(half_width, "half_width", self.num_columns, positive=True)
        if (self.center is None) != (self.half_width is None):
            raise ValueError("center, half_width: give both (the box) or neither (set_domain sets them)")

    def _set_columns(self, columns: int) -> None:
        self.num_columns = columns
        self.num_basis = _counts(self.requested_basis, columns)
        grids = torch.meshgrid(*(torch.arange(1, m + 1, dtype=torch.float64) for m in self.num_basis), indexing="ij")
        self.register_buffer("indices", torch.stack([g.reshape(-1) for g in grids], -1), persistent=False)

    @property
    def num_features(self) -> int:
        """M, the number of basis functions (known once the number of columns is)."""
        self._require_domain()
        return math.prod(self.num_basis)

    @property
    def has_domain(self) -> bool:
        return self.center is not None

    def set_domain(self, x: torch.Tensor) -> None:
        """Set the box from inputs x ``(*batch, n, d)`` (the columns the base kernel sees): centre
        at each column's midrange, half-width ``boundary_factor`` times half its range (1 for a
        column without spread)."""
        if self.num_columns is None:
            self._set_columns(self.base.select_dims(x).shape[-1])
        cols = self.base.select_dims(self.select_dims(x.detach())).reshape(-1, self.num_columns_of(x))
        low, high = cols.min(0).values.double(), cols.max(0).values.double()
        half = (high - low) / 2
        half = torch.where(half > 0, half, torch.ones_like(half))
        self.center = [float(v) for v in (low + high) / 2]
        self.half_width = [float(v) for v in self.boundary_factor * half]

    def num_columns_of(self, x: torch.Tensor) -> int:
        cols = self.base.select_dims(self.select_dims(x)).shape[-1]
        if cols != self.num_columns:
            raise ValueError(f"x: the base kernel sees {cols} input columns, this HilbertSpace kernel was built for "
                             f"{self.num_columns} (pass num_columns=, or set the base kernel's ard_dims/active_dims)")
        return cols

    def frequencies(self, dtype: torch.dtype, device) -> torch.Tensor:
        """omega ``(M, d)``: pi j_k / (2 L_k) for every multi-index."""
        half = torch.tensor(self.half_width, dtype=torch.float64, device=device)
        return ((math.pi / 2) * self.indices.to(device=device, dtype=torch.float64) / half).to(dtype)

    def _require_domain(self) -> None:
        if not self.has_domain:
            raise ValueError("kernel: this HilbertSpace kernel has no box yet; build a BasisGP with it (which sets the "
                             "box from its training inputs), call kernel.set_domain(x), or pass center and half_width")

    has_features = True

    def basis(self, x: torch.Tensor) -> torch.Tensor:
        """phi_J(x) ``(*b, n, M)`` on the columns the base kernel sees (x: this kernel's columns)."""
        self._require_domain()
        self.num_columns_of(x)
        cols = self.base.select_dims(x)
        center = torch.tensor(self.center, dtype=cols.dtype, device=cols.device)
        half = torch.tensor(self.half_width, dtype=cols.dtype, device=cols.device)
        phases = (math.pi / 2) * (cols - center + half) / half  # (*b, n, d)
        out = None
        for k, m in enumerate(self.num_basis):
            j = torch.arange(1, m + 1, dtype=cols.dtype, device=cols.device)
            part = torch.sin(phases[..., k:k + 1] * j) / half[k].sqrt()  # (*b, n, m_k)
            out = part if out is None else (out.unsqueeze(-1) * part.unsqueeze(-2)).reshape(*part.shape[:-1], -1)
        return out

    def weights(self, dtype: torch.dtype, device) -> torch.Tensor:
        """sqrt(S(omega_J)) ``(*batch, M)``."""
        return (0.5 * self.base.log_spectral_density(self.frequencies(dtype, device))).exp()

    has_features = True

    def factored_map(self, x: torch.Tensor):
        basis = self.basis(x)
        return basis, torch.diag_embed(self.weights(basis.dtype, basis.device))

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        basis = self.basis(x)
        return basis * self.weights(basis.dtype, basis.device).unsqueeze(-2)

    def evaluate(self, x1, x2, diag):
        f1 = self.feature_map(x1)
        if diag:
            return f1.square().sum(-1)
        f2 = f1 if x2 is x1 else self.feature_map(x2)
        return f1 @ f2.transpose(-1, -2)

    def extra_repr(self) -> str:
        return f"num_basis={self.requested_basis}, boundary_factor={self.boundary_factor}"
