# Built-in feature extractors for deep kernels (``Warped``): networks that a model file can describe
# by a few JSON arguments, so that loading one never runs code from the file.
"""``MLP(in_dims, hidden, out_dims, activation)``: a fully connected network of plain torch layers.

Its structure is four JSON values (``config_args``); its weights travel with the model's state
dict. Other networks can be saved once registered with
``flashgp.serialize.register_feature_extractor``.
"""
from __future__ import annotations

import numbers
from typing import Sequence

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU}


def _positive_int(value, what: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{what}: expected a positive int, got {value!r}")
    return int(value)


class MLP(nn.Module):
    """x ``(..., n, in_dims)`` -> features ``(..., n, out_dims)`` through ``len(hidden)`` hidden
    layers: Linear, activation, ..., Linear (no activation after the last layer).

    Args:
        in_dims: input columns d.
        hidden: widths of the hidden layers (default (64, 32); () for a single linear map).
        out_dims: feature columns D (default 2, as in Wilson et al. 2016's experiments).
        activation: "relu" (default), "tanh" or "silu".

    The weights start at torch's default initialisation of ``nn.Linear`` (seed torch's RNG for
    a reproducible start).
    """

    def __init__(self, in_dims: int, hidden: Sequence[int] = (64, 32), out_dims: int = 2,
                 activation: str = "relu"):
        super().__init__()
        in_dims = _positive_int(in_dims, "in_dims")
        out_dims = _positive_int(out_dims, "out_dims")
        if isinstance(hidden, (str, bytes)) or not hasattr(hidden, "__iter__"):
            raise TypeError(f"hidden: expected a sequence of layer widths, got {hidden!r}")
        hidden = tuple(_positive_int(h, "hidden") for h in hidden)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.in_dims, self.hidden, self.out_dims, self.activation = in_dims, hidden, out_dims, activation
        widths = (in_dims, *hidden, out_dims)
        layers = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(widths) - 2:
                layers.append(ACTIVATIONS[activation]())
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_dims:
            raise ValueError(f"x: MLP(in_dims={self.in_dims}) got inputs with {x.shape[-1]} columns")
        return self.layers(x)

    def config_args(self) -> dict:
        """The constructor arguments as JSON-ready values (``flashgp.serialize``)."""
        return {"in_dims": self.in_dims, "hidden": list(self.hidden), "out_dims": self.out_dims,
                "activation": self.activation}

    def extra_repr(self) -> str:
        return f"in_dims={self.in_dims}, hidden={self.hidden}, out_dims={self.out_dims}, activation={self.activation!r}"
