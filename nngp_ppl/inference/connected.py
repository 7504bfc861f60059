r"""The connected 6-pt function against the width: exact, sampled, and the EFT's predictions.

At O(1/N²) the connected 6-pt function :math:`\kappa_6` (the joint cumulant, physics.md §4)
of the EFT receives two diagrams: the κ contact term and the tree-level exchange of two λ
vertices joined by one propagator (every other first- and second-order 6-pt diagram is
disconnected or of higher order):

.. math:: \kappa_6^{EFT} = -720\,\kappa\, I^{(0)}_{123456}
    + \lambda^2 E_{123456},\qquad E = 576 \sum_{10} \int\!\!\int K_{ay}K_{by}K_{cy}\,
    K_{yz}\, K_{dz}K_{ez}K_{fz}

(:func:`nngp_ppl.theory.diagrams.second_order_design` with ``topologies=("exchange",)``;
the contact integral is the first-order diagram with all six legs on the vertex).
:func:`connected_six_point` compares, per width and at one cutoff, three predictions with
the exact :math:`\kappa_6` (:func:`nngp_ppl.theory.exact.exact_cumulant_tuples`, where the
ensemble has an oracle) and with the sampled one (the cumulant of the sampled moments,
:func:`nngp_ppl.theory.wick.connected_correlator_tuples`):

* ``first_order``: κ contact alone, κ from the first-order λ + κ model (the paper's
  treatment: κ absorbs the exchange);
* ``exchange``: :math:`\bar\lambda^2 E` alone, λ from the first-order λ model (λ̄);
* ``exchange_kappa``: both, λ̄ as above and κ from the second-order λ + κ model.

The couplings are the posterior means that :func:`nngp_ppl.infer_couplings` stores for
every compared model (``constant_data/model_couplings``); the second-order models are
there when the posterior was drawn with ``order=2``. Where the ensemble has an exact
oracle, two noise-free descriptions of the exact :math:`\kappa_6` are added, each with one
free parameter fitted to it by least squares over the tuples (physics.md, second order):

* ``contact_fit``: :math:`\kappa c_6` alone;
* ``exchange_contact_fit``: :math:`\bar\lambda^2 E + \kappa c_6`, λ̄ the exact λ̄ (from
  the 4-pt function), κ fitted to what the exchange leaves;

and ``exchange_exact``, :math:`\bar\lambda^2 E` with the exact λ̄, no parameter. The
posterior's joint (λ, κ) estimand weights the 4-pt function and the disconnected parts of
the 6-pt function as well, so its κ is not the contact coupling of :math:`\kappa_6`
(measured on exact Erf-net correlators, Λ = 10: it overshoots :math:`\kappa_6` 10× at
N = 5 and 40× at N = 20); the fits say which diagrams describe :math:`\kappa_6` itself.
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from .._checks import NNGPInputError
from ..theory import diagrams as dg
from ..theory.exact import exact_cumulant_tuples, max_exact_order
from ..theory.wick import connected_correlator_tuples
from .problem import EFTTheory

__all__ = [
    "PREDICTIONS",
    "EXACT_DESCRIPTIONS",
    "six_point_diagrams",
    "sampled_connected",
    "connected_six_point",
]

#: Rows of the comparison: name -> (the posterior model whose λ enters as λ² E, the model
#: whose κ enters as κ c6 (None: the term is absent), label). The exchange takes λ̄ (the
#: λ-only first-order model), the leading-order λ the second-order estimand removes.
PREDICTIONS = {
    "first_order": (None, "lambda+kappa", "κ contact (first order)"),
    "exchange": ("lambda", None, "λ̄² exchange"),
    "exchange_kappa": ("lambda", "lambda+kappa@2", "exchange + κ (second order)"),
}


#: The noise-free descriptions of the exact κ6: name -> label.
EXACT_DESCRIPTIONS = {
    "contact_fit": "κ contact fitted to κ6 (first order)",
    "exchange_exact": "λ̄² exchange (exact λ̄)",
    "exchange_contact_fit": "λ̄² exchange + κ contact fitted (second order)",
}


def _exact_descriptions(net, X, width, cutoff, propagator, c6, E) -> dict:
    """The noise-free descriptions of the exact κ6 (module docstring): name -> (T6,)."""

    theory = EFTTheory.build(net, X, ("lambda",), (4,), (4,), propagator, max_cutoff=cutoff)
    lam = float(theory.estimator([cutoff]).couplings(theory.exact_deviation(width))[0, 0])
    k6 = exact_cumulant_tuples(net, X, width, 6)
    ex = lam**2 * E
    return {
        "contact_fit": (c6 @ k6) / (c6 @ c6) * c6,
        "exchange_exact": ex,
        "exchange_contact_fit": ex + (c6 @ (k6 - ex)) / (c6 @ c6) * c6,
    }


def six_point_diagrams(net, X, cutoffs, propagator: str = "full"):
    """(contact, exchange), each (L, T_6) on the distinct 6-tuples at ``cutoffs``: the
    coefficients of κ and of λ² in the connected 6-pt function (module docstring)."""

    cutoffs = np.atleast_1d(np.asarray(cutoffs, dtype=np.float64))
    (contact,) = [d for d in dg.first_order_diagrams(6, 6) if len(d.attached) == 6]
    c6 = np.atleast_2d(contact.evaluate(net, X, cutoffs, propagator))
    E = dg.second_order_design(net, X, 6, cutoffs, ("lambda",), propagator,
                               topologies=("exchange",))[..., 0, 0]
    return c6, E


def sampled_connected(stats, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The sampled connected 6-pt function (T6,) at ``width`` and a noise scale per tuple:
    the standard error of the sampled 6-pt moment (the dominant term; the subtracted
    products of lower moments are far better measured)."""

    moments = {n: stats.correlator_tuples(n, width) for n in (2, 4, 6)}
    return (connected_correlator_tuples(moments, 6, stats.k),
            np.asarray(stats.stderr_tuples(6, width), dtype=np.float64))


