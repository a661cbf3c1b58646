# The randomized Nystrom preconditioner (Halko, Martinsson and Tropp 2011; the stable shifted form of
# Tropp, Yurtsever, Udell and Cevher 2017; Frangella, Tropp and Udell 2023 for PCG) and its
# configuration fg.Nystrom: products of the kernel operator with a random n x k test matrix.
"""K_nys = U Lambda U^T from Y = K Omega, Omega an orthonormal n x k test matrix (a Gaussian one,
orthonormalized, after ``power_iters`` products with K: Omega = orth(K^q G)):

    nu = eps * ||Y||_F,  Y_nu = Y + nu Omega,  C = chol(Omega^T Y_nu),  B = Y_nu C^{-T},
    B = U S V^T (thin SVD),  Lambda = max(S^2 - nu, 0).

B B^T is the Nystrom approximation of K + nu I at Omega, so B B^T <= K + nu I; subtracting the
shift again, K - K_nys >= -nu I (exactly PSD on the range of U). The shift keeps C computable
when Omega^T Y is singular to working precision (a low-rank K, rounding in a float32 product).
Here S^2 and V come from the k x k matrix B^T B (float64), and the factor is
F = B V diag(sqrt(Lambda) / S) = U Lambda^{1/2}: no n x k SVD, and K_nys <= B B^T holds
whatever the rounding of the small eigenproblem.

The preconditioner is P = F F^T + diag(noise) (a LowRankPlusDiag): exact log det, exact N(0, P)
samples, noise per point allowed. P <= K_hat + nu I, so every eigenvalue of P^{-1} K_hat is at
least 1 - nu / min(noise) (``spectrum_floor``; in float64 nu is ~1e-16 ||K||, so about 1).
Frangella, Tropp and Udell precondition K + mu I (one scalar noise mu) with
U (Lambda + mu I) U^T + (lambda_k + mu) (I - U U^T) instead: the complement of range(U) is
scaled by the smallest kept eigenvalue plus mu, so the preconditioned spectrum clusters around
1 from both sides, and its inverse, log det and samples follow from its eigendecomposition.
With per-point noise D there is no such closed form for the complement, while P = K_nys + D
keeps Woodbury solves, an exact log det and exact N(0, P) samples for any D (BBMM needs all
three: the log det is log det P plus an SLQ estimate of log det P^{-1} K_hat, with N(0, P)
probes), and K_hat - P >= -nu I gives the lower bound of the preconditioned spectrum that the
certified variances use (the Frangella-Tropp-Udell P roughly exceeds K_hat on the complement,
where K's eigenvalues are below lambda_k, so its floor would be about mu / (lambda_k + mu)). It is also the form of the pivoted-Cholesky
preconditioners, so the same operator serves all three low-rank kinds.

Cost: 1 + power_iters products ``kernel_op.matmul`` with k columns (with the fused GPU kernels,
each about k / (probes + 1) CG iterations' worth of products), as many QRs of n x k float64
matrices, and O(n k^2) float64 work in chunks of rows. Unlike pivoted Cholesky it needs no rows
of K, so any operator with a product serves, and its range approximates that of K's top
eigenvectors (within a factor of the best rank-k approximation that depends on the spectral
decay and the power iterations), not the span of k columns of K.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..operators.base import Operator
from ..operators.low_rank import LowRankPlusDiag
from .base import EmptyState, PreconditionerConfig, check_noise, check_number, check_purpose, tagged
from .pivoted_cholesky import _check_rank

SHIFT_ULPS = 1.0     # nu = this * eps(op dtype) * ||Y||_F, times 10 per failed Cholesky of Omega^T Y_nu
SHIFT_RETRIES = 8
SKETCH_CHUNK = 1 << 16  # rows of Y per float64 block (bounds the float64 temporaries to this x k)


def sketch_matrix(n: int, k: int, seed: int, device) -> Tensor:
    """Omega (n, k) float64 with orthonormal columns: a Gaussian matrix drawn on the CPU from
    ``seed`` (the same on every device), orthonormalized by QR on ``device``."""
    gen = torch.Generator().manual_seed(seed)
    gauss = torch.randn(n, k, dtype=torch.float64, generator=gen).to(device)
    return torch.linalg.qr(gauss).Q


def _chunks(n: int) -> list[slice]:
    return [slice(start, start + SKETCH_CHUNK) for start in range(0, n, SKETCH_CHUNK)]


@torch.no_grad()
def randomized_nystrom(op: Operator, rank: int, seed: int = 0, power_iters: int = 1,
                       info: dict | None = None) -> tuple[Tensor, Tensor]:
    """(F ``(*batch, n, k)``, nu ``(*batch,)`` float64) with K_nys = F F^T the randomized Nystrom
    approximation of the symmetric PSD operator ``op`` ``(*batch, n, n)`` from k = min(rank, n)
    test vectors (module docstring); F in op's dtype and device, without gradient.

    Only ``op.matmul`` is used, 1 + ``power_iters`` times. The Gaussian matrix is drawn from
    ``seed`` (CPU generator); each power iteration replaces the test matrix by an orthonormal
    basis of K times it (Omega = orth(K^q G)), which tilts it towards K's top eigenvectors.
    ``info`` receives shift (the largest nu) and shift_retries.
    """
    _check_rank(rank)
    _check_rank(power_iters)
    if not isinstance(op, Operator):
        raise TypeError(f"op: expected a flashgp Operator, got {type(op).__name__}")
    batch, n, device = op.batch_shape, op.shape[-1], op.device
    k = min(rank, n)
    if k == 0:
        zero = torch.zeros(batch, dtype=torch.float64, device=device)
        return torch.zeros(*batch, n, 0, dtype=op.dtype, device=device), zero
    omega = sketch_matrix(n, k, seed, device)
    for _ in range(power_iters):
        omega = torch.linalg.qr(op.matmul(omega.to(op.dtype).expand(*batch, n, k)).double()).Q
    omega = omega.to(op.dtype)  # the matrix the product sees
    y = op.matmul(omega.expand(*batch, n, k))  # (*batch, n, k)
    omega = omega.double()
    cross = torch.zeros(*batch, k, k, dtype=torch.float64, device=device)  # Omega^T Y
    gram = torch.zeros_like(cross)  # Y^T Y
    for rows in _chunks(n):
        part = y[..., rows, :].double()
        cross += omega[..., rows, :].transpose(-1, -2) @ part
        gram += part.transpose(-1, -2) @ part
    omega_gram = omega.transpose(-1, -2) @ omega  # I up to the rounding of Omega to op's dtype
    nu = SHIFT_ULPS * torch.finfo(op.dtype).eps * gram.diagonal(dim1=-2, dim2=-1).sum(-1).sqrt()
    nu = nu.clamp_min(torch.finfo(torch.float64).tiny)
    inner = 0.5 * (cross + cross.transpose(-1, -2))  # Omega^T Y_nu = this + nu Omega^T Omega
    tries = 0
    while True:
        chol, failed = torch.linalg.cholesky_ex(inner + nu[..., None, None] * omega_gram)
        if not bool((failed != 0).any()):
            break
        tries += 1
        if tries > SHIFT_RETRIES or not bool(torch.isfinite(inner).all()):
            raise ValueError("Nystrom preconditioner: Omega^T K Omega cannot be factored (non-finite "
                             "kernel products or hyperparameters?)")
        nu = torch.where(failed != 0, 10 * nu, nu)
    # B^T B = C^{-1} Y_nu^T Y_nu C^{-T}, Y_nu = Y + nu Omega, from the rows of B in chunks
    btb = torch.zeros_like(cross)
    for rows in _chunks(n):
        b = _shifted_rows(y, omega, nu, chol, rows)
        btb += b.transpose(-1, -2) @ b
    s2, v = torch.linalg.eigh(0.5 * (btb + btb.transpose(-1, -2)))
    s2, v = s2.flip(-1), v.flip(-1)  # largest first
    keep = (s2 - nu.unsqueeze(-1)).clamp_min(0)
    coef = torch.where(keep > 0, (keep / s2.clamp_min(torch.finfo(torch.float64).tiny)).sqrt(), 0.0)
    mix = v * coef.unsqueeze(-2)  # F = B V diag(sqrt(Lambda) / S)
    factor = torch.empty(*batch, n, k, dtype=op.dtype, device=device)
    for rows in _chunks(n):
        factor[..., rows, :] = (_shifted_rows(y, omega, nu, chol, rows) @ mix).to(op.dtype)
    if not bool(torch.isfinite(factor).all()):
        raise ValueError("Nystrom preconditioner: non-finite factor (non-finite kernel products?)")
    if info is not None:
        info.update(shift=float(nu.max()), shift_retries=tries)
    return factor, nu


def _shifted_rows(y: Tensor, omega: Tensor, nu: Tensor, chol: Tensor, rows: slice) -> Tensor:
    """Rows ``rows`` of B = Y_nu C^{-T} ``(*batch, r, k)`` float64, by a triangular solve."""
    part = y[..., rows, :].double() + nu[..., None, None] * omega[..., rows, :]
    return torch.linalg.solve_triangular(chol, part.transpose(-1, -2), upper=False).transpose(-1, -2)


def nystrom_floor(nu: Tensor, noise: Tensor) -> float | None:
    """1 - nu / min(noise), the worst over the batch: a lower bound of the eigenvalues of
    P^{-1} K_hat for P = K_nys + diag(noise) (K_hat - P >= -nu I, P >= min(noise) I); None
    when it is not positive."""
    ratio = float((nu / noise.double().amin(-1)).max())
    floor = 1.0 - ratio
    return floor if floor > 0 else None


@dataclass(frozen=True)
class Nystrom(PreconditionerConfig):
    """Preconditioner P = K_nys + noise, K_nys the rank-``rank`` randomized Nystrom
    approximation of K from one product K Omega with an orthonormalized Gaussian test matrix
    (``preconditioners.nystrom``). The range of K_nys approximates K's top eigenvectors (where
    pivoted Cholesky spans k columns of K): at equal rank a closer low-rank approximation for
    kernels whose spectrum decays slowly, at the cost of an O(n^2 k) product instead of O(n k)
    kernel entries (cheap on the GPU kernels, which multiply K by many columns at once).
    Log det P and N(0, P) probes are exact; per-point noise is allowed. ``spectrum_floor`` is
    1 - nu / min(noise) with the stabilizing shift nu (about 1 in float64).

    Args:
        rank: test vectors, and columns of the factor (0: the diagonal preconditioner).
        eval_rank: the rank of the posterior mean solve's preconditioner (None: ``rank``).
        seed: the test matrix's seed (CPU generator: the same on every device). The sketch is
            drawn afresh at every build, so the training objective at given hyperparameters
            does not depend on earlier steps (nothing is reused between builds).
        power_iters: products with K that turn the Gaussian test matrix towards K's top
            eigenvectors before the sketch (Omega = orth(K^q G)); each costs one more product
            with k columns. On Matern 5/2 kernel matrices (n = 1000 uniform points in 2-d,
            lengthscales 0.1-1, ranks 40 and 160) the largest eigenvalue of K - K_nys was
            4.6-14x that of the best rank-k approximation with 0, 1.5-1.9x with 1 and 1.2-1.6x
            with 2 (greedy pivoted Cholesky 2.8-4.6x, RPCholesky 4.2-13x); hence the default 1.
    """

    kind = "nystrom"

    rank: int = 100
    eval_rank: int | None = None
    seed: int = 0
    power_iters: int = 1

    def __post_init__(self):
        check_number(self, "rank", integer=True, allow_zero=True)
        check_number(self, "power_iters", integer=True, allow_zero=True)
        if self.eval_rank is not None:
            check_number(self, "eval_rank", integer=True, allow_zero=True)
        check_number(self, "seed", integer=True, allow_zero=True)

    def new_state(self) -> EmptyState:
        return EmptyState(Nystrom)

    def build(self, kernel_op, noise: Tensor, state: EmptyState | None = None,
              purpose: str = "train") -> LowRankPlusDiag:
        """P = F F^T + diag(noise) for kernel_op ``(*batch, n, n)``, noise ``(*batch, n)``, at ``rank``
        (``eval_rank`` for purpose "predict" when given). Sets ``state.source`` to "sketched"."""
        check_purpose(purpose)
        noise = check_noise(noise)
        state = self._state_for(state)
        rank = self.eval_rank if purpose == "predict" and self.eval_rank is not None else self.rank
        with torch.no_grad():
            factor, nu = randomized_nystrom(kernel_op, rank, self.seed, self.power_iters)
            precond = LowRankPlusDiag(factor, noise, spectrum_floor=nystrom_floor(nu, noise))
        state.source, state.remaining_error = "sketched", None
        return tagged(precond, self.kind)
