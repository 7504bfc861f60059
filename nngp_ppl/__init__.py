"""nngp_ppl: the neural-network / field-theory correspondence as a probabilistic program.

Importing the package switches JAX to 64-bit types: theory (quadrature, lattice integrals,
likelihood Cholesky factors) needs float64, and the sampler asks for float32 explicitly
where a batch is accurate enough in single precision.
"""

import jax as _jax

_jax.config.update("jax_enable_x64", True)

from ._checks import NNGPInputError  # noqa: E402
from .ensembles import ErfNet, GaussNet, ReLUNet, SingleLayerNet, make_ensemble  # noqa: E402
from .inference import beta_function, compare_point_estimates, infer_couplings  # noqa: E402
from .presets import PAPER_CUTOFFS, PAPER_WIDTHS, paper_inputs  # noqa: E402
from .sampling import sample_correlators  # noqa: E402
from .stats import CorrelatorStats, HeavyTailWarning  # noqa: E402
from .theory.diagrams import (  # noqa: E402
    first_order_correction,
    first_order_design,
    first_order_diagrams,
    ngp_correlator,
)
from .theory.exact import exact_connected, exact_correlator  # noqa: E402
from .theory.lattice import Lattice, box_lattice, vertex_integrals  # noqa: E402
from .theory.wick import connected_correlator, gp_correlator  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "NNGPInputError",
    "ErfNet",
    "GaussNet",
    "ReLUNet",
    "SingleLayerNet",
    "make_ensemble",
    "paper_inputs",
    "PAPER_WIDTHS",
    "PAPER_CUTOFFS",
    "sample_correlators",
    "CorrelatorStats",
    "HeavyTailWarning",
    "gp_correlator",
    "connected_correlator",
    "exact_correlator",
    "exact_connected",
    "first_order_correction",
    "ngp_correlator",
    "first_order_design",
    "first_order_diagrams",
    "Lattice",
    "box_lattice",
    "vertex_integrals",
    "infer_couplings",
    "beta_function",
    "compare_point_estimates",
    "__version__",
]
