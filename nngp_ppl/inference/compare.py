"""Coupling posteriors next to the paper's point estimates (physics.md §7).

The point fits (:mod:`nngp_ppl.inference.eft`) give one number per width and cutoff: the mean of the
per-tuple couplings :math:`\\bar\\lambda(\\Lambda)` or a weighted least-squares fit of
:math:`(\\lambda, \\kappa)`. The posterior gives a distribution. The comparison reports, per
width, cutoff and coupling, the posterior mean, standard deviation and 90% equal-tailed
interval, the point estimate, its distance from the posterior mean in posterior standard
deviations, and whether the interval contains it.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass

import arviz_stats
import numpy as np
import pandas as pd
import xarray as xr

from .._checks import NNGPInputError
from .evidence import choose_nested_basis
from .plots import plot_running

__all__ = [
    "PointComparison",
    "compare_point_estimates",
    "select_problem",
    "model_loo",
    "pointwise_elpd",
    "elpd_table",
    "elpd_table_and_choice",
    "problem_key",
    "stored_choice",
]

# Names under which a fit may carry a coupling's point estimate, in order of preference.
_ALIASES = ("{c}_mean", "{c}_bar", "{c}", "{c}_fit", "{c}_wls", "{c}_hat")


@dataclass(frozen=True)
class PointComparison:
    """``table``: pandas DataFrame (one row per width, cutoff, coupling); ``figure``:
    matplotlib Figure of the posterior bands with the point estimates marked (or None)."""

    table: object
    figure: object = None

    def __str__(self) -> str:
        return self.table.to_string(index=False)


def _same_problem(posterior, fit) -> None:
    """Refuse a fit file of another ensemble or other inputs than the posterior's (where both
    record them): its numbers would be compared as if they estimated the same couplings."""

    const = posterior["constant_data"].to_dataset() if "constant_data" in posterior else {}
    if "inputs" in fit.attrs and "inputs" in const:
        theirs = np.asarray(json.loads(fit.attrs["inputs"]), dtype=np.float64)
        ours = np.asarray(const["inputs"].values, dtype=np.float64)
        if theirs.shape != ours.shape or not np.allclose(theirs, ours, rtol=1e-6, atol=1e-12):
            raise NNGPInputError(f"fit was made at the inputs {theirs.tolist()}, the posterior "
                                 f"at {ours.tolist()}; compare a fit of the same run")
    if "ensemble" in fit.attrs and "ensemble" in posterior.attrs and \
            json.loads(fit.attrs["ensemble"]) != json.loads(posterior.attrs["ensemble"]):
        raise NNGPInputError(f"fit is of the ensemble {fit.attrs['ensemble']}, the posterior "
                             f"of {posterior.attrs['ensemble']}; compare a fit of the same run")


def _as_dataset(fit):

    if isinstance(fit, xr.Dataset):
        return fit
    if isinstance(fit, xr.DataTree):
        return fit.to_dataset()
    if isinstance(fit, xr.DataArray):
        return fit.to_dataset(name=fit.name or "lambda")
    if hasattr(fit, "to_dataset"):
        return fit.to_dataset()
    if isinstance(fit, dict):
        return xr.Dataset({k: xr.DataArray(np.asarray(v)) if np.ndim(v) == 0 else v
                           for k, v in fit.items()})
    if isinstance(fit, str) or hasattr(fit, "__fspath__"):
        return xr.open_dataset(fit, engine="h5netcdf").load()
    raise NNGPInputError(
        "fit must be the point-estimate fit (xarray Dataset from nngp_ppl.inference.eft, or a "
        f"path to its netCDF file, or a dict of DataArrays); got {type(fit).__name__}"
    )


def _point_variable(ds, coupling):
    """(primary, secondary) point estimates of ``coupling`` in a fit dataset (or None).

    For the :func:`nngp_ppl.inference.eft.fit_dataset` layout the primary estimate of λ is the
    paper's λ̄ (``lambda_mean``) and the secondary the weighted least-squares ``fit``; κ has
    only the latter. Other layouts: the first variable named after the coupling.
    """
    joint = None
    if "fit" in ds.data_vars and "coupling" in ds["fit"].dims:
        if coupling in [str(c) for c in ds["fit"]["coupling"].values]:
            joint = ds["fit"].sel(coupling=coupling)
    for pattern in _ALIASES:
        name = pattern.format(c=coupling)
        if name in ds.data_vars:
            return ds[name], joint
    return joint, None


def _value_at(point, width, cutoff):
    """The point estimate at (width, cutoff) as a float, or None where the fit has none."""
    sel = {}
    if "width" in point.dims:
        if int(width) not in [int(v) for v in point["width"].values]:
            return None
        sel["width"] = int(width)
    if "cutoff" in point.dims:
        cut = np.asarray(point["cutoff"].values, dtype=np.float64)
        j = int(np.argmin(np.abs(cut - float(cutoff))))
        if not np.isclose(cut[j], float(cutoff), rtol=1e-9):
            return None
        point = point.isel(cutoff=j)
    value = np.asarray(point.sel(sel).values if sel else point.values, dtype=np.float64)
    if value.ndim:
        raise NNGPInputError(
            f"a point estimate must depend only on width and cutoff; got dims {point.dims}"
        )
    return float(value)


def compare_point_estimates(posterior, fit, *, prob: float = 0.9, plot: bool = True):
    """Table (and figure) of the coupling posteriors against point estimates.

    ``posterior``: DataTree from :func:`~nngp_ppl.infer_couplings`. ``fit``: the
    point-estimate dataset of :func:`nngp_ppl.inference.eft.fit_dataset` (or its file): the
    ``point``
    column is then the paper's λ̄ (``lambda_mean``) for λ and the weighted least-squares
    ``fit`` for κ, and ``point_fit``/``z_fit``/``inside_fit`` compare λ's least-squares fit
    too. Other datasets or dicts: a variable per coupling (``lambda``, ``lambda_bar``, ...)
    on dims among ``width`` and ``cutoff``. ``fit=None`` uses the least-squares estimates
    stored in the posterior. ``z`` = (point - posterior mean) / posterior sd; ``inside``:
    within the central ``prob`` interval.
    """

    if not hasattr(posterior, "children") or "posterior" not in posterior.children:
        raise NNGPInputError("posterior must be the DataTree of infer_couplings (or its file "
                             f"opened with arviz), got {type(posterior).__name__}")
    post = posterior["posterior"].to_dataset()
    # The posterior's couplings as it records them (operator names: g3, lambda, ...); a
    # file without the attribute holds lambda and perhaps kappa.
    named = json.loads(posterior.attrs.get("couplings", '["lambda", "kappa"]'))
    couplings = [c for c in named if c in post.data_vars]
    if not couplings:
        raise NNGPInputError(f"posterior has no coupling variables ({', '.join(named)})")
    if fit is None:
        pe = posterior["constant_data"].to_dataset()["point_estimate"]
        points = {c: (pe.sel(coupling=c), None) for c in couplings}
    else:
        ds = _as_dataset(fit)
        _same_problem(posterior, ds)
        points = {c: _point_variable(ds, c) for c in couplings}
        points = {c: v for c, v in points.items() if v[0] is not None}
        if not points:
            raise NNGPInputError(
                f"fit has none of the couplings {couplings} (looked for a 'fit' variable with "
                f"a coupling dim and for {[p.format(c=c) for c in couplings for p in _ALIASES]});"
                f" its variables are {list(ds.data_vars)}"
            )
    lo_q, hi_q = (1 - prob) / 2, 1 - (1 - prob) / 2
    rows = []
    for c, (point, second) in points.items():
        for w in post["width"].values:
            for lam_c in post["cutoff"].values:
                value = _value_at(point, w, lam_c)
                if value is None:
                    continue
                draws = post[c].sel(width=w, cutoff=lam_c).values.ravel()
                mean, sd = float(draws.mean()), float(draws.std(ddof=1))
                lo, hi = np.quantile(draws, [lo_q, hi_q])
                row = {
                    "width": int(w),
                    "cutoff": float(lam_c),
                    "coupling": c,
                    "post_mean": mean,
                    "post_sd": sd,
                    f"q{lo_q * 100:g}": float(lo),
                    f"q{hi_q * 100:g}": float(hi),
                    "point": value,
                    "z": (value - mean) / sd if sd > 0 else np.nan,
                    "inside": bool(lo <= value <= hi),
                }
                other = _value_at(second, w, lam_c) if second is not None else None
                if other is not None:
                    row.update(
                        point_fit=other,
                        z_fit=(other - mean) / sd if sd > 0 else np.nan,
                        inside_fit=bool(lo <= other <= hi),
                    )
                rows.append(row)
    if not rows:
        raise NNGPInputError("the fit and the posterior share no width and cutoff")
    table = pd.DataFrame(rows)
    figure = None
    if plot:

        figure = plot_running(posterior, points=table)
    return PointComparison(table=table, figure=figure)


# --- the ELPD of each compared model, from the stored file --------------------------------


def select_problem(posterior, *, width, cutoff):
    """One (width, cutoff) of a coupling posterior, on the draws its pointwise groups keep.

    A posterior file holds one model-comparison problem per width and cutoff, and its
    ``log_likelihood`` and ``posterior_predictive`` keep every ``predictive_thin``-th draw.
    ArviZ reads a whole tree as one problem: ``az.loo(dt)`` would pool every width and
    cutoff, and the relative efficiency of the draws (ESS / S, which sets the Pareto tail of
    PSIS) would be the full chains' ESS over the thinned count. This selection is
    ``dt.sel(width=width, cutoff=cutoff, draw=dt["log_likelihood"]["draw"])``: one problem,
    every group on the same draws, which ``az.loo``, ``az.compare``, ``az.plot_ppc_dist``
    and ``az.plot_loo_pit`` read with their default arguments (docs/file_formats.md).
    """
    coords = {}
    for dim, value in (("width", width), ("cutoff", cutoff)):
        have = np.asarray(posterior["posterior"][dim].values, dtype=np.float64)
        hit = np.flatnonzero(np.isclose(have, float(value), rtol=1e-9, atol=0.0))
        if hit.size != 1:
            raise NNGPInputError(f"{dim} must be one of the posterior's {dim}s "
                                 f"{have.tolist()}, got {value!r}")
        coords[dim] = posterior["posterior"][dim].values[hit[0]]
    if "log_likelihood" not in posterior.children:
        raise NNGPInputError("the posterior has no log_likelihood group (written by an "
                             "nngp_ppl older than file layout version 4, or infer_couplings "
                             "with compare=False)")
    draws = posterior["log_likelihood"]["draw"].values
    return posterior.sel(**coords, draw=draws)


def _model_names_of(posterior) -> list[str]:

    return list(json.loads(posterior.attrs.get("elpd_models", "[]")))


def model_loo(posterior, *, width, cutoff, model: str, pointwise: bool = True):
    """PSIS-LOO of one compared model at one (width, cutoff): ``az.loo`` on
    :func:`select_problem` with ``var_name=model``, the number the posterior file stores in
    ``constant_data/elpd`` and the report shows.

    ``model`` is one of the root attribute ``elpd_models`` (``gp``, ``lambda``,
    ``lambda+kappa``; ``@2`` at second order), each a variable of ``log_likelihood``. The GP
    has no parameter: its pointwise log density is the same for every draw, so its
    leave-one-out density is that density itself, and PSIS has no tail to fit (ArviZ refuses
    constant weights). It is passed with uniform weights and Pareto k = 0, which gives
    exactly ``elpd_i = log p(y_i | GP)``. ``az.compare({m: model_loo(dt, width=N,
    cutoff=L, model=m) for m in models})`` ranks them.
    """

    models = _model_names_of(posterior)
    if model not in models:
        raise NNGPInputError(f"model must be one of the posterior's compared models {models}, "
                             f"got {model!r}")
    one = select_problem(posterior, width=width, cutoff=cutoff)
    return _loo_with_constants(one, model, pointwise)


def _loo_with_constants(one, model: str, pointwise: bool = True):
    """``az.loo`` of ``model`` on one problem, where the observations whose log density is
    the same in every draw get uniform weights and Pareto k = 0 (their leave-one-out
    density is that density): all of them for the GP, and for a model with no coupling of
    an observation's parity (λ alone on a 3-pt tuple predicts exactly 0 there) those
    observations; PSIS smooths the others (ArviZ refuses constant weights)."""

    ll = one["log_likelihood"][model]
    obs = [d for d in ll.dims if d not in ("chain", "draw")]
    flat = ll.transpose("chain", "draw", *obs).values.reshape(-1, int(np.prod(
        [ll.sizes[d] for d in obs])))
    const = np.all(flat == flat[:1], axis=0)
    if model != "gp" and not np.any(const):
        return arviz_stats.loo(one, var_name=model, pointwise=pointwise)
    n_draws = ll.sizes["chain"] * ll.sizes["draw"]
    log_weights = xr.full_like(ll, -np.log(n_draws), dtype=np.float64)
    pareto_k = xr.zeros_like(ll.isel(chain=0, draw=0, drop=True), dtype=np.float64)
    if model != "gp" and not np.all(const) and len(obs) == 1:
        idx = np.flatnonzero(~const)
        part = arviz_stats.loo(one.isel({obs[0]: idx}), var_name=model, pointwise=True)
        lw = log_weights.transpose("chain", "draw", obs[0]).values.copy()
        lw[..., idx] = part.log_weights.transpose("chain", "draw", obs[0]).values
        log_weights = log_weights.copy(data=lw.transpose(
            [("chain", "draw", obs[0]).index(d) for d in log_weights.dims]))
        k = pareto_k.values.copy()
        k[idx] = part.pareto_k.values
        pareto_k = pareto_k.copy(data=k)
    return arviz_stats.loo(one, var_name=model, pointwise=pointwise,
                           log_weights=log_weights, pareto_k=pareto_k)


def pointwise_elpd(posterior, width, cutoff, models) -> dict:
    """{model: its pointwise PSIS-LOO ELPD} at one width and cutoff (the terms of the
    stored ELPD, :func:`model_loo`), for a decision rule on paired differences such as
    :func:`nngp_ppl.inference.evidence.choose_nested_basis`."""
    out = {}
    for m in models:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pareto k is in the stored table, not repeated
            out[m] = np.asarray(model_loo(posterior, width=width, cutoff=cutoff,
                                          model=m).elpd_i, dtype=np.float64).ravel()
    return out


def elpd_table(posterior) -> dict:
    """``elpd``, ``elpd_se``, ``elpd_p`` and ``elpd_pareto_k_max`` (width, cutoff, model) of
    every compared model, by :func:`model_loo` on the tree itself (so that ArviZ on the
    stored file gives the stored numbers)."""

    return elpd_table_and_choice(posterior)[0]


def elpd_table_and_choice(posterior) -> tuple[dict, np.ndarray]:
    """:func:`elpd_table` and, from the same PSIS-LOO runs, the basis kept by the nested
    rule (:func:`nngp_ppl.inference.evidence.choose_nested_basis` on :func:`pointwise_elpd`)
    at each (width, cutoff), an array of model names: the posterior file stores it (root
    attribute ``elpd_kept``), so that a reader need not run PSIS again."""

    models = _model_names_of(posterior)
    widths = posterior["posterior"]["width"].values
    cutoffs = posterior["posterior"]["cutoff"].values
    out = {k: np.full((len(widths), len(cutoffs), len(models)), np.nan)
           for k in ("elpd", "elpd_se", "elpd_p", "elpd_pareto_k_max")}
    kept = np.empty((len(widths), len(cutoffs)), dtype=object)
    for i, w in enumerate(widths):
        for j, c in enumerate(cutoffs):
            pointwise = {}
            for m, name in enumerate(models):
                with warnings.catch_warnings():
                    # Pareto k is stored (elpd_pareto_k_max), not repeated as a warning.
                    warnings.simplefilter("ignore")
                    res = model_loo(posterior, width=w, cutoff=c, model=name)
                out["elpd"][i, j, m], out["elpd_se"][i, j, m] = res.elpd, res.se
                out["elpd_p"][i, j, m] = res.p
                out["elpd_pareto_k_max"][i, j, m] = float(np.max(res.pareto_k.values))
                pointwise[name] = np.asarray(res.elpd_i, dtype=np.float64).ravel()
            kept[i, j] = choose_nested_basis(pointwise)[0] if models else None
    return out, kept


def problem_key(width, cutoff) -> str:
    """The key of one (width, cutoff) problem in the posterior's per-problem root
    attributes (``elpd_best``, ``elpd_kept``): ``"5/10"``."""
    return f"{int(width)}/{float(cutoff):g}"


def stored_choice(posterior, width, cutoff, models) -> str:
    """The basis the nested rule keeps at (``width``, ``cutoff``) among ``models``: the
    posterior's stored ``elpd_kept`` where it has one for these models, else
    :func:`~nngp_ppl.inference.evidence.choose_nested_basis` on :func:`pointwise_elpd`
    (files written before the attribute existed)."""

    stored = json.loads(posterior.attrs.get("elpd_kept", "{}"))
    key = problem_key(width, cutoff)
    if key in stored and list(models) == _model_names_of(posterior):
        return stored[key]
    return choose_nested_basis(pointwise_elpd(posterior, width, cutoff, models))[0]
