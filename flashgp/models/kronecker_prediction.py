# Exact predictions of a multitask model on a full task grid (one noise per task) from the
# eigendecompositions of B and K_x: no solves per test point, whatever the training solver.
"""With K_hat^-1 = (P ⊗ Q) S (P ⊗ Q)ᵀ (``linalg.kronecker_eigen``) and a = K_hat^-1 (y - m) as A (t, n),
a test row (x, a) has

    mean  = m(x, a) + (K(x, X) Aᵀ B)[a],
    cov((x, a), (x', b)) = B[a, b] k(x, x') - sum_pk D[a, p] D[b, p] C(x)_k C(x')_k S[p, k],

with D = B P ``(t, t)`` and C(x) = K(x, X) Q ``(n,)``: O(n²) per test point after the O(n³ + t³)
factorization, exact, where CG predictions solve once per test row. Test rows may be any
task-indexed rows; the points of a full test grid are evaluated once for all its tasks.
"""
from __future__ import annotations

import torch

from ..distributions.covariances import PosteriorCovariance
from ..engines.cholesky import kronecker_parts
from ..engines.records import CholeskyInfo
from ..linalg.kronecker_eigen import KroneckerEigen
from ..operators import kernel_operator
from .prediction import PredictionCache

# grid points n up to which a multitask model on a grid predicts by the eigendecompositions (K_x,
# n x n in float64, and its eigenvectors are held; beyond, the solver's own predictions run)
KRONECKER_PREDICT_MAX = 20_000
# test points per chunk: their float64 (chunk, n) cross covariance takes at most this many bytes
CHUNK_BYTES = 64 * 1024**2


class KroneckerPrediction(PredictionCache):
    """The prediction cache of ``MultitaskGP`` on a grid (``kronecker_parts`` applies)."""

    def __init__(self, model, solver, snapshot):
        super().__init__(model, solver, snapshot)
        with torch.no_grad():
            kx, b, noise = (part.detach() for part in kronecker_parts(self.kernel, self.train_x, self.noise))
            self.eig = KroneckerEigen.build(kx, b, noise)
            self.grid = self.kernel.task_grid(self.train_x).double()
            t, n = self.eig.shape
            self.alpha = self.eig.solve(self.resid.unsqueeze(-1))  # (t n, 1) float64
            self.weights = self.alpha.reshape(t, n).T @ b  # (n, t): K(x, X) @ weights gives every task's mean
            self.d = b @ self.eig.p  # (t, t)
        self.diagnostics.update(CholeskyInfo(0.0, structure="kronecker", eigen_clamped=self.eig.clamped).as_dict())

    def chunk(self) -> int:
        return max(1, CHUNK_BYTES // (8 * self.eig.shape[1]))

    def cross(self, points: torch.Tensor) -> torch.Tensor:
        """K(points, X) ``(c, n)`` float64 for test points ``(c, d)``."""
        return self.kernel.base(points.double(), self.grid)

    def _parts(self, x: torch.Tensor):
        points, where = _test_points(self.kernel, x)
        tasks = x[:, -1].long()
        means, downdates = [], []
        step = self.chunk()
        for begin in range(0, points.shape[0], step):
            k = self.cross(points[begin:begin + step])
            means.append(k @ self.weights)  # (c, t)
            c = k @ self.eig.q
            downdates.append((c.square() @ self.eig.s.T) @ self.d.square().T)  # (c, t): sum_pk D^2 C^2 S
        mean_table, down_table = torch.cat(means), torch.cat(downdates)
        mean = self.mean_fn(x) + mean_table[where, tasks].to(x.dtype)
        prior = kernel_operator(self.kernel, x)
        variances = prior.diagonal().double() - down_table[where, tasks]
        return mean, KroneckerDowndated(prior, self, points, where, tasks, variances.to(x.dtype)), "kronecker"


def _test_points(kernel, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the distinct test points ``(m, d)``, the point of each row ``(rows,)``): a full task grid's m
    points once, else one point per row."""
    grid = kernel.task_grid(x)
    rows = torch.arange(x.shape[0], device=x.device)
    if grid is not None:
        return grid, rows % grid.shape[0]
    return x[:, :-1], rows


class KroneckerDowndated(PosteriorCovariance):
    """The posterior covariance of ``KroneckerPrediction`` at task-indexed test rows ``(r, r)``: the
    prior operator minus the structured downdate (module docstring), its diagonal ``variances``
    computed by the cache; products and rows recompute C(x) chunk by chunk."""

    def __init__(self, prior, cache: KroneckerPrediction, points, where, tasks, variances):
        self.prior, self.cache, self.points, self.where, self.tasks = prior, cache, points, where, tasks
        self.variances = variances
        self.shape, self.dtype, self.device = prior.shape, prior.dtype, prior.device

    def _factors(self, rows: torch.Tensor) -> torch.Tensor:
        """F ``(r, t, n)`` with F[i, p, k] = D[a_i, p] C(x_i)_k: the downdate is F S Fᵀ over (p, k)."""
        c = self.cache.cross(self.points[self.where[rows]]) @ self.cache.eig.q
        return self.cache.d[self.tasks[rows]].unsqueeze(-1) * c.unsqueeze(-2)

    def _chunks(self):
        total, step = self.shape[-1], max(1, self.cache.chunk() // max(1, self.cache.eig.shape[0]))
        return [torch.arange(b, min(total, b + step), device=self.device) for b in range(0, total, step)]

    def _matmul(self, rhs):
        rhs64 = rhs.double()
        z = sum(torch.einsum("ipk,ic->pkc", self._factors(rows), rhs64[rows]) for rows in self._chunks())
        z = self.cache.eig.s.unsqueeze(-1) * z
        down = torch.cat([torch.einsum("ipk,pkc->ic", self._factors(rows), z) for rows in self._chunks()])
        return self.prior._matmul(rhs) - down.to(rhs.dtype)

    def _diagonal(self):
        return self.variances

    def _rows(self, index):
        left = self._factors(index) * self.cache.eig.s  # (r, t, n)
        down = torch.cat([torch.einsum("ipk,jpk->ij", left, self._factors(rows)) for rows in self._chunks()], -1)
        return self.prior.rows(index) - down.to(self.dtype)
