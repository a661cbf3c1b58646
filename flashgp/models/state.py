# What a model's predictions were computed from, to tell when they are stale: the parts
# (submodules) by identity, every parameter and buffer by value, the training data by version.
"""Staleness of cached predictions.

A prediction cache (``models.prediction``) holds solves against the model's K_hat; it may be
reused only while nothing it was computed from has changed. ``StateSnapshot`` records that state
and ``matches`` compares the model with it at each posterior call:

* the submodules (kernel, likelihood, mean and theirs), by identity: a replaced part is seen even
  when it holds no tensors (``model.mean = Zero()``);
* every parameter and buffer except the training data, by value: a copy is kept (these are
  hyperparameters, plus FixedNoise's n variances) and compared elementwise, so any change is
  seen however it was made: assignment, an in-place edit under ``torch.no_grad()`` or through
  ``.data`` (which does not bump the version counter), ``load_state_dict``, a dtype or device
  cast. A NaN never equals itself: a model with a NaN parameter never matches, and its
  predictions are rebuilt (and refused with the parameter named) at every call;
* ``train_x`` and ``train_y``, without a copy (they can be large): by identity, storage and the
  version counter. ``set_train_data``, assignment, in-place edits and ``load_state_dict`` are
  seen; an in-place edit through ``.data`` (``model.train_y.data[0] = 1``) bypasses the version
  counter and is not. The model owns its data (``validation.owned``), so edits of the caller's
  arrays cannot reach it. ``model.train()`` drops the cache (as GPyTorch's does).

Not seen: non-tensor settings of a part changed after a prediction (``Polynomial.power``);
predictions then use the cache until ``model.train()`` or ``set_train_data``.

Cost per posterior call: one walk over the submodules and one ``torch.equal`` per parameter and
buffer: 25 us for ``Scale(RBF(ard_dims=3))`` with a Gaussian likelihood and a constant mean on a
shared 2-core CPU, as much as the version-counter key it replaced (24 us).
"""
from __future__ import annotations

import torch


def _walk(model) -> tuple[list, list]:
    """(the submodules of ``model`` (itself excluded), its parameters and buffers other than the
    training data), each in a fixed order."""
    modules, tensors = [], []
    for module in model.modules():
        if module is not model:
            modules.append(module)
        for store in (module._parameters, module._buffers):
            for name, tensor in store.items():
                if tensor is not None and not (module is model and name in model.data_buffers):
                    tensors.append(tensor)
    return modules, tensors


def _data_key(tensor: torch.Tensor) -> tuple:
    return (tensor, tensor._version, tensor.untyped_storage().data_ptr(), tensor.shape, tensor.dtype,
            tensor.device)


class StateSnapshot:
    """The state of ``model`` (a ``GPModel`` with ``train_x``, ``train_y`` buffers) now; see the
    module docstring for what is compared and how. Holds references to the model's submodules and
    tensors (so identities stay unique) and a copy of every parameter and non-data buffer."""

    def __init__(self, model):
        self.modules, self.tensors = _walk(model)
        self.values = [t.detach().clone() for t in self.tensors]
        self.names = tuple(model.data_buffers)
        self.data = [_data_key(getattr(model, name)) for name in self.names]

    def matches(self, model) -> bool:
        """Whether ``model`` is still in the recorded state."""
        for (ref, version, pointer, shape, dtype, device), name in zip(self.data, self.names):
            now = getattr(model, name)
            if (now is not ref or now._version != version or now.untyped_storage().data_ptr() != pointer
                    or now.shape != shape or now.dtype != dtype or now.device != device):
                return False
        modules, tensors = _walk(model)
        if len(modules) != len(self.modules) or len(tensors) != len(self.tensors):
            return False
        if any(a is not b for a, b in zip(modules, self.modules)):
            return False
        for now, ref, value in zip(tensors, self.tensors, self.values):
            if (now is not ref or now.shape != value.shape or now.dtype != value.dtype
                    or now.device != value.device or not torch.equal(now.detach(), value)):
                return False
        return True
