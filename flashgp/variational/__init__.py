# Sparse variational GPs: q(u) over inducing values (distributions), the marginals of q(f) and the
# KL term (terms), and the optimizer taking natural-gradient steps for q (optimizer).
from .distributions import (VARIATIONAL, CholeskyVariational, MeanFieldVariational, NaturalVariational,
                            VariationalDistribution, kl_divergence)
from .optimizer import NaturalAdam
from .terms import VariationalTerms, marginals, terms_from_factor, unchecked_terms, variational_terms

__all__ = ["VariationalDistribution", "CholeskyVariational", "MeanFieldVariational", "NaturalVariational",
           "VARIATIONAL", "kl_divergence", "NaturalAdam", "VariationalTerms", "variational_terms", "unchecked_terms",
           "terms_from_factor", "marginals"]
