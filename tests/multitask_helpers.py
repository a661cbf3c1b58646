"""Data the multitask tests share: three correlated smooth functions of two inputs plus noise."""
import torch

F64 = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def correlated_tasks(n, seed=0):
    """x (n, 2) on [0, 2]^2 and y (n, 3): three correlated smooth functions plus noise (sd 0.1)."""
    g = gen(seed)
    x = torch.rand(n, 2, generator=g, dtype=F64) * 2
    f = torch.sin(2 * x[:, 0]) + x[:, 1]
    y = torch.stack([f, 0.5 * f - torch.cos(3 * x[:, 1]), -f + 0.3 * x[:, 0]], -1)
    return x, y + 0.1 * torch.randn(n, 3, generator=g, dtype=F64)
