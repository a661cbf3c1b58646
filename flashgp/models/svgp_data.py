# Argument checks of SVGP: the number of latent functions, the inducing inputs (or their number
# and the data to choose them from) and each training batch.
from __future__ import annotations

import torch

from .validation import as_float_tensor, check_train_data


def check_outputs(num_outputs, likelihood) -> int:
    """The number of latent functions: ``num_outputs``, or the likelihood's ``num_latents``
    (C for ``Softmax(C)``, else 1); a likelihood of C latents needs num_outputs == C."""
    latents = int(getattr(likelihood, "num_latents", 1))
    if num_outputs is None:
        return latents
    if isinstance(num_outputs, bool) or not isinstance(num_outputs, int) or num_outputs < 1:
        raise ValueError(f"num_outputs: expected a positive int, got {num_outputs!r}")
    if latents > 1 and num_outputs != latents:
        raise ValueError(f"num_outputs: {type(likelihood).__name__} takes {latents} latent functions, got "
                         f"num_outputs={num_outputs}")
    return num_outputs


def check_inducing_inputs(inducing, x, y, num_outputs: int):
    """(Z or None, M or None, (x, y) or None, reference tensor for dtype and device).

    ``inducing``: a tensor Z ``(M, d)`` or ``(num_outputs, M, d)`` (d = 1 may be (M,)), or a count
    M, which needs x. x ``(n, d)`` and y (optional; ``(n,)`` or ``(n, num_outputs)``) are checked
    like training data."""
    data = None
    if x is not None:
        x = as_float_tensor(x, "x")
        x, _ = check_train_data(x, torch.zeros(x.shape[0] if x.dim() else 0, dtype=x.dtype, device=x.device))
        if y is not None:
            y = as_float_tensor(y, "y", like=x)
            expected = (x.shape[0], num_outputs) if y.dim() == 2 else (x.shape[0],)
            if tuple(y.shape) != expected or not bool(torch.isfinite(y).all()):
                raise ValueError(f"y: expected finite targets of shape {expected} for x {tuple(x.shape)}, got "
                                 f"{tuple(y.shape)}")
            y = y.transpose(0, 1) if y.dim() == 2 else y  # (num_outputs, n), as the latents
        data = (x, y)
    elif y is not None:
        raise ValueError("y: given without x (both are used to choose initial values)")
    if isinstance(inducing, int) and not isinstance(inducing, bool):
        if inducing < 1:
            raise ValueError(f"inducing: expected a positive number of inducing points, got {inducing}")
        if data is None:
            raise ValueError("inducing: a number of inducing points needs x (the inputs to choose them from); "
                             "or pass the inducing inputs Z (M, d)")
        return None, inducing, data, data[0]
    if not isinstance(inducing, torch.Tensor):
        raise TypeError(f"inducing: expected a number of inducing points or a tensor (M, d), got "
                        f"{type(inducing).__name__}")
    like = data[0] if data is not None else None
    z = as_float_tensor(inducing.detach(), "inducing", like=like)
    d = like.shape[-1] if like is not None else None
    if z.dim() == 1 and d in (None, 1):
        z = z.unsqueeze(-1)
    if z.dim() not in (2, 3) or z.shape[-2] < 1 or (d is not None and z.shape[-1] != d) or (
            z.dim() == 3 and z.shape[0] != num_outputs):
        raise ValueError(f"inducing: expected inducing inputs of shape (M, d) or ({num_outputs}, M, d)"
                         f"{'' if d is None else f' with d = {d}'}, got {tuple(inducing.shape)}")
    if not bool(torch.isfinite(z).all()):
        raise ValueError("inducing: the inducing inputs contain NaN or infinite values")
    return z, None, data, z


def check_batch(x, y, model) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch on the model's device and dtype: x ``(b, d)`` (d = 1 may be (b,)) and y
    ``(b,)``, or ``(b, num_outputs)`` for independent outputs, returned as ``(num_outputs, b)``."""
    x = torch.as_tensor(x).to(device=model.device, dtype=model.dtype, non_blocking=True)
    y = torch.as_tensor(y).to(device=model.device, dtype=model.dtype, non_blocking=True)
    d = model.input_dims
    if x.dim() == 1 and d == 1:
        x = x.unsqueeze(-1)
    if x.dim() != 2 or x.shape[-1] != d:
        raise ValueError(f"x: expected a batch of inputs (b, {d}), got {tuple(x.shape)}")
    b = x.shape[0]
    independent = model.num_outputs > 1 and getattr(model.likelihood, "num_latents", 1) == 1
    expected = (b, model.num_outputs) if independent else (b,)
    if tuple(y.shape) != expected:
        raise ValueError(f"y: expected targets of shape {expected} for {b} inputs, got {tuple(y.shape)}")
    if not bool(torch.isfinite(x).all() & torch.isfinite(y).all()):  # one device sync
        raise ValueError("x, y: the batch contains NaN or infinite values")
    return x, (y.transpose(0, 1) if independent else y)
