"""nngp_ppl: the neural-network / field-theory correspondence as a probabilistic program.

64-bit JAX
----------
Importing the package calls :func:`enable_x64`, which switches JAX to 64-bit types for the
whole process. This is a deliberate, measured choice, not an accident of import order:
with 32-bit defaults nothing raises, results silently lose precision. Measured with x64
turned off after import: 31 of the 134 tests of ``test_ensembles``, ``test_wick``,
``test_stats`` and ``test_lattice`` fail (kernels no longer match their closed forms or are
not positive semidefinite, cutoff integrals miss scipy's by more than their tolerance);
``ErfNet().kernel`` returns float32; the sampler's float64 running totals become float32,
so a 2000-network G4 moved in its 7th digit, an error that grows with the number of
networks summed. Every stage of the
package needs float64 (kernels, quadrature, lattice integrals, likelihoods, monomial sums),
so enabling it at first use instead of at import would only move the same global switch
to a less predictable moment. The sampler still computes each batch's forward pass in
float32 by asking for it explicitly. Code that must stay in 32 bits should run in another
process; turning x64 off after import makes the float64 entry points refuse to run
(:func:`require_x64`) rather than return float32 results.
"""

from . import _startup

_startup.guard()  # Ctrl-C while the command line starts: one line, not a traceback

from ._version import __version__, enable_x64, require_x64  # noqa: E402

enable_x64()

from ._checks import NNGPInputError  # noqa: E402
from .ensembles.core import (  # noqa: E402
    ActivationNet,
    Ensemble,
    ErfNet,
    GaussNet,
    ReLUNet,
    SingleLayerNet,
    allow_import,
    make_ensemble,
    register_activation,
    register_ensemble,
)
from .ensembles.networks import MLP, JaxNetwork, TwoPointWarning  # noqa: E402
from .inference import (  # noqa: E402
    beta_function,
    calibrate,
    compare_point_estimates,
    diagnostics_gate,
    infer_couplings,
)
from .sampling.sampler import sample_correlators  # noqa: E402
from .sampling.stats import CorrelatorStats, HeavyTailWarning  # noqa: E402
from .study.presets import PAPER_CUTOFFS, PAPER_WIDTHS, paper_inputs  # noqa: E402
from .theory.diagrams import (  # noqa: E402
    first_order_correction,
    first_order_design,
    first_order_diagrams,
    ngp_correlator,
)
from .theory.exact import exact_connected, exact_correlator  # noqa: E402
from .theory.lattice import Lattice, box_lattice, vertex_integrals  # noqa: E402
from .theory.wick import connected_correlator, gp_correlator  # noqa: E402

__all__ = [
    "NNGPInputError",
    "ErfNet",
    "GaussNet",
    "ReLUNet",
    "SingleLayerNet",
    "Ensemble",
    "ActivationNet",
    "MLP",
    "JaxNetwork",
    "TwoPointWarning",
    "allow_import",
    "make_ensemble",
    "register_activation",
    "register_ensemble",
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
    "calibrate",
    "diagnostics_gate",
    "beta_function",
    "compare_point_estimates",
    "enable_x64",
    "require_x64",
    "__version__",
]