def connected_six_point(stats, posterior, cutoff: float):
    """Dataset (width, source) of the connected 6-pt function's size and of each
    prediction's misfit at ``cutoff`` (module docstring).

    ``rms``: :math:`\\|\\kappa_6\\|/\\sqrt{T}` over the 462 distinct tuples (6 inputs) for
    ``exact``, ``sampled`` and each prediction; ``misfit``: :math:`\\|\\text{prediction} -
    \\kappa_6^{exact}\\| / \\|\\kappa_6^{exact}\\|` (against the sampled function where
    there is no oracle: attribute ``reference``); ``noise``: the rms standard error of the
    sampled 6-pt moments per width.
    """

    for n in (2, 4, 6):
        if n not in stats.orders:
            raise NNGPInputError(f"stats must hold the 2-, 4- and 6-pt functions for the "
                                 f"connected 6-pt function; it holds {stats.orders}")
    const = posterior["constant_data"].to_dataset()
    if "model_couplings" not in const:
        raise NNGPInputError("posterior must carry every compared model's couplings "
                             "(infer_couplings(..., compare=True))")
    mc = const["model_couplings"]
    cutoffs = np.asarray(mc["cutoff"].values, dtype=np.float64)
    j = int(np.argmin(np.abs(np.log(cutoffs / cutoff))))
    if not np.isclose(cutoffs[j], cutoff, rtol=1e-9):
        raise NNGPInputError(f"cutoff must be one of the posterior's cutoffs "
                             f"{cutoffs.tolist()}, got {cutoff}")
    models = [str(m) for m in mc["model"].values]
    missing = [m for p in PREDICTIONS.values() for m in p[:2] if m and m not in models]
    if missing:
        raise NNGPInputError(f"posterior lacks the models {missing} (draw it with "
                             "couplings=('lambda', 'kappa'), order=2 and the 6-pt function)")
    net, X = stats.net, np.asarray(stats.X, dtype=np.float64).reshape(stats.k, -1)
    propagator = str(posterior.attrs.get("propagator", "full"))
    c6, E = (a[0] for a in six_point_diagrams(net, X, cutoffs[j], propagator))
    widths = [int(w) for w in mc["width"].values]
    has_exact = max_exact_order(net) >= 6
    sources = ["exact", "sampled", *PREDICTIONS]
    if has_exact:
        sources += list(EXACT_DESCRIPTIONS)
    rms = np.full((len(widths), len(sources)), np.nan)
    misfit = np.full_like(rms, np.nan)
    noise = np.zeros(len(widths))
    T = len(c6)
    for i, w in enumerate(widths):
        sampled, se = sampled_connected(stats, w)
        noise[i] = np.sqrt(np.mean(se**2))
        exact = exact_cumulant_tuples(net, X, w, 6) if has_exact else None
        ref = exact if has_exact else sampled
        values = {"exact": exact, "sampled": sampled}
        for name, (lam_model, kap_model, _) in PREDICTIONS.items():
            at = mc.sel(width=w).isel(cutoff=j)
            values[name] = 0.0 * c6
            if lam_model:
                lam = float(at.sel(model=lam_model, model_coupling="lambda"))
                values[name] = values[name] + lam**2 * E
            if kap_model:
                kap = float(at.sel(model=kap_model, model_coupling="kappa"))
                values[name] = values[name] + kap * c6
        if has_exact:
            values.update(_exact_descriptions(net, X, w, float(cutoffs[j]), propagator, c6, E))
        for s, name in enumerate(sources):
            v = values[name]
            if v is None:
                continue
            rms[i, s] = np.linalg.norm(v) / np.sqrt(T)
            if name != ("exact" if has_exact else "sampled"):
                misfit[i, s] = np.linalg.norm(v - ref) / np.linalg.norm(ref)
    return xr.Dataset(
        {"rms": (("width", "source"), rms), "misfit": (("width", "source"), misfit),
         "noise": (("width",), noise)},
        coords={"width": widths, "source": sources},
        attrs={"cutoff": float(cutoffs[j]), "reference": "exact" if has_exact else "sampled",
               "propagator": propagator, "n_tuples": T,
               "couplings_from": json.dumps({k: {"lambda": v[0], "kappa": v[1]}
                                             for k, v in PREDICTIONS.items()}),
               "labels": json.dumps({"exact": "exact", "sampled": "sampled",
                                     **{k: v[2] + " (posterior)"
                                        for k, v in PREDICTIONS.items()},
                                     **EXACT_DESCRIPTIONS})},
    )
