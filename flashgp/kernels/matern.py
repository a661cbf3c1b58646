# Matern kernels of smoothness nu = 1/2, 3/2, 5/2 as profiles of the scaled distance.
# k(r) = exp(-r), (1 + sqrt3 r) exp(-sqrt3 r), (1 + sqrt5 r + 5/3 r^2) exp(-sqrt5 r).
import math

import torch

from .stationary import Stationary, safe_sqrt

_NUS = (0.5, 1.5, 2.5)


class Matern(Stationary):
    """Matern kernel with nu in {0.5, 1.5, 2.5}; see ``Stationary`` for the other arguments."""

    def __init__(self, nu: float = 2.5, **kwargs):
        if nu not in _NUS:
            raise ValueError(f"nu: expected one of {_NUS}, got {nu!r}")
        super().__init__(**kwargs)
        self.nu = float(nu)

    def profile(self, r2: torch.Tensor) -> torch.Tensor:
        r = safe_sqrt(r2)
        if self.nu == 0.5:
            return torch.exp(-r)
        if self.nu == 1.5:
            s = math.sqrt(3.0) * r
            return (1 + s) * torch.exp(-s)
        s = math.sqrt(5.0) * r
        return (1 + s + s * s / 3) * torch.exp(-s)

    def profile_and_derivative(self, r2: torch.Tensor):
        """(k, dk/dr2) for nu = 1.5 or 2.5 (finite derivatives); overwrites r2."""
        if self.nu == 0.5:  # dk/dr2 is unbounded at r = 0: autograd handles this one
            raise NotImplementedError
        s = r2.sqrt_().mul_(math.sqrt(2 * self.nu))
        e = torch.exp(-s)
        if self.nu == 1.5:
            return s.add(1).mul_(e), e.mul_(-1.5)
        k = s.mul(s).div_(3).add_(s).add_(1).mul_(e)
        return k, s.add_(1).mul_(e).mul_(-5.0 / 6.0)

    def log_spectral_density(self, omega: torch.Tensor) -> torch.Tensor:
        """log S(omega) ``(*batch, M)`` at angular frequencies omega ``(M, d)`` (the convention of
        ``RBF.log_spectral_density``): S = 2^d pi^(d/2) Gamma(nu + d/2) (2 nu)^nu / Gamma(nu)
        prod(l) (2 nu + |l * omega|^2)^-(nu + d/2)."""
        d, nu = omega.shape[-1], self.nu
        ls = self.lengthscale.expand(*self.lengthscale.shape[:-1], d)  # (*batch, 1, d)
        scaled = (ls * omega).square().sum(-1)
        const = (d * math.log(2.0) + 0.5 * d * math.log(math.pi) + math.lgamma(nu + 0.5 * d)
                 + nu * math.log(2 * nu) - math.lgamma(nu))
        return const + ls.log().sum(-1) - (nu + 0.5 * d) * torch.log(2 * nu + scaled)

    @property
    def has_profile_derivative(self) -> bool:
        return self.nu != 0.5

    def extra_repr(self) -> str:
        return f"nu={self.nu}"
