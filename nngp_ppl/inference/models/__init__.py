"""numpyro models of the effective action: couplings at a cutoff, and the lattice field theory.

* :mod:`.couplings`: the noise-free correlators as latent variables under the estimator's
  noise model; the couplings at every cutoff are the declared estimand's map of them.
* :mod:`.field`: the action :math:`S_{GP} + \\sum_j w_j(\\lambda f_j^4 + \\kappa f_j^6)` on a
  discretised input lattice, for non-perturbative correlators.
"""

from .couplings import (
    COUPLINGS,
    LatentArrays,
    coupling_model,
    estimator_covariance,
    gaussian_moments,
    latent_arrays,
    stable_cholesky,
)
from .field import (
    FieldArrays,
    FieldLattice,
    check_bounded,
    field_correlators,
    field_model,
    sample_field,
)

__all__ = [
    "COUPLINGS",
    "LatentArrays",
    "coupling_model",
    "estimator_covariance",
    "gaussian_moments",
    "latent_arrays",
    "stable_cholesky",
    "FieldArrays",
    "FieldLattice",
    "check_bounded",
    "field_correlators",
    "field_model",
    "sample_field",
]
