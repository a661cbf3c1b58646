# Likelihoods: Gaussian (learned noise with a floor) and FixedNoise (known per-point variances).
# Each gives the noise diagonal added to the kernel matrix.
from .gaussian import FixedNoise, Gaussian, Likelihood

__all__ = ["Likelihood", "Gaussian", "FixedNoise"]
