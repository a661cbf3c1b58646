# Likelihoods p(y | f) behind one interface (base.Likelihood): log_prob, expected_log_prob,
# marginal_log_prob, predictive. Conjugate (Gaussian-noise) ones also give the noise diagonal
# exact inference adds to K: Gaussian (learned noise with a floor), FixedNoise (known per-point
# variances). Non-conjugate ones, for approximate inference: Bernoulli (probit or logit link),
# StudentT (learned df), Poisson (counts, log link) and Softmax (C classes, C latent functions).
from .base import (Likelihood, PredictiveMoments, quadrature_expected_log_prob, quadrature_marginal_log_prob,
                   quadrature_predictive)
from .bernoulli import Bernoulli
from .gaussian import FixedNoise, Gaussian, GaussianNoise
from .poisson import Poisson
from .quadrature import QUADRATURE_POINTS
from .softmax import Softmax
from .student_t import StudentT

__all__ = ["Likelihood", "PredictiveMoments", "GaussianNoise", "Gaussian", "FixedNoise", "Bernoulli",
           "StudentT", "Poisson", "Softmax", "QUADRATURE_POINTS", "quadrature_expected_log_prob",
           "quadrature_marginal_log_prob", "quadrature_predictive"]
