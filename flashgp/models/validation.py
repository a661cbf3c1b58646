# Checks and conversions for data entering a model: shapes, dtypes, finiteness, magnitudes, devices.
# Each failure raises ValueError/TypeError naming the argument and what was expected.
from __future__ import annotations

import numpy as np
import torch

from ..shapes import broadcast_shapes

HALF_DTYPES = (torch.float16, torch.bfloat16)


def _to_tensor(value, name: str) -> torch.Tensor:
    """A tensor from a tensor, numpy array, pandas object or nested sequence of numbers."""
    if isinstance(value, torch.Tensor):
        return value
    if value is None or isinstance(value, (str, bytes)):
        raise TypeError(f"{name}: expected a tensor or numeric array, got {type(value).__name__}")
    if hasattr(value, "to_numpy") and hasattr(value, "columns"):  # a pandas DataFrame
        text = [str(col) for col, dtype in value.dtypes.items() if getattr(dtype, "kind", "O") not in "biuf"]
        if text:
            raise TypeError(f"{name}: expected numeric columns, got non-numeric column(s) "
                            f"{', '.join(map(repr, text[:5]))}; encode them as numbers first")
    if hasattr(value, "to_numpy"):  # pandas DataFrame or Series
        value = value.to_numpy()
    if not isinstance(value, np.ndarray):
        try:  # nested lists of Python floats: numpy keeps their float64 precision
            value = np.asarray(value)
        except (TypeError, ValueError):
            pass  # ragged or foreign: torch.as_tensor below reports it
    if isinstance(value, np.ndarray) and value.dtype == object:
        try:  # numbers stored as Python objects: cast as scikit-learn does
            value = value.astype(np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"{name}: expected a tensor or numeric array, got an object array "
                            "holding non-numbers or missing values") from None
    if isinstance(value, np.ndarray) and not value.flags.writeable:
        value = value.copy()  # torch cannot share read-only memory
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as err:
        dtype = f" of dtype {value.dtype}" if isinstance(value, np.ndarray) else ""
        raise TypeError(f"{name}: expected a tensor or numeric array, got {type(value).__name__}{dtype}") from err


def as_float_tensor(value, name: str, like: torch.Tensor | None = None, allow_nan: bool = False) -> torch.Tensor:
    """Convert tensors, numpy arrays, pandas objects and nested lists to a real floating tensor.

    With ``like`` the tensor takes its dtype and must be on its device. Without it: ints and bools
    become the default dtype, float16/bfloat16 become float32, and Python floats (via numpy) float64.
    Values must be finite; ``allow_nan``: NaN is kept (a missing value), infinity still refused.
    """
    tensor = _to_tensor(value, name)
    if tensor.layout != torch.strided:
        raise TypeError(f"{name}: expected a dense tensor, got layout {tensor.layout}; use .to_dense()")
    if tensor.is_complex():
        raise TypeError(f"{name}: expected real values, got {tensor.dtype}")
    if tensor.device.type == "meta":
        raise ValueError(f"{name}: expected a tensor holding data, got one on the 'meta' device")
    if like is not None and tensor.device != like.device:
        raise ValueError(f"{name}: expected a tensor on {like.device}, got one on {tensor.device}")
    finite = torch.isfinite(tensor) | torch.isnan(tensor) if allow_nan else torch.isfinite(tensor)
    if not torch.all(finite):
        raise ValueError(f"{name}: expected finite values, found {'infinity' if allow_nan else 'NaN or infinity'}")
    if like is not None:
        tensor = _cast(tensor, like.dtype, name)
    elif not tensor.is_floating_point():
        tensor = tensor.to(torch.get_default_dtype())
    elif tensor.dtype in HALF_DTYPES:  # too coarse for kernel matrices; float32 holds them exactly
        tensor = tensor.to(torch.float32)
    return tensor


def _cast(tensor: torch.Tensor, dtype: torch.dtype, name: str) -> torch.Tensor:
    """Finite ``tensor`` in the model's ``dtype``; ValueError when a value overflows it (a finite
    float64 input beyond what a float32 model holds), naming the largest value and the dtype."""
    out = tensor.to(dtype)
    if out.dtype != tensor.dtype and out.is_floating_point() and bool(torch.isinf(out).any()):
        largest = float(tensor.nan_to_num(0.0).abs().max())
        raise ValueError(f"{name}: values up to {largest:.3g} overflow the model's "
                         f"{str(dtype).replace('torch.', '')} (largest {torch.finfo(dtype).max:.3g}); "
                         "rescale them (e.g. standardize the columns) or build the model from float64 data")
    return out


def owned(tensor: torch.Tensor, given) -> torch.Tensor:
    """``tensor`` (converted from the caller's ``given``), copied when it may share memory with
    ``given``: a model keeps its own training data, so later edits of the caller's arrays (in
    place, or through a numpy view of a tensor) cannot change it. The cost is one copy of the
    data when the conversion did not already make one."""
    if isinstance(given, torch.Tensor):
        shared = (tensor.device == given.device
                  and tensor.untyped_storage().data_ptr() == given.untyped_storage().data_ptr())
    elif isinstance(given, (list, tuple)) or tensor.device.type != "cpu":
        shared = False  # numpy made a new array from the sequence; numpy data is never on a GPU
    else:  # numpy arrays, pandas objects and anything else numpy can view
        try:
            shared = bool(np.may_share_memory(tensor.detach().numpy(), np.asarray(given)))
        except (TypeError, ValueError, RuntimeError):
            shared = True
    return tensor.clone(memory_format=torch.contiguous_format) if shared else tensor


