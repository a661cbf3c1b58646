# Numerical warnings during a fit: each kind is shown when it first appears, repeats are counted
# and recorded in the history, and one summary per repeated kind is shown when the fit ends.
from __future__ import annotations

import contextlib
import os
import sys
import warnings

from .errors import NumericalWarning
from .likelihoods import Gaussian

NOISE_FLOOR_KIND = "noise at its floor"
FLOOR_MARGIN = 0.05  # a learned noise within 5% of its floor counts as on it
FLOOR_FIX = ("fg.likelihoods.Gaussian(noise_floor=...), GPRegressor(noise_floor=...) or "
             "'flashgp fit --noise-floor F'")


def warning_kind(message: str) -> str:
    """What a flashgp NumericalWarning is about: its text up to the first colon
    (e.g. "CG for the log marginal likelihood", "SLQ log determinant had not settled")."""
    return message.split(":", 1)[0].strip()


class WarningDigest:
    """Collects the warnings of a fit's steps (see ``step``) so that a warning raised at every
    step of a long fit is shown once, not once per step.

    ``records``: (step, message) for every NumericalWarning, in order. Other warnings pass
    through unchanged. Re-emitted warnings go through the caller's warning filters, so
    ``warnings.filterwarnings("ignore", category=NumericalWarning)`` still silences them.
    """

    def __init__(self):
        self.records: list[tuple[int, str]] = []
        self._counts: dict[str, int] = {}
        self._first_step: dict[str, int] = {}
        self._last: dict[str, str] = {}

    @contextlib.contextmanager
    def step(self, index: int):
        """Context for training step ``index``: catches its warnings and files them on exit."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield
            finally:
                pending = list(caught)
        for item in pending:  # outside catch_warnings: the caller's filters apply again
            self._file(index, item)

    def _file(self, index: int, item: warnings.WarningMessage) -> None:
        if not issubclass(item.category, NumericalWarning):
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno,
                                   source=item.source)
            return
        text = str(item.message)
        kind = warning_kind(text)
        self.records.append((index, text))
        if kind not in self._counts:
            self._counts[kind] = 0
            self._first_step[kind] = index
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno,
                                   source=item.source)
        self._counts[kind] += 1
        self._last[kind] = text

    def summarize(self, steps: int, stacklevel: int = 3) -> None:
        """One NumericalWarning per kind that was raised more than once: how often, from which
        step, and the last message (its numbers are the latest)."""
        for kind, count in self._counts.items():
            if count > 1:
                warnings.warn(f"{kind}: raised {count} times in {steps} steps of this fit (shown once, "
                              f"at step {self._first_step[kind]}; all in History.warnings). The last: "
                              f"{self._last[kind]}", NumericalWarning, stacklevel=stacklevel)


def noise_floor_message(likelihood, scale: float = 1.0, units: str = "", fix: str = FLOOR_FIX) -> str | None:
    """The warning that a learned Gaussian noise ended on its floor, or None where it did not.

    ``likelihood``: a model's likelihood (only a ``Gaussian`` with a trainable noise and a floor
    above 0 can warn). A noise within ``FLOOR_MARGIN`` (5%) of the floor counts as on it.
    ``scale``: multiplies the reported noise and floor (e.g. y_scale**2 for data units, named by
    ``units``); ``fix``: the settings that lower the floor, named in the message.
    """
    if not isinstance(likelihood, Gaussian) or not likelihood.raw_noise.requires_grad:
        return None
    floor = likelihood.noise_floor
    noise = likelihood.noise.detach().reshape(-1)
    on_floor = noise <= floor * (1 + FLOOR_MARGIN)
    if floor <= 0 or not bool(on_floor.any()):
        return None
    where = f" in {int(on_floor.sum())} of {noise.numel()} batch elements" if noise.numel() > 1 else ""
    return (f"{NOISE_FLOOR_KIND}: the learned noise variance {float(noise[on_floor].min()) * scale:.3g} "
            f"ended within {FLOOR_MARGIN:.0%} of its floor {floor * scale:.3g}{units}{where}. The data "
            "may be (nearly) noise-free: the floor then keeps the mean from interpolating them and "
            f"widens the predictive intervals. To fix: lower the floor with {fix} (a floor too low "
            "for the data shows as jitter or CG warnings)")


def outside_stacklevel() -> int:
    """The ``stacklevel`` for a ``warnings.warn`` in the calling function that names the first frame
    outside the flashgp package (the user's line, however deep the library's calls went)."""
    package = os.path.dirname(os.path.abspath(__file__))
    level, frame = 1, sys._getframe(1)
    while frame.f_back is not None and os.path.abspath(frame.f_code.co_filename).startswith(package + os.sep):
        frame, level = frame.f_back, level + 1
    return level


def reemit_fit_warnings(caught: list, likelihood, y_scale) -> None:
    """Pass on the warnings ``caught`` while an estimator fitted, but for the noise-floor ones of its
    Adam run and polish: one for the end state instead, in the squared units of y (``y_scale``: y's
    scale; an array for several targets, each with its own scale: then in their standardized units)."""
    import numpy as np
    for item in caught:
        if not (issubclass(item.category, NumericalWarning) and warning_kind(str(item.message)) == NOISE_FLOOR_KIND):
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno, source=item.source)
    if any(warning_kind(str(item.message)) == NOISE_FLOOR_KIND for item in caught):
        several = np.ndim(y_scale) > 0
        fix = ("fg.MultitaskGP(..., likelihood=Gaussian(batch_shape=(t,), noise_floor=...)) built directly" if several
               else "GPRegressor(noise_floor=...)")
        message = noise_floor_message(likelihood, scale=1.0 if several else float(y_scale) ** 2,
                                      units=" (standardized targets)" if several else " (squared units of y)", fix=fix)
        if message is not None:
            warnings.warn(message, NumericalWarning, stacklevel=outside_stacklevel())
