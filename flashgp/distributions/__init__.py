# Posterior (and predictive) distributions over test points: mean, variance, covariance
# operator, samples and confidence regions.
from .covariances import DenseDowndated, Downdated, FactorDowndated, MarginalOnly, PosteriorCovariance
from .multitask import MultitaskPosterior
from .posterior import Posterior

__all__ = ["Posterior", "MultitaskPosterior", "PosteriorCovariance", "Downdated", "FactorDowndated", "DenseDowndated", "MarginalOnly"]
