# The one comparison the contract checks use: a tensor against a float64 reference, failing with
# an AssertionError that says what differs, where, by how much and what the tolerance was.
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import Tensor

# default relative tolerances (of the largest reference entry) by the dtype under test
DEFAULT_RTOL = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 2e-2}


def default_rtol(dtype: torch.dtype) -> float:
    """The relative tolerance the checks use for results computed in ``dtype``."""
    return DEFAULT_RTOL.get(dtype, 1e-4)


def as_float64(value) -> Tensor:
    """A detached float64 CPU copy of a tensor (or number)."""
    if not isinstance(value, Tensor):
        value = torch.as_tensor(value)
    return value.detach().to(device="cpu", dtype=torch.float64)


def fail(what: str, message: str) -> None:
    """Raise the AssertionError of a failed check: '<what>: <message>'."""
    raise AssertionError(f"{what}: {message}")


@contextmanager
def calling(what: str):
    """Turn an exception raised inside (by the extension under test) into the AssertionError of
    the check ``what``, naming the exception; AssertionErrors pass through."""
    try:
        yield
    except AssertionError:
        raise
    except Exception as err:
        raise AssertionError(f"{what}: raised {type(err).__name__}: {err}") from err


def assert_shape(actual: Tensor, shape, what: str) -> None:
    """``actual`` is a tensor of exactly ``shape``."""
    if not isinstance(actual, Tensor):
        fail(what, f"expected a torch.Tensor, got {type(actual).__name__}")
    if tuple(actual.shape) != tuple(shape):
        fail(what, f"shape {tuple(actual.shape)}, expected {tuple(shape)}")


def assert_close(actual, expected, *, rtol: float, atol: float = 0.0, what: str,
                 elementwise: bool = False) -> None:
    """max |actual - expected| <= atol + rtol * max |expected| (both of one shape; compared in float64).

    The relative part is measured against the largest reference entry, not entry by entry, so
    entries that should be near zero do not need their own absolute tolerance; ``elementwise``:
    against each entry's own |expected| instead (|a_i - e_i| <= atol + rtol |e_i| for every i, for
    quantities with a per-entry accuracy such as variances). Non-finite values always fail.
    """
    a, e = as_float64(actual), as_float64(expected)
    if a.shape != e.shape:
        fail(what, f"shape {tuple(a.shape)}, expected {tuple(e.shape)}")
    if a.numel() == 0:
        return
    if not bool(torch.isfinite(a).all()):
        bad = (~torch.isfinite(a)).nonzero()[0].tolist()
        fail(what, f"{int((~torch.isfinite(a)).sum())} non-finite entries (first at index {bad})")
    if not bool(torch.isfinite(e).all()):
        fail(what, f"the reference holds {int((~torch.isfinite(e)).sum())} non-finite entries")
    diff = (a - e).abs()
    if elementwise:
        excess = diff / (atol + rtol * e.abs()).clamp_min(1e-300)
        flat = int(excess.argmax())
        scale = float(e.abs().flatten()[flat])
    else:
        flat = int(diff.argmax())
        scale = float(e.abs().max())
    err = float(diff.flatten()[flat])
    allowed = atol + rtol * scale
    if not err <= allowed:
        index = list(torch.unravel_index(torch.tensor(flat), a.shape)) if a.dim() else []
        index = [int(i) for i in index]
        of = "its expected value" if elementwise else "the largest expected entry"
        fail(what, f"{'worst' if elementwise else 'max'} |difference| {err:.3g} at index {index} (got "
                   f"{float(a.flatten()[flat]):.10g}, expected {float(e.flatten()[flat]):.10g}); "
                   f"{err / max(scale, 1e-300):.3g} of {of} {scale:.3g}; allowed {allowed:.3g} = "
                   f"atol {atol:g} + rtol {rtol:g} x {scale:.3g}")


def random_tensor(*shape, dtype, device, generator: torch.Generator) -> Tensor:
    """Standard normal entries drawn in float64 on the CPU from ``generator`` (device-independent),
    then cast to ``dtype`` and moved to ``device``."""
    return torch.randn(*shape, dtype=torch.float64, generator=generator).to(device=device, dtype=dtype)
