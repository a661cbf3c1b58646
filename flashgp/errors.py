# Warning and error classes shared by the whole library.
# NumericalWarning flags recoverable numerical trouble; NotPSDError flags a matrix that is not PSD.
from __future__ import annotations


class NumericalWarning(RuntimeWarning):
    """Numerical trouble that was recovered from (jitter added, eigenvalues clamped, no convergence)."""


class NotPSDError(ValueError):
    """A matrix expected to be positive (semi-)definite is not, even after adding jitter."""


class NonFiniteError(NotPSDError):
    """Values a model needs finite are not: a NaN or infinite hyperparameter, FixedNoise variances
    that are not finite and positive, or a kernel whose values overflow the model's dtype. The
    message names the part, the dtype and the fix. A ``NotPSDError`` (a ValueError), so
    ``fg.fit`` stops on it (Adam) or backs off from the trial point (L-BFGS), as it does for a
    K_hat that cannot be factored."""


class ModelFileError(ValueError):
    """A file that cannot be loaded as a flashgp model: foreign, damaged, unsafe or too new.

    Attributes: ``path`` (the file) and ``problem`` (what is wrong with it).
    """

    def __init__(self, path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = path, problem

    def __reduce__(self):
        return type(self), (self.path, self.problem)


class FitInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``fg.fit(..., checkpoint=PATH)``, raised after the checkpoint was written.

    A KeyboardInterrupt, so code that does not know it still stops. Attributes: ``step`` (the
    completed steps the checkpoint holds), ``checkpoint`` (its path) and ``history`` (up to ``step``).
    """

    def __init__(self, step: int, checkpoint, history):
        super().__init__(f"fit interrupted at step {step}; checkpoint saved to {checkpoint}")
        self.step, self.checkpoint, self.history = step, checkpoint, history

    def __reduce__(self):
        return type(self), (self.step, self.checkpoint, self.history)
