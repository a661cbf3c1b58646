# Deep kernel learning (Wilson, Hu, Salakhutdinov and Xing 2016): a base kernel on the outputs of a
# network, k(x, x') = base(g(x), g(x')), trained jointly with the GP's hyperparameters.
"""``Warped(base, feature_extractor)``: the kernel base(g(x), g(x')) for a network g.

The name says what it is for any g: the inputs are warped (mapped) before the base kernel sees
them; with a neural network g this is the deep kernel of Wilson et al. (2016).

How the network trains:

* exact GP, CG path (``fg.CG``): ``operator(x1, x2, **options)`` evaluates the features once and
  returns the base kernel's operator on them (a ``KernelOperator`` on features that require
  grad). The BBMM engine's bilinear gradient gives d mll / d features next to the base kernel's
  hyperparameter gradients, and autograd carries it into the network: dense, blocked and fused
  backends all serve the base kernel as usual.
* exact GP, Cholesky path (``fg.Cholesky``): the engine calls the kernel on float64 inputs;
  ``evaluate`` applies g then the base kernel, and autograd goes through both.
* SGPR, SVGP and predictions: their kernel evaluations go through ``evaluate`` too (the network
  gets its gradients by autograd). The inducing points live in input space: k(z, x) =
  base(g(z), g(x)).

The network runs in its own parameters' dtype (a model casts it to the data's dtype; the Cholesky
path's float64 inputs are cast to it and its features back to float64).
"""
from __future__ import annotations

import torch
from torch import nn

from .base import Kernel, _check_inputs


def _structured(kernel: Kernel) -> str | None:
    """The name of a kernel in ``kernel`` that supplies its own operator (Interpolated, Multitask,
    LMC, another Warped), or None."""
    for module in kernel.modules():
        if callable(getattr(module, "operator", None)):
            return type(module).__name__
    return None


class Warped(Kernel):
    """k(x, x') = base(g(x), g(x')), g = ``feature_extractor`` (deep kernel learning).

    Args:
        base: a flashgp kernel on the features, e.g. ``Scale(RBF(ard_dims=D))`` for D features.
            Kernels with their own structured operator (Interpolated, Multitask, LMC) are refused.
        feature_extractor: an ``nn.Module`` mapping inputs ``(..., n, d)`` to features
            ``(..., n, D)`` row by row (a row's features may depend on that row only, as for an
            MLP). Its parameters are the model's parameters: ``fg.fit`` trains them with the
            hyperparameters. ``flashgp.kernels.MLP`` can be saved in model files; other networks
            once registered (``flashgp.serialize.register_feature_extractor``).

    The base kernel's unset lengthscales are chosen from the spread of the features of the
    training inputs at the network's initial weights (``fg.init_from_data``).
    See the module docstring for how each engine trains the network.
    """

    def __init__(self, base: Kernel, feature_extractor: nn.Module):
        if not isinstance(base, Kernel):
            raise TypeError(f"base: expected a flashgp kernel, got {type(base).__name__}")
        if isinstance(feature_extractor, Kernel) or not isinstance(feature_extractor, nn.Module):
            raise TypeError(f"feature_extractor: expected a torch.nn.Module mapping inputs (..., n, d) to features "
                            f"(..., n, D) (e.g. flashgp.kernels.MLP(d, hidden=(64, 32), out_dims=2)), got "
                            f"{type(feature_extractor).__name__}")
        structured = _structured(base)
        if structured is not None:
            raise TypeError(f"base: {structured} supplies its own structured operator, which Warped cannot put on "
                            f"learned features (its inputs may not require grad); use a plain kernel such as "
                            f"Scale(RBF(ard_dims=D))")
        super().__init__(batch_shape=base.batch_shape)
        self.base = base
        self.feature_extractor = feature_extractor

    @property
    def is_stationary(self) -> bool:
        return False

    # ----- the features ----------------------------------------------------------------------
    def _network_dtype(self, dtype: torch.dtype) -> torch.dtype:
        for p in self.feature_extractor.parameters():
            if p.is_floating_point():
                return p.dtype
        return dtype

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """g(x): ``(..., n, D)`` for x ``(..., n, d)``, in the dtype of x (computed in the network's)."""
        out = self.feature_extractor(x.to(self._network_dtype(x.dtype)))
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"feature_extractor: expected it to return a tensor of features (..., n, D), got "
                            f"{type(out).__name__}")
        if out.dim() != x.dim() or out.shape[:-1] != x.shape[:-1] or not out.is_floating_point():
            raise ValueError(f"feature_extractor: expected floating point features of shape (..., n, D) with the "
                             f"leading shape of the inputs {tuple(x.shape[:-1])}, got {tuple(out.shape)} "
                             f"({out.dtype}); the network must map each row of x (n, d) to one row of features")
        return out.to(x.dtype)

    def feature_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The inputs the base kernel sees for inputs x (``fg.init_from_data`` sets the base
        kernel's lengthscales from their spread)."""
        return self.features(x)

    # ----- evaluation --------------------------------------------------------------------------
    def evaluate(self, x1, x2, diag):
        f1 = self.features(x1)
        f2 = f1 if x2 is x1 else self.features(x2)
        return self.base(f1, f2, diag=diag)

    def operator(self, x1: torch.Tensor, x2: torch.Tensor | None = None, **options):
        """The base kernel's operator on g(x1), g(x2) (x2 None: the symmetric K(g(x1), g(x1))),
        ``options`` (backend, precision, memory_budget, block_rows) passed on. With grad enabled
        the features carry the network's graph: the operator's ``bilinear_grad`` gives their
        gradient and autograd takes it into the network (and into x1, x2 where they require grad:
        posteriors differentiable in the test inputs)."""
        from ..operators import kernel_operator  # operators sit below kernels in the layers
        _check_inputs(x1, "x1")
        if x2 is not None:
            _check_inputs(x2, "x2")
            if x2.shape[-1] != x1.shape[-1]:
                raise ValueError(f"x2: expected {x1.shape[-1]} columns like x1, got {x2.shape[-1]}")
        f1 = self.features(x1)
        f2 = None if x2 is None else self.features(x2)
        return kernel_operator(self.base, f1, f2, **options)
