# One optimizer for variational GPs: natural-gradient steps for the natural parameters of q(u),
# Adam for everything else (Salimbeni et al. 2018's hybrid), in one torch.optim state.
from __future__ import annotations

import torch


class NaturalAdam(torch.optim.Adam):
    """Adam, except for parameter groups marked ``natural=True``: those take plain steps
    theta <- theta - lr * scale * grad, which are natural-gradient steps when the parameters are
    a ``NaturalVariational``'s (their ``.grad`` holds the gradient with respect to the
    expectation parameters). ``scale`` is the number of training points when the loss is per
    point, so that lr = 1 is the full natural step (exact, for a Gaussian likelihood and the full
    batch, in one step).

    Args:
        params: parameter groups (dicts); a group with ``natural=True`` needs ``lr`` and ``scale``.
        lr: Adam's learning rate for the other groups.

    The state dict is Adam's (the natural groups keep no state), so checkpoints store and
    restore it like Adam's.
    """

    def __init__(self, params, lr: float = 1e-3, **adam_args):
        groups = [dict(group) for group in params]
        for group in groups:
            group.setdefault("natural", False)
            if group["natural"] and "scale" not in group:
                raise ValueError("params: a natural-gradient group needs 'scale' (the number of data points)")
        super().__init__(groups, lr=lr, **adam_args)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if not group["natural"]:
                continue
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["lr"] * group["scale"])
        natural = [(p, p.grad) for g in self.param_groups if g["natural"] for p in g["params"]]
        for p, _ in natural:  # Adam skips parameters without a gradient
            p.grad = None
        try:
            super().step()
        finally:
            for p, grad in natural:
                p.grad = grad
        return loss
