# The computation-aware (IterGP) approximation of K_hat^{-1}: a projection onto the span of a
# policy's actions, built one action at a time (Wenger et al. 2022, "Posterior and computational
# uncertainty in Gaussian processes", Algorithm 1).
"""IterGP's approximate precision C_i = S (S^T K_hat S)^{-1} S^T.

With actions S = [s_1, ..., s_i] ``(n, i)`` (search directions chosen by a *policy*) the matrix
C_i is built without ever inverting S^T K_hat S: each new action is made K_hat-conjugate to the
earlier ones,

    d_j = (I - C_{j-1} K_hat) s_j,    eta_j = s_j^T K_hat d_j = d_j^T K_hat d_j,
    C_j = C_{j-1} + d_j d_j^T / eta_j,

so that C_i = L L^T with L = [d_1 / sqrt(eta_1), ...] ``(n, i)`` (a rank-one update per action;
C_i depends on the span of S only). ``itergp_solve`` keeps L and K_hat L, O(n i) memory; the
conjugation is done twice (classical Gram-Schmidt in the K_hat inner product, repeated once,
from the stored K_hat L: no extra product with K_hat). Each step costs one product K_hat s
(O(n^2); a single kernel column, O(n d), for unit-vector actions) and O(n i) more.

Policies (``POLICIES``):

* ``"cg"``: s_j = r_{j-1} = b - K_hat C_{j-1} b, the residual of the current solve (with a
  preconditioner P: s_j = P^{-1} r_{j-1}); the d_j are then the conjugate-gradient search
  directions and C_i b the CG iterate. After n steps C_n = K_hat^{-1}.
* ``"cholesky"``: s_j = e_{k_j}, unit vectors at the points of ``order`` (default 0, 1, 2, ...):
  a partial Cholesky factorization; C_i b is the exact solve on those i points.
* ``"pivoted"``: unit vectors at the pivots of a greedy pivoted Cholesky of K_hat (the largest
  diagonal entry of K_hat - K_hat C_{j-1} K_hat, the Schur complement, first).

A CG action that is (numerically) in the span of the earlier ones (eta_j below ``DEGENERATE``
times s^T K_hat s), and every CG action once the residual is at round-off level (``CG_SWITCH``:
the solve has converged and residuals are noise), is replaced by the pivoted policy's next
unit vector, so a budget of n actions reaches C_n = K_hat^{-1} (to about cond(K_hat) times
machine precision); a degenerate unit vector is skipped.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

POLICIES = ("cg", "cholesky", "pivoted")
# an action whose conjugated part keeps less than this fraction of its K_hat-energy is degenerate
DEGENERATE = 1e-8
# the "cg" policy's residual actions give way to pivoted unit vectors once ||r|| <= CG_SWITCH ||b||:
# a residual at round-off level is noise, and conjugating it loses conjugacy
CG_SWITCH = 1e-11


@dataclass
class ProjectedPrecision:
    """The result of ``itergp_solve``: C_i = factor factor^T ~ K_hat^{-1}.

    Attributes:
        factor: L ``(n, i)`` float64, C_i = L L^T (K_hat-orthonormal columns: L^T K_hat L = I).
        k_factor: K_hat L ``(n, i)`` float64.
        actions: S ``(n, i)`` float64, the actions taken (span(S) = span(L)), or None when not kept.
        pivots: the data index of each unit-vector action ``(i,)`` (-1 for other actions).
        solution: C_i b ``(n,)`` float64 (the approximate solve of K_hat v = b).
        residual: b - K_hat C_i b ``(n,)`` float64.
        iterations: i, the number of actions.
        seconds: the time taken.
        stopped: why it stopped: "budget" (the iteration budget), "seconds" (the time budget) or
            "complete" (n actions: C_n = K_hat^{-1}).
        replaced: "cg" actions taken as pivoted unit vectors instead of residuals (once the
            residual fell to round-off level, ``CG_SWITCH``, or for a degenerate action).
    """

    factor: Tensor
    k_factor: Tensor
    actions: Tensor | None
    pivots: Tensor
    solution: Tensor
    residual: Tensor
    iterations: int
    seconds: float
    stopped: str
    replaced: int = 0

    def apply(self, rhs: Tensor) -> Tensor:
        """C_i rhs for rhs ``(n, k)`` (or ``(*b, n, k)``), in float64: L (L^T rhs), O(n i k)."""
        rhs = rhs.to(self.factor.dtype)
        return self.factor @ (self.factor.transpose(-1, -2) @ rhs)


class _Columns:
    """Growing (n, capacity) float64 storage of columns, doubling its capacity when full."""

    def __init__(self, n: int, capacity: int, like: Tensor):
        self.data = torch.zeros(n, max(1, capacity), dtype=torch.float64, device=like.device)
        self.size = 0

    def append(self, column: Tensor) -> None:
        if self.size == self.data.shape[1]:
            self.data = torch.cat([self.data, torch.zeros_like(self.data)], 1)
        self.data[:, self.size] = column
        self.size += 1

    @property
    def view(self) -> Tensor:
        return self.data[:, :self.size]


def _check(policy: str, iterations, seconds, order, n: int) -> Tensor | None:
    if policy not in POLICIES:
        raise ValueError(f"policy: expected one of {POLICIES}, got {policy!r}")
    if iterations is not None and (isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1):
        raise ValueError(f"iterations: expected a positive int or None, got {iterations!r}")
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                                or not math.isfinite(seconds) or seconds <= 0):
        raise ValueError(f"seconds: expected a positive finite number or None, got {seconds!r}")
    if order is None:
        return None
    order = torch.as_tensor(order).reshape(-1)
    if order.dtype in (torch.bool,) or order.is_floating_point() or order.is_complex():
        raise ValueError(f"order: expected integer data indices, got dtype {order.dtype}")
    if order.numel() and (int(order.min()) < 0 or int(order.max()) >= n):
        raise ValueError(f"order: expected indices in [0, {n}) (the training points), got values in "
                         f"[{int(order.min())}, {int(order.max())}]")
    if order.unique().numel() != order.numel():
        raise ValueError("order: expected distinct indices (each point once)")
    return order.long()


def itergp_solve(matvec: Callable[[Tensor], Tensor], column: Callable[[int], Tensor], diag: Tensor, rhs: Tensor,
                 policy: str = "cg", iterations: int | None = None, seconds: float | None = None,
                 order=None, precond: Callable[[Tensor], Tensor] | None = None,
                 keep_actions: bool = True) -> ProjectedPrecision:
    """Build C_i ~ K_hat^{-1} from a policy's actions, until the budget is spent.

    Args:
        matvec: v ``(n,)`` -> K_hat v ``(n,)`` (float64); used by the "cg" policy only.
        column: k -> K_hat[:, k] ``(n,)`` (float64), for unit-vector actions.
        diag: diag(K_hat) ``(n,)``.
        rhs: b ``(n,)``, the right-hand side (y - m(X)); the "cg" policy's actions come from it.
        policy: "cg", "cholesky" or "pivoted" (see the module docstring).
        iterations: the most actions (None: n); at most n are ever taken.
        seconds: stop once this much time has passed (checked after each action); None: no limit.
            At least one action is always taken.
        order: for "cholesky", the data indices to take first (distinct, in [0, n)); the other
            points follow in data order. Default: 0, 1, 2, ...
        precond: for "cg", v -> P^{-1} v (preconditioned CG actions); None: plain CG.
        keep_actions: keep S ``(n, i)`` (n i more floats) in the result.

    Returns:
        A ``ProjectedPrecision``. Cost: O(i) products with K_hat (or i kernel columns) and
        O(n i^2) more; memory O(n i).
    """
    if not isinstance(rhs, Tensor) or rhs.dim() != 1:
        raise ValueError(f"rhs: expected a tensor of shape (n,), got {getattr(rhs, 'shape', type(rhs).__name__)}")
    n = rhs.shape[0]
    order = _check(policy, iterations, seconds, order, n)
    limit = n if iterations is None else min(iterations, n)
    start = time.perf_counter()
    b = rhs.double()
    diag = diag.double().reshape(n)
    if not bool(torch.isfinite(b).all()) or not bool(torch.isfinite(diag).all()):
        raise ValueError("rhs, diag: expected finite values")
    capacity = limit if seconds is None else min(limit, 64)
    L, KL = _Columns(n, capacity, b), _Columns(n, capacity, b)
    S = _Columns(n, capacity, b) if keep_actions else None
    schur = diag.clone()  # diag(K_hat - K_hat C K_hat): the pivoted Cholesky's residual diagonal
    taken = torch.zeros(n, dtype=torch.bool, device=b.device)  # unit vectors used (or found degenerate)
    solution, residual = torch.zeros_like(b), b.clone()
    pivots, replaced = [], 0
    queue = []
    if policy == "cholesky":
        rest = torch.ones(n, dtype=torch.bool, device=b.device)
        first = torch.zeros(0, dtype=torch.long, device=b.device) if order is None else order.to(b.device)
        rest[first] = False
        queue = torch.cat([first, torch.arange(n, device=b.device)[rest]]).tolist()[::-1]  # popped from the end
    b_norm = float(b.norm())

    def unit(k: int):
        s = torch.zeros_like(b)
        s[k] = 1.0
        return s, column(k).double().reshape(n), k

    def pivot():
        if bool(taken.all()):
            return None
        return unit(int(torch.where(taken, -torch.inf, schur).argmax()))

    def conjugate(s, z):
        """(d, K_hat d, d^T K_hat d): s made K_hat-conjugate to the earlier actions, twice (round-off),
        the coefficients L^T K_hat d taken as (K_hat L)^T d; z = K_hat s, or None to multiply
        K_hat d afresh (CG actions: then K_hat L stays K_hat L to round-off)."""
        d, kd, total = s, z, 0.0
        for _ in range(2):
            if L.size:
                c = KL.view.T @ d
                d = d - L.view @ c
                kd = None if kd is None else kd - KL.view @ c
                total = total + c
        kd = matvec(d).double().reshape(n) if kd is None else kd
        eta = float(d @ kd)
        return d, kd, eta, eta + float(torch.as_tensor(total).square().sum())  # the last: s^T K_hat s

    stopped = "budget"
    while L.size < limit:
        if policy == "cg" and float(residual.norm()) > CG_SWITCH * b_norm:
            s = residual if precond is None else precond(residual).double().reshape(n)
            picked = (s.clone(), None, -1)
        elif policy == "cholesky":
            while queue and bool(taken[queue[-1]]):
                queue.pop()
            picked = unit(queue.pop()) if queue else pivot()
        else:  # pivoted, or CG once its residual is at round-off level
            replaced += policy == "cg"
            picked = pivot()
        if picked is None:
            stopped = "degenerate"
            break
        s, z, index = picked
        d, kd, eta, energy = conjugate(s, z)
        if not (eta > DEGENERATE * energy and math.isfinite(eta)):
            if index >= 0:  # a point the earlier ones determine (to round-off): nothing to learn from it
                taken[index] = True
                continue
            replaced += 1  # a degenerate CG action: the pivoted unit vector instead
            picked = pivot()
            if picked is None:
                stopped = "degenerate"
                break
            s, z, index = picked
            d, kd, eta, _ = conjugate(s, z)
            if not (eta > 0 and math.isfinite(eta)):
                taken[index] = True
                continue
        if index >= 0:
            taken[index] = True
        scale = eta ** -0.5
        l_j, kl_j = d * scale, kd * scale
        L.append(l_j)
        KL.append(kl_j)
        pivots.append(index)
        if S is not None:
            S.append(s)
        weight = l_j @ b
        solution += weight * l_j
        residual -= weight * kl_j
        schur -= kl_j.square()
        if seconds is not None and L.size < limit and time.perf_counter() - start >= seconds:
            stopped = "seconds"
            break
    if L.size >= n:
        stopped = "complete"
    return ProjectedPrecision(L.view.clone(), KL.view.clone(), None if S is None else S.view.clone(),
                              torch.tensor(pivots, dtype=torch.long),
                              solution, residual, L.size, time.perf_counter() - start, stopped, replaced)


def projected_precision_dense(k_hat: Tensor, actions: Tensor) -> Tensor:
    """S (S^T K_hat S)^{-1} S^T ``(n, n)`` by a dense Cholesky of the projected system (float64):
    the reference C_i of given actions S ``(n, i)`` (tests, small n)."""
    k_hat, actions = k_hat.double(), actions.double()
    actions = actions / actions.norm(dim=0).clamp_min(torch.finfo(torch.float64).tiny)  # C_i is scale-free
    gram = actions.T @ k_hat @ actions
    chol = torch.linalg.cholesky(0.5 * (gram + gram.T))
    half = torch.linalg.solve_triangular(chol, actions.T, upper=False)  # (i, n)
    return half.T @ half
