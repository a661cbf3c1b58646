# The preconditioner contract: what CG, the log-det estimate and certified variances rely on of a
# built preconditioner P (flashgp.preconditioners.Preconditioner), checked densely in float64.
"""``check_preconditioner(precond, k_hat_dense)`` runs, on P ``(*batch, n, n)``:

- ``solve``: P x = b for random b ``(*batch, n, t)``, as a residual relative to ||P|| ||x|| (not
  amplified by the condition number); P symmetric positive definite;
- ``logdet()`` ``(*batch,)`` against slogdet(P);
- ``sample(num)``: whitened by chol(P), the sample covariance must be the identity and the
  sample mean zero, entry by entry (z-scores) and as a whole (the sum of squared z-scores);
  a factor-of-2 error or a transposed factor is caught by thousands of standard deviations;
- split form (``precond.split``): ``mul_t`` is the transpose of ``mul`` (U), and
  U^T U = P^{-1} as ``solve`` gives it;
- ``spectrum_floor`` (when not None): the smallest eigenvalue of P^{-1} K_hat is at least
  floor * (1 - floor_rtol).

Where P comes from (``p_dense`` unless given): ``to_dense()`` for a preconditioner that is an
Operator (its products), else (U^T U)^{-1} from ``mul`` for a split one, else the inverse of
``solve`` on identity columns (then the solve check only confirms consistency). An exception
raised by the preconditioner becomes an AssertionError naming the check and the exception.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..operators.base import Operator
from ..preconditioners.base import Preconditioner
from ._compare import as_float64, assert_close, assert_shape, calling, default_rtol, fail, random_tensor

CHECKS = ("solve", "logdet", "sample", "split", "spectrum_floor")
FLOOR_RTOL = {torch.float64: 1e-6, torch.float32: 1e-3}


def check_preconditioner(precond, k_hat_dense: Tensor, *, p_dense: Tensor | None = None,
                         rtol: float | None = None, num_samples: int = 4096, sample_sigmas: float = 6.0,
                         floor_rtol: float | None = None, columns: int = 3, skip: tuple = (), seed: int = 0,
                         name: str | None = None) -> None:
    """Check a built preconditioner against its dense float64 matrix.

    Args:
        precond: the built preconditioner P of K_hat (``solve``, ``logdet``, ``sample``; ``split``
            with ``mul`` / ``mul_t``; ``spectrum_floor``), shape ``(*batch, n, n)``.
        k_hat_dense: K_hat = K + diag(noise), ``(*batch, n, n)``, dense (converted to float64); used
            for the spectrum floor and the shapes.
        p_dense: P itself ``(*batch, n, n)`` if the caller knows it independently (e.g. from the
            preconditioner's definition); default: see the module docstring.
        rtol: tolerance of solves (normwise residual), log determinants (nats per point) and the
            split form; default by the preconditioner's dtype (1e-9 float64, 1e-4 float32).
        num_samples: draws for the sample-covariance check (at n = 100, 4096 draws catch a
            covariance off by 10% in every entry, or by 25% in one).
        sample_sigmas: the z-score beyond which a sample statistic fails (6: a false alarm
            about once in 10^5 checks at n = 100).
        floor_rtol: the relative slack of the spectrum floor (default 1e-6 for float64, 1e-3
            for float32: P is built in its dtype).
        columns: right-hand sides per solve.
        skip: names from ``CHECKS`` not to run.
        seed: seeds right-hand sides and samples.
        name: how messages name the preconditioner (default: its class name).

    Raises:
        AssertionError: the first check that fails.
    """
    unknown = set(skip) - set(CHECKS)
    if unknown:
        raise ValueError(f"skip: unknown checks {sorted(unknown)}; known: {CHECKS}")
    label = name or type(precond).__name__
    if not isinstance(precond, Preconditioner):
        fail(f"{label}: type", "expected a flashgp.preconditioners.Preconditioner (solve, logdet, sample, "
                               "split, spectrum_floor, info)")
    k_hat = as_float64(k_hat_dense)
    batch, n = k_hat.shape[:-2], k_hat.shape[-1]
    dtype = precond.dtype
    device = precond.device
    rtol = default_rtol(dtype) if rtol is None else rtol
    floor_rtol = FLOOR_RTOL.get(dtype, 1e-3) if floor_rtol is None else floor_rtol
    shape = precond.shape
    if tuple(torch.broadcast_shapes(shape, k_hat.shape)) != tuple(k_hat.shape):
        fail(f"{label}: shape", f"{tuple(shape)} does not fit K_hat's {tuple(k_hat.shape)}")
    split = bool(precond.split)
    with calling(f"{label}: building P densely"):
        p, source = _dense_p(precond, p_dense, batch, n, dtype, device, split)
    label_p = f"{label} (P from {source})"
    _check_spd(p, label_p, rtol)
    gen = torch.Generator().manual_seed(seed)
    checks = {
        "solve": lambda: check_solve(precond, p, label_p, columns, gen, rtol=rtol),
        "logdet": lambda: check_logdet(precond, p, label_p, rtol=rtol),
        "sample": lambda: check_sample(precond, p, label_p, num_samples, sample_sigmas, seed),
        "split": lambda: check_split(precond, p, label_p, rtol=rtol, independent=p_dense is not None),
        "spectrum_floor": lambda: check_spectrum_floor(precond, p, k_hat, label_p, floor_rtol),
    }
    if not split:
        del checks["split"]
    if split and not hasattr(precond, "sample"):  # CG samples a split one through U itself
        del checks["sample"]
    for check, run in checks.items():
        if check not in skip:
            with calling(f"{label_p}: {check}"):
                run()


def _identity(batch, n, dtype, device) -> Tensor:
    return torch.eye(n, dtype=dtype, device=device).expand(*batch, n, n)


def _dense_p(precond, p_dense, batch, n, dtype, device, split) -> tuple[Tensor, str]:
    """(P ``(*batch, n, n)`` float64, where it came from)."""
    if p_dense is not None:
        return as_float64(p_dense).expand(*batch, n, n), "p_dense"
    with torch.no_grad():
        if isinstance(precond, Operator) and not split:
            return as_float64(precond.to_dense()).expand(*batch, n, n), "to_dense()"
        eye = _identity(batch, n, dtype, device)
        if split:
            u = as_float64(precond.mul(eye))
            return torch.linalg.inv(u.mT @ u), "(U^T U)^-1 with U = mul(I)"
        p_inv = as_float64(precond.solve(eye))
    return torch.linalg.inv(0.5 * (p_inv + p_inv.mT)), "solve(I)^-1"


def _check_spd(p: Tensor, label: str, rtol: float) -> None:
    scale = float(p.abs().max())
    asym = float((p - p.mT).abs().max())
    if asym > rtol * scale:
        fail(f"{label}: symmetry", f"max |P - P^T| = {asym:.3g}, allowed {rtol:g} x max |P| {scale:.3g}")
    low = float(torch.linalg.eigvalsh(0.5 * (p + p.mT)).min())
    if not low > 0:
        fail(f"{label}: positive definite", f"smallest eigenvalue of P is {low:.3g}")


def check_solve(precond, p: Tensor, label: str, columns: int, gen: torch.Generator, *, rtol: float) -> None:
    """precond.solve(b) for b ``(*batch, n, t)`` and ``(*batch, n, 1)``: ||P x - b|| <= rtol ||P||_2 ||x||
    per batch element (Frobenius norms over the columns)."""
    batch, n = p.shape[:-2], p.shape[-1]
    dtype = precond.dtype
    device = precond.device
    norm_p = torch.linalg.matrix_norm(p, ord=2)
    for t in (1, columns):
        rhs = random_tensor(*batch, n, t, dtype=dtype, device=device, generator=gen)
        with torch.no_grad():
            x = precond.solve(rhs)
        what = f"{label}: solve with {t} column(s)"
        assert_shape(x, rhs.shape, what)
        if x.dtype != dtype:
            fail(what, f"result dtype {x.dtype}, the preconditioner's is {dtype}")
        x64 = as_float64(x)
        if not bool(torch.isfinite(x64).all()):
            fail(what, "non-finite entries")
        resid = torch.linalg.matrix_norm(p @ x64 - as_float64(rhs))
        allowed = rtol * norm_p * torch.linalg.matrix_norm(x64)
        worst = int(torch.argmax((resid / allowed).flatten()))
        r, a = float(resid.flatten()[worst]), float(allowed.flatten()[worst])
        if not r <= a:
            forward = float((x64 - torch.linalg.solve(p, as_float64(rhs))).abs().max())
            fail(what, f"||P x - b|| = {r:.3g} (batch element {worst}), allowed {a:.3g} = rtol {rtol:g} x "
                       f"||P|| ||x||; max |x - P^-1 b| = {forward:.3g}")


def check_logdet(precond, p: Tensor, label: str, *, rtol: float) -> None:
    """precond.logdet() ``(*batch,)`` against slogdet(P), within rtol * (n + |log det P|) nats."""
    n = p.shape[-1]
    sign, expected = torch.linalg.slogdet(p)
    with torch.no_grad():
        out = precond.logdet()
    what = f"{label}: logdet()"
    assert_shape(out, p.shape[:-2], what)
    allowed = rtol * (n + float(expected.abs().max()))
    assert_close(out, expected, rtol=0.0, atol=allowed, what=what)


def check_sample(precond, p: Tensor, label: str, num_samples: int, sigmas: float, seed: int) -> None:
    """precond.sample(num_samples) ``(*batch, n, num_samples)`` has covariance P and mean 0.

    The draws are whitened by the Cholesky factor C of P (w = C^{-1} z ~ N(0, I) if right).
    With S = w w^T / num, z_ij = (S - I)_ij sqrt(num / (1 + [i = j])) and z_i = mean(w_i) sqrt(num)
    are about standard normal: each must be below ``sigmas``, and the sum of the z_ij^2 over
    i <= j (about chi-square with N = n (n + 1) / 2 degrees) below N + sigmas sqrt(2 N).
    """
    batch, n = p.shape[:-2], p.shape[-1]
    device = precond.device
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        z = precond.sample(num_samples, generator=gen)
    what = f"{label}: sample({num_samples})"
    assert_shape(z, (*batch, n, num_samples), what)
    z = as_float64(z)
    if not bool(torch.isfinite(z).all()):
        fail(what, "non-finite draws")
    w = torch.linalg.solve_triangular(torch.linalg.cholesky(p), z, upper=False)
    cov = w @ w.mT / num_samples
    eye = torch.eye(n, dtype=torch.float64)
    scores = (cov - eye) * math.sqrt(num_samples) / (1 + eye).sqrt()
    upper = torch.triu(torch.ones(n, n, dtype=torch.bool))
    worst = scores.abs().masked_fill(~upper, 0)
    flat = int(worst.flatten().argmax())
    b, rest = divmod(flat, n * n)
    i, j = divmod(rest, n)
    if float(worst.flatten()[flat]) > sigmas:
        fail(what, f"the whitened sample covariance C^-1 S C^-T differs from I by "
                   f"{float(worst.flatten()[flat]):.1f} standard deviations at ({i}, {j}) (value "
                   f"{float(cov.reshape(-1, n, n)[b, i, j]):.4g}, expected {float(eye[i, j]):g}; its "
                   f"diagonal averages {float(cov.diagonal(dim1=-2, dim2=-1).mean()):.4g}); allowed {sigmas:g}")
    total = (scores.square() * upper).sum((-1, -2))
    dof = n * (n + 1) / 2
    limit = dof + sigmas * math.sqrt(2 * dof)
    if float(total.max()) > limit:
        fail(what, f"the whitened sample covariance differs from I as a whole: sum of squared z-scores "
                   f"{float(total.max()):.4g}, expected about {dof:g} +- {math.sqrt(2 * dof):.3g}; allowed {limit:.4g}")
    means = w.mean(-1) * math.sqrt(num_samples)
    if float(means.abs().max()) > sigmas:
        fail(what, f"the whitened sample mean is {float(means.abs().max()):.1f} standard deviations from 0; "
                   f"allowed {sigmas:g}")


def check_split(precond, p: Tensor, label: str, *, rtol: float, independent: bool) -> None:
    """A split preconditioner (P^{-1} = U^T U): mul_t(I) = mul(I)^T and U^T U = solve(I), both in
    float64 within rtol of their largest entry; with an independent P also U^T U P = I."""
    batch, n = p.shape[:-2], p.shape[-1]
    dtype = precond.dtype
    device = precond.device
    eye = _identity(batch, n, dtype, device)
    with torch.no_grad():
        u, ut, p_inv = precond.mul(eye), precond.mul_t(eye), precond.solve(eye)
    for out, what in [(u, "mul(I)"), (ut, "mul_t(I)")]:
        assert_shape(out, (*batch, n, n), f"{label}: split form, {what}")
    u64 = as_float64(u)
    assert_close(ut, u64.mT, rtol=rtol, what=f"{label}: split form, mul_t(I) against mul(I)^T")
    gram = u64.mT @ u64
    assert_close(p_inv, gram, rtol=rtol, what=f"{label}: split form, solve(I) against U^T U (U = mul(I))")
    if independent:
        assert_close(gram @ p, torch.eye(n, dtype=torch.float64).expand(*batch, n, n), rtol=rtol * n,
                     what=f"{label}: split form, U^T U P against I")


def check_spectrum_floor(precond, p: Tensor, k_hat: Tensor, label: str, floor_rtol: float) -> None:
    """If precond.spectrum_floor is a number mu: lambda_min(P^{-1} K_hat) >= mu (1 - floor_rtol)."""
    floor = precond.spectrum_floor
    if floor is None:
        return
    what = f"{label}: spectrum_floor"
    if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not floor > 0:
        fail(what, f"expected None or a number > 0, got {floor!r}")
    c = torch.linalg.cholesky(p)
    whitened = torch.linalg.solve_triangular(c, torch.linalg.solve_triangular(c, k_hat, upper=False).mT,
                                             upper=False)
    low = torch.linalg.eigvalsh(0.5 * (whitened + whitened.mT)).min(-1).values
    worst = float(low.min())
    if not worst >= floor * (1 - floor_rtol):
        fail(what, f"the smallest eigenvalue of P^-1 K_hat is {worst:.10g}, below the claimed floor {floor:g} "
                   f"by {(floor - worst) / floor:.3g} of it; allowed {floor_rtol:g}")
