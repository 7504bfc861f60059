"""The package's named choices, one list per vocabulary, and what a name means where it is
cheap to say.

Every module that offers or checks one of these choices reads it from here, so a choice is
added in one place: the study spec (TOML keys), the fits, the field model and the theory.

* :data:`PROPAGATORS` — the vertex-leg propagator :math:`\\tilde K`: ``"full"`` is the GP
  kernel K, ``"bias_subtracted"`` is :math:`K - c` with c the ensemble's
  ``kernel_constant()`` (σ_b² for the nets with an output bias; physics.md §6);
  :func:`propagator_shift` gives c.
* :data:`NOISE_MODELS` — the covariance of the correlator estimates (best first):
  exact finite-width moments, the sampled covariance, or the Gaussian-process moments;
  :data:`COVARIANCES` adds ``"auto"`` (choose among them; ``problem.choose_noise``).
* :data:`EXACT_METHODS` — the exact finite-width moment oracles of
  :mod:`nngp_ppl.theory.exact`, the values an ensemble's ``exact_moments`` may take.
"""

from __future__ import annotations

from ._checks import NNGPInputError

__all__ = [
    "COVARIANCES",
    "EXACT_METHODS",
    "NOISE_MODELS",
    "PROPAGATORS",
    "check_propagator",
    "propagator_shift",
]

#: Vertex-leg propagators: K itself, or K minus the ensemble's constant part.
PROPAGATORS = ("full", "bias_subtracted")

#: Noise models of the correlator estimates, best first.
NOISE_MODELS = ("exact", "sample", "gp")

#: What a study's or a command's ``covariance`` may say: a noise model or ``"auto"``.
COVARIANCES = ("auto", *NOISE_MODELS)

#: Exact finite-width moment oracles (``Ensemble.exact_moments``): Gauss-net's closed
#: form, Price's theorem for erf, ReLU cone integrals, and the trapezoid quadrature.
EXACT_METHODS = ("lognormal", "price", "cones", "quadrature")


def check_propagator(propagator) -> str:
    """``propagator`` if it is one of :data:`PROPAGATORS`, else NNGPInputError."""
    if propagator not in PROPAGATORS:
        raise NNGPInputError(f"propagator must be one of {PROPAGATORS}, got {propagator!r}")
    return propagator


def propagator_shift(net, propagator: str) -> float:
    """The constant c with :math:`\\tilde K = K - c`: the ensemble's ``kernel_constant()``
    for ``"bias_subtracted"`` (an exactly Gaussian output bias carries no interaction), 0
    for ``"full"``."""
    return float(net.kernel_constant()) if check_propagator(propagator) == "bias_subtracted" \
        else 0.0
