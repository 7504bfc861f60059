"""numpyro models of the effective action: couplings at a cutoff, and the lattice field theory.

* :mod:`.couplings`: GP + first-order diagrams + inferred EFT truncation error, a
  multivariate-normal likelihood over the distinct 4-pt (and 6-pt) correlators.
* :mod:`.field`: the action :math:`S_{GP} + \\sum_j w_j(\\lambda f_j^4 + \\kappa f_j^6)` on a
  discretised input lattice, for non-perturbative correlators.
"""

from .couplings import (
    COUPLINGS,
    CouplingArrays,
    CouplingProblem,
    ScaleMixtureNormal,
    cbar_grid,
    coupling_model,
    sample_cbar,
    stable_cholesky,
    stack_problems,
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
    "CouplingArrays",
    "CouplingProblem",
    "ScaleMixtureNormal",
    "cbar_grid",
    "coupling_model",
    "sample_cbar",
    "stable_cholesky",
    "stack_problems",
    "FieldArrays",
    "FieldLattice",
    "check_bounded",
    "field_correlators",
    "field_model",
    "sample_field",
]
