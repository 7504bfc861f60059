"""Posterior inference: NUTS runs, ArviZ DataTrees and diagnostics, β-function posteriors.

* :func:`infer_couplings`: coupling posteriors at every width and cutoff.
* :func:`diagnostics_gate`: R-hat within 1.01 or its Monte Carlo error, bulk ESS >= 400,
  no divergences.
* :func:`calibrate`: coverage of the posteriors on real sampled networks, with the
  diagnostics and timing of its NUTS runs.
* :func:`beta_function`: the running of the couplings and the exponent γ.
* :func:`read_posterior`: a stored coupling posterior (file verified by its checksum) with
  its draws and the theory it was drawn with (:class:`StoredPosterior`).
* :func:`compare_point_estimates`: posteriors next to the paper's point estimates.
* :func:`select_problem`, :func:`model_loo`: one (width, cutoff) of a posterior file for
  ArviZ, and each compared model's PSIS-LOO (the stored ELPD).
* :mod:`.plots`: figures (matplotlib, Agg; no global state).
"""

from .calibration import calibrate
from .compare import compare_point_estimates, model_loo, select_problem
from .couplings import infer_couplings, sample_latent
from .diagnostics import DiagnosticsWarning, GateResult, diagnostics_gate
from .flow import asymptotic_exponent, beta_function, design_function
from .posterior_file import StoredPosterior, read_posterior

__all__ = [
    "infer_couplings",
    "calibrate",
    "sample_latent",
    "diagnostics_gate",
    "DiagnosticsWarning",
    "GateResult",
    "beta_function",
    "read_posterior",
    "StoredPosterior",
    "design_function",
    "asymptotic_exponent",
    "compare_point_estimates",
    "select_problem",
    "model_loo",
]
