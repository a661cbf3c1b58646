# Optimizing positive hyperparameters in log space. Flashgp stores a positive hyperparameter as
# raw, with value = floor + softplus(raw); for values well above 1 softplus is nearly the identity,
# so an optimizer step changes the value by a fixed amount (Adam at lr 0.1 needs ~150 steps to take
# a lengthscale from 1 to 15). In log space a step changes it by a fixed factor instead.
from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from .kernels.constraints import Positive


class _RawFromLog(nn.Module):
    """raw = softplus^-1(exp(log_excess)), so that floor + softplus(raw) = floor + exp(log_excess)."""

    def forward(self, log_excess: torch.Tensor) -> torch.Tensor:
        excess = torch.exp(log_excess)
        # log(expm1(v)) written as v + log(1 - exp(-v)): finite, with finite gradients, for all v > 0
        return excess + torch.log(-torch.expm1(-excess))

    def right_inverse(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.log(F.softplus(raw))


def _positive_parameters(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """(module, "raw_<name>") of every trainable positive hyperparameter of ``model``."""
    found = []
    for module in model.modules():
        for name, constraint in getattr(module, "_constraints", {}).items():
            raw = module._parameters.get("raw_" + name)
            if isinstance(constraint, Positive) and raw is not None and raw.requires_grad:
                found.append((module, "raw_" + name))
    return found


@contextlib.contextmanager
def log_space(model: nn.Module):
    """While open, ``model.parameters()`` hold log(value - floor) of every positive hyperparameter
    (lengthscales, output scales, noise, ...) in place of the raw softplus inputs; the values the
    model computes with are unchanged. The ``nn.Parameter`` objects stay the same: inside the
    block they hold the log values (make optimizers there), after it the raw values reached.
    """
    done = []
    try:
        for module, name in _positive_parameters(model):
            parametrize.register_parametrization(module, name, _RawFromLog())
            done.append((module, name))
        yield model
    finally:
        for module, name in reversed(done):
            parametrize.remove_parametrizations(module, name, leave_parametrized=True)
