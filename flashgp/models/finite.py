# Non-finite values in a model: which part caused them (a NaN or infinite parameter, FixedNoise
# variances edited to non-positive values, a kernel overflowing the dtype) and what to do.
"""Attribution of NaN and infinity.

The engines and posteriors see only matrices (a NaN noise reaches the Cholesky engine as a
kernel matrix with NaN entries; a float32 ``Polynomial(power=5)`` on inputs up to 1e4 as NaN
posterior variances); the model knows its parts, so it diagnoses here:
only after something failed (no cost on the success path), except ``check_kernel_values``, which
``ExactGP.set_train_data`` runs once on the training inputs (k(x_i, x_i), O(n)).

For a PSD kernel |k(x, x')| <= sqrt(k(x, x) k(x', x')), so finite diagonal values mean finite
matrix entries: checking k(x_i, x_i) is enough to rule out overflow of K.
"""
from __future__ import annotations

import torch

from ..errors import NonFiniteError  # noqa: F401 (defined with the other errors; re-exported here)

FIX_PARAMETERS = ("NaN or infinite hyperparameters come from a diverged optimizer step (lower the "
                  "learning rate, or fit with optimizer='lbfgs') or a damaged file; set them again "
                  "(e.g. model.likelihood.noise = 0.1) or rebuild the model")


def describe_kernel(kernel) -> str:
    """A short name of a kernel: ``Scale(Polynomial(power=5))``, ``RBF + Periodic``."""
    from ..kernels import Product, Scale, Sum
    if isinstance(kernel, Scale):
        return f"Scale({describe_kernel(kernel.base)})"
    if isinstance(kernel, (Sum, Product)):
        return (" + " if isinstance(kernel, Sum) else " * ").join(describe_kernel(k) for k in kernel.kernels)
    settings = [f"{key}={getattr(kernel, key)!r}" for key in ("power", "nu") if hasattr(kernel, key)]
    return f"{type(kernel).__name__}({', '.join(settings)})"


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def nonfinite_parameters(model) -> list[str]:
    """'name = [values]' for every parameter and buffer of ``model`` (training data excluded: it is
    checked where it enters) holding a NaN or infinity; a raw_<name> says which value it stores."""
    found = []
    tensors = list(model.named_parameters()) + [(n, b) for n, b in model.named_buffers()
                                                 if n not in ("train_x", "train_y")]
    for name, tensor in tensors:
        if not tensor.is_floating_point() or bool(torch.isfinite(tensor).all()):
            continue
        values = tensor.detach().reshape(-1)[:4].tolist()
        shown = ", ".join(f"{v:.3g}" for v in values) + (", ..." if tensor.numel() > 4 else "")
        prefix, _, leaf = name.rpartition(".")
        stores = f" (stores {prefix + '.' if prefix else ''}{leaf[4:]})" if leaf.startswith("raw_") else ""
        found.append(f"{name} = [{shown}]{stores}")
    return found


def parameters_finite(model) -> bool:
    """Whether every floating parameter of ``model`` is finite (one device sync)."""
    flags = [torch.isfinite(p).all() for p in model.parameters() if p.is_floating_point()]
    return not flags or bool(torch.stack(flags).all())


def check_noise_values(noise: torch.Tensor, name: str = "likelihood.noise") -> None:
    """NonFiniteError unless every training noise variance ``(*batch, n)`` is finite and >= 0 (0 is
    a noise-free ``Gaussian(noise_floor=0)`` whose softplus underflowed: K_hat is then K, which
    jitter handles; negative ones would make predictive variances negative)."""
    bad = ~torch.isfinite(noise) | (noise < 0)
    if bool(bad.any()):
        raise NonFiniteError(f"{name}: expected finite non-negative noise variances, found {int(bad.sum())} of "
                             f"{noise.numel()} that are not (min {float(noise.min()):.3g}); FixedNoise variances "
                             "edited in place or through .data are checked only when used. To fix: assign "
                             "valid variances (model.likelihood.noise = values)")


def zero_parameters(model) -> list[str]:
    """'name = 0' for every positive hyperparameter whose value underflowed to exactly 0 (softplus
    of a raw value below about -745 in float64, -104 in float32): a lengthscale of 0 makes
    k(x, x) = 0 / 0 = NaN."""
    found = []
    for prefix, module in model.named_modules():
        for name, constraint in getattr(module, "_constraints", {}).items():
            value = getattr(module, name)
            if constraint.lower == 0 and name != "noise" and bool((value == 0).any()):
                raw = getattr(module, "raw_" + name).detach().reshape(-1)
                full = f"{prefix}.{name}" if prefix else name
                found.append(f"{full} = 0 (stored as raw_{name} = {float(raw.min()):.3g}, where softplus underflows)")
    return found


def kernel_overflow(kernel, x: torch.Tensor, where: str) -> str | None:
    """Why k(x, x) (x ``(*batch, m, d)``) is not finite in the dtype of x, or None where it is."""
    with torch.no_grad():
        diag = kernel.diag(x)
    bad = ~torch.isfinite(diag)
    if not bool(bad.any()):
        return None
    dtype = dtype_name(x.dtype)
    if not bool(torch.isinf(diag).any()):  # NaN without infinity: 0 / 0 or inf - inf inside the kernel
        return (f"the kernel {describe_kernel(kernel)} gives NaN at the {where} (k(x, x) at {int(bad.sum())} of "
                f"{bad.numel()} points) at finite parameters; check its parameters for values far from the "
                "data's scale (a lengthscale or period that underflowed to 0)")
    hint = "" if x.dtype == torch.float64 else ", use float64 data"
    return (f"the kernel {describe_kernel(kernel)} overflows {dtype} at the {where}: k(x, x) is not finite at "
            f"{int(bad.sum())} of {bad.numel()} points (the inputs reach |x| = {float(x.abs().max()):.3g}; "
            f"{dtype} holds values up to {torch.finfo(x.dtype).max:.3g}). To fix: scale the inputs (e.g. "
            f"standardize the columns){hint}, or use a bounded (stationary) kernel")


def check_kernel_values(kernel, x: torch.Tensor, where: str = "training inputs") -> None:
    """NonFiniteError naming the kernel, the dtype and the fix when k(x_i, x_i) overflows."""
    problem = kernel_overflow(kernel, x, where)
    if problem is not None:
        raise NonFiniteError(f"kernel: {problem}")


def diagnose(model, x: torch.Tensor | None = None) -> str | None:
    """The cause of non-finite values in ``model``'s solves or predictions (test inputs ``x``
    ``(*batch, m, d)``, if any): non-finite parameters, invalid FixedNoise variances, or kernel
    overflow at the test or training inputs; None when none of these is found."""
    params = nonfinite_parameters(model)
    if params:
        return f"non-finite parameters: {'; '.join(params)}. {FIX_PARAMETERS}"
    zeros = zero_parameters(model)
    if zeros:
        return (f"parameters that underflowed to 0: {'; '.join(zeros)}. Set them again (e.g. "
                "model.kernel.base.lengthscale = 1.0) or lower the learning rate")
    noise = getattr(model.likelihood, "noise", None)
    if isinstance(noise, torch.Tensor):
        try:
            check_noise_values(noise.detach())
        except NonFiniteError as err:
            return str(err)
    for inputs, where in ((x, "test inputs"), (model.train_x, "training inputs")):
        problem = None if inputs is None else kernel_overflow(model.kernel, inputs, where)
        if problem is not None:
            return problem
    return None
