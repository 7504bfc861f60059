"""The operator basis by evidence in the report: ELPD over nested bases, odd couplings.

Read from a run's stored coupling posterior (``posterior_<key>.nc``, fitted in the basis the
study asks for: :mod:`nngp_ppl.inference.basis_choice`), nothing recomputed but the PSIS-LOO of its
stored pointwise log-likelihoods (:func:`nngp_ppl.inference.model_loo`, the numbers
``az.loo`` gives on the file):

* per width and cutoff, every compared model's ELPD with its standard error, p_loo and
  Pareto k, and its difference from the best model with the standard error of the paired
  pointwise differences (``az.compare``'s dse: √n · sd of elpd_i(m) − elpd_i(best));
* each nested pair (an even basis, the same basis with odd couplings): which one the ELPD
  keeps (the odd couplings only where they raise it by more than max(4, 2 s.e.):
  :func:`nngp_ppl.inference.evidence.richer_model_earns_its_place`), which has the higher
  ELPD, and by how much;
* the posteriors of the odd couplings (g₃, g₅) with their 90% equal-tailed intervals, and
  whether the interval holds 0.

Symbols and names come from the operator records (:mod:`nngp_ppl.theory.operators`).
"""

from __future__ import annotations

import json
import warnings

import numpy as np

from ...inference.compare import model_loo
from ...inference.couplings import model_couplings_of
from ...inference.evidence import paired_difference, richer_model_earns_its_place
from ...theory.operators import operator

#: Pareto k above which PSIS-LOO's estimate of one observation is unreliable.
K_UNRELIABLE = 0.7


def model_label(name: str) -> str:
    """Printed symbols of a compared model: ``"g3+lambda"`` -> ``"g₃ + λ"``, ``"gp"`` ->
    ``"GP"`` (a ``@2`` suffix: "(2nd order)")."""
    base, _, order = name.partition("@")
    text = "GP" if base == "gp" else " + ".join(operator(c).symbol
                                                 for c in model_couplings_of(base))
    return f"{text} (order {order})" if order else text


def _loo(dt, width, cutoff, models):
    out = {}
    for m in models:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pareto k is stored and shown, not warned
            res = model_loo(dt, width=width, cutoff=cutoff, model=m)
        out[m] = (float(res.elpd), float(res.se), float(res.p),
                  np.asarray(res.elpd_i, dtype=np.float64).ravel(),
                  np.asarray(res.pareto_k, dtype=np.float64).ravel())
    return out


def _nested_pairs(models) -> list[tuple[str, str]]:
    """(even basis, the same basis with odd couplings) among the first-order models."""
    pairs = []
    for m in models:
        if "@" in m or m == "gp":
            continue
        cs = model_couplings_of(m)
        even = tuple(c for c in cs if operator(c).even)
        if even != cs and "+".join(even) in models:
            pairs.append(("+".join(even), m))
    return pairs


def _odd_posteriors(dt, couplings) -> list[dict]:
    post = dt["posterior"]
    rows = []
    for c in couplings:
        if operator(c).even:
            continue
        v = post[c].transpose("chain", "draw", "width", "cutoff").values
        v = v.reshape(-1, *v.shape[2:])
        lo, hi = np.quantile(v, [0.05, 0.95], axis=0)
        for i, w in enumerate(post["width"].values):
            for j, cut in enumerate(post["cutoff"].values):
                rows.append({"coupling": c, "width": int(w), "cutoff": float(cut),
                             "mean": float(v[:, i, j].mean()),
                             "sd": float(v[:, i, j].std(ddof=1)),
                             "q05": float(lo[i, j]), "q95": float(hi[i, j]),
                             "holds_zero": bool(lo[i, j] <= 0.0 <= hi[i, j])})
    return rows


def summary(run) -> dict | None:
    """The basis comparison of ``run`` (a :class:`~nngp_ppl.study.report.files.StudyRun`) from its
    stored posterior, or None where it has none or ranks a single model."""
    if not run.spec.get("files", {}).get("posterior"):
        return None
    if not (run.out / run.spec["files"]["posterior"]).exists():
        return None
    return run.cached("basis", lambda: _summary(run.posterior))


def _summary(dt) -> dict | None:
    models = list(json.loads(dt.attrs.get("elpd_models", "[]")))
    if len(models) < 2 or "log_likelihood" not in dt.children:
        return None
    couplings = list(json.loads(dt.attrs["couplings"]))
    pairs = _nested_pairs(models)
    table, nested = [], []
    for w in dt["posterior"]["width"].values:
        for c in dt["posterior"]["cutoff"].values:
            loo = _loo(dt, w, c, models)
            best = max(models, key=lambda m: loo[m][0])
            for m in models:
                elpd, se, p, pw, k = loo[m]
                diff, dse = paired_difference(pw, loo[best][3])
                table.append({"width": int(w), "cutoff": float(c), "model": m,
                              "label": model_label(m), "elpd": elpd, "se": se, "p_loo": p,
                              "delta": diff, "delta_se": dse, "best": m == best,
                              "k_max": float(np.max(k)),
                              "k_bad": int(np.sum(k > K_UNRELIABLE)), "n": int(k.size)})
            for even, odd in pairs:
                diff, dse = paired_difference(loo[odd][3], loo[even][3])
                nested.append({"width": int(w), "cutoff": float(c), "even": even,
                               "odd": odd, "even_label": model_label(even),
                               "odd_label": model_label(odd), "delta": diff,
                               "delta_se": dse,
                               "prefers_even": not richer_model_earns_its_place(diff, dse),
                               "even_higher": diff < 0})
    return {"fitted": couplings, "fitted_label": model_label("+".join(couplings)),
            "data_orders": json.loads(dt.attrs["data_orders"]), "models": models,
            "table": table, "nested": nested, "odd": _odd_posteriors(dt, couplings)}


__all__ = ["K_UNRELIABLE", "model_label", "summary"]
