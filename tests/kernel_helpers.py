# Helpers shared by the kernel-operator tests (CPU and fused backends): a kernel with random,
# non-degenerate float64 hyperparameters.
import torch


def randomized(kernel, seed=1, device="cpu"):
    """The kernel in float64 on ``device`` with random raw hyperparameters (no degenerate gradient)."""
    kernel = kernel.double().to(device)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in kernel.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.3 + 0.2)
    return kernel
