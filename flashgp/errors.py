# Warning and error classes shared by the whole library.
# NumericalWarning flags recoverable numerical trouble; NotPSDError flags a matrix that is not PSD.
from __future__ import annotations


class NumericalWarning(RuntimeWarning):
    """Numerical trouble that was recovered from (jitter added, eigenvalues clamped, no convergence)."""


class NotPSDError(ValueError):
    """A matrix expected to be positive (semi-)definite is not, even after adding jitter."""
