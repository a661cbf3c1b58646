# Gauss-Hermite quadrature for expectations under a Gaussian: E_{f ~ N(mean, var)} g(f).
# Nodes and weights are computed once in float64 and cached per (points, dtype, device).
from __future__ import annotations

import functools
import math
import numbers

import numpy as np
import torch

QUADRATURE_POINTS = 20  # the default number of nodes: exact for polynomials of degree <= 39
MAX_POINTS = 256  # numpy's hermgauss keeps its weights summing to 1 to eps up to about 300 nodes


def check_points(points) -> int:
    """``points`` as an int in [1, MAX_POINTS], or a ValueError naming it."""
    if isinstance(points, bool) or not isinstance(points, numbers.Integral) or not 1 <= points <= MAX_POINTS:
        raise ValueError(f"points: expected an int from 1 to {MAX_POINTS} (quadrature nodes), got {points!r}")
    return int(points)


@functools.lru_cache(maxsize=64)
def standard_normal_rule(points: int, dtype: torch.dtype, device: torch.device):
    """Nodes z (points,) and probability weights p (points,) with sum_i p_i g(z_i) ~ E g(Z),
    Z ~ N(0, 1); also log p (points,). Computed in float64, then cast to ``dtype``.

    From the physicists' rule int exp(-x^2) h(x) dx ~ sum_i w_i h(x_i): z = sqrt(2) x and
    p = w / sqrt(pi). The cached tensors are shared: do not modify them in place.
    """
    x, w = np.polynomial.hermite.hermgauss(points)
    z = torch.as_tensor(x * math.sqrt(2.0), dtype=torch.float64)
    p = torch.as_tensor(w / math.sqrt(math.pi), dtype=torch.float64)
    return (z.to(dtype=dtype, device=device), p.to(dtype=dtype, device=device),
            p.log().to(dtype=dtype, device=device))


def normal_nodes(mean: torch.Tensor, var: torch.Tensor, points: int, ndim: int | None = None):
    """Quadrature nodes of N(mean, var) for each element.

    mean, var: broadcastable tensors of shape ``(*shape)`` (var >= 0, already checked).
    ndim: the number of dimensions the quadrature's result will have (at least len(shape); more
        where a likelihood's batch shape adds leading dimensions); None: len(shape).
    Returns f (points, 1, ..., 1, *shape) with ndim + 1 dimensions, the node values
    mean + sqrt(var) z_i along a new leading dimension (a sample dimension for ``log_prob``), and
    the weights p and log p, each of shape (points, 1, ..., 1) so that they broadcast against f.
    Gradients reach mean and var through f (var = 0 gives an infinite derivative of sqrt).
    """
    z, p, log_p = standard_normal_rule(points, mean.dtype, mean.device)
    ndim = max(mean.dim(), var.dim(), ndim or 0)
    view = (points,) + (1,) * ndim
    f = mean + var.sqrt() * z.view(view)
    return f, p.view(view), log_p.view(view)
