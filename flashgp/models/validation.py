# Checks and conversions for data entering a model: shapes, dtypes, finiteness, devices.
# Each failure raises ValueError/TypeError naming the argument and what was expected.
from __future__ import annotations

import torch


def as_float_tensor(value, name: str, like: torch.Tensor | None = None) -> torch.Tensor:
    """Convert arrays/tensors to a floating tensor (ints and bools cast; dtype/device of ``like``)."""
    if isinstance(value, torch.Tensor):
        tensor = value
    else:
        try:
            tensor = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"{name}: expected a tensor or numeric array, got {type(value).__name__}") from err
    if tensor.is_complex():
        raise TypeError(f"{name}: expected real values, got {tensor.dtype}")
    if like is not None:
        if tensor.device != like.device:
            raise ValueError(f"{name}: expected a tensor on {like.device}, got one on {tensor.device}")
        tensor = tensor.to(like.dtype)
    elif not tensor.is_floating_point():
        tensor = tensor.to(torch.get_default_dtype())
    if not torch.all(torch.isfinite(tensor)):
        raise ValueError(f"{name}: expected finite values, found NaN or infinity")
    return tensor


def check_train_data(x, y) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate training inputs x (n, d) or (*b, n, d) and targets y (n,) or (*b, n)."""
    x = as_float_tensor(x, "x")
    if x.dim() == 1:
        raise ValueError(f"x: expected shape (n, d) or (b, n, d), got {tuple(x.shape)}; "
                         "use x.reshape(-1, 1) for one input dimension")
    if x.dim() < 2 or x.shape[-2] == 0 or x.shape[-1] == 0:
        raise ValueError(f"x: expected shape (n, d) or (b, n, d) with n, d >= 1, got {tuple(x.shape)}")
    y = as_float_tensor(y, "y", like=x)
    if y.shape != x.shape[:-1]:
        raise ValueError(f"y: expected shape {tuple(x.shape[:-1])} to match x, got {tuple(y.shape)}")
    return x, y


def check_test_inputs(x, train_x: torch.Tensor, name: str = "x") -> torch.Tensor:
    """Validate test inputs against the training inputs (same d, dtype, device)."""
    x = as_float_tensor(x, name, like=train_x)
    if x.dim() == 1 and train_x.shape[-1] == 1:
        x = x.unsqueeze(-1)
    if x.dim() < 2 or x.shape[-1] != train_x.shape[-1]:
        raise ValueError(f"{name}: expected shape (..., m, {train_x.shape[-1]}) like the training inputs, "
                         f"got {tuple(x.shape)}")
    if x.shape[-2] == 0:
        raise ValueError(f"{name}: expected at least one point, got shape {tuple(x.shape)}")
    return x


def check_test_batch(x: torch.Tensor, batch_shape: torch.Size, name: str = "x") -> None:
    """Test inputs (*b, m, d) must broadcast to the model's batch shape (no new batch dims)."""
    batch = x.shape[:-2]
    if len(batch) > len(batch_shape) or any(b not in (1, t) for b, t in zip(reversed(batch), reversed(batch_shape))):
        raise ValueError(f"{name}: expected batch dimensions broadcastable to the model's batch "
                         f"{tuple(batch_shape)}, got shape {tuple(x.shape)}")
