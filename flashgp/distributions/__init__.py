# Posterior (and predictive) distributions over test points: mean, variance, covariance
# operator, samples and confidence regions.
from .posterior import DenseDowndated, Downdated, MarginalOnly, Posterior

__all__ = ["Posterior", "Downdated", "DenseDowndated", "MarginalOnly"]