def _check_magnitude(tensor: torch.Tensor, name: str, bound: float, what: str) -> None:
    """Values must stay below ``bound`` in magnitude (their squares must not overflow)."""
    if tensor.numel() == 0:
        return
    largest = float(tensor.detach().abs().max())
    if largest >= bound:
        raise ValueError(f"{name}: values up to {largest:.3g} overflow {what} in {tensor.dtype} "
                         f"(expected magnitudes below {bound:.3g}); rescale or standardize them")


def check_train_data(x, y, like: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate training inputs x (n, d), ``(*b, n, d)`` or (n,) and targets y (n,) or ``(*b, n)``.

    x of shape (n,) is n points of one input dimension, returned as (n, 1) (as test inputs of a
    model with d = 1 are read). ``like``: the current training inputs of a model, whose dtype
    and device new data must take (and, for x of shape (n,), its d = 1).

    The tensors returned never share memory with the caller's x and y (``owned``): a model owns
    its training data, at the cost of one copy of x and y.
    """
    given_x, given_y = x, y
    x = as_float_tensor(x, "x", like=like)
    if x.dim() == 1:
        if like is not None and like.shape[-1] != 1:
            raise ValueError(f"x: shape {tuple(x.shape)} reads as {x.shape[0]} points of one input "
                             f"dimension, but the model has {like.shape[-1]}; expected (n, {like.shape[-1]})")
        x = x.unsqueeze(-1)
    if x.dim() < 2 or x.shape[-2] == 0 or x.shape[-1] == 0:
        raise ValueError(f"x: expected shape (n, d) or (b, n, d) with n, d >= 1, got {tuple(x.shape)}")
    y = as_float_tensor(y, "y", like=x)
    if y.shape != x.shape[:-1]:
        raise ValueError(f"y: expected shape {tuple(x.shape[:-1])} to match x, got {tuple(y.shape)}")
    fmax = torch.finfo(x.dtype).max
    _check_magnitude(x, "x", (fmax / x.shape[-1]) ** 0.5 / 4, "squared distances")
    _check_magnitude(y, "y", (fmax / x.shape[-2]) ** 0.5, "squared residuals")
    return owned(x, given_x), owned(y, given_y)


def check_test_inputs(x, train_x: torch.Tensor, name: str = "x") -> torch.Tensor:
    """Validate test inputs against the training inputs (same d, dtype, device). The tensor
    returned is the model's own (``owned``): lazy covariances built on it cannot change when the
    caller edits its array later."""
    given = x
    x = as_float_tensor(x, name, like=train_x)
    if x.dim() == 1 and train_x.shape[-1] == 1:
        x = x.unsqueeze(-1)
    if x.dim() < 2 or x.shape[-1] != train_x.shape[-1]:
        raise ValueError(f"{name}: expected shape (..., m, {train_x.shape[-1]}) like the training inputs, "
                         f"got {tuple(x.shape)}")
    if x.shape[-2] == 0:
        raise ValueError(f"{name}: expected at least one point, got shape {tuple(x.shape)}")
    fmax = torch.finfo(x.dtype).max
    _check_magnitude(x, name, (fmax / x.shape[-1]) ** 0.5 / 4, "squared distances")
    return owned(x, given)


def check_test_batch(x: torch.Tensor, batch_shape: torch.Size, name: str = "x") -> None:
    """Test inputs ``(*b, m, d)`` must broadcast to the model's batch shape (no new batch dims)."""
    batch = x.shape[:-2]
    if len(batch) > len(batch_shape) or any(b not in (1, t) for b, t in zip(reversed(batch), reversed(batch_shape))):
        raise ValueError(f"{name}: expected batch dimensions broadcastable to the model's batch "
                         f"{tuple(batch_shape)}, got shape {tuple(x.shape)}")


def check_batch_shapes(x: torch.Tensor, parts: dict) -> None:
    """The batch shapes of the data x ``(*b, n, d)`` and of each model part must broadcast together.

    ``parts``: name -> module with a ``batch_shape`` (kernel, likelihood, mean).
    """
    shape, seen = x.shape[:-2], f"x {tuple(x.shape)}"
    for name, part in parts.items():
        part_shape = torch.Size(part.batch_shape)
        try:
            shape = broadcast_shapes(shape, part_shape)
        except ValueError:
            raise ValueError(f"{name}: batch_shape {tuple(part_shape)} does not broadcast with the batch "
                             f"shape {tuple(shape)} of {seen}") from None
        seen += f" and {name}"


def check_columns(x: torch.Tensor, parts: dict) -> None:
    """Each model part (name -> function of x) must accept the columns of x ``(*b, n, d)``.

    Evaluated on one row, so a wrong ``ard_dims``, ``active_dims`` or ``Linear(d)`` mean is
    reported where the data enters instead of at the first training step.
    """
    with torch.no_grad():
        row = x[..., :1, :]
        for name, part in parts.items():
            try:
                part(row)
            except ValueError as err:
                raise ValueError(f"{name}: does not accept x with {x.shape[-1]} column(s): {err}") from None


def check_device(device, expected: str) -> torch.device:
    """``device`` (a torch.device or its name) as a torch.device that can hold data here.

    ``expected`` words the accepted values for the error when ``device`` is not a device at all;
    CUDA without a CUDA runtime and the data-less 'meta' device are refused (ValueError).
    """
    try:
        device = torch.device(device)
    except (TypeError, RuntimeError) as err:
        raise ValueError(f"device: expected {expected}, got {device!r}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' was asked for but CUDA is not available")
    if device.type == "meta":
        raise ValueError("device: expected a device that holds data (e.g. 'cpu', 'cuda'), got 'meta'")
    return device
