"""Figures of the effective action along training, drawn from a training-flow dataset
(:func:`nngp_ppl.inference.training_flow.training_flow`, or its netCDF file): (d) the
couplings with their bands against the training step, (e) the f -> -f verdict against the
step. Nothing is recomputed; labels come from the dataset's coordinates and attributes.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import xarray as xr

from ..._checks import NNGPInputError
from ..._io import atomic_path
from ...ensembles.core import ensemble_from_dict
from ...inference.training_flow import FLOW_FORMAT

__all__ = ["plot_training_couplings", "plot_training_symmetry"]

_NAMES = {"g3": "g₃", "lambda": "λ", "g5": "g₅", "kappa": "κ"}
_DPI = 110


def _figure(ncols, nrows, size=(4.2, 3.4)):
    """A Figure with an Agg canvas (no pyplot state), as the report's other figures."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _save(fig, path: Path) -> Path:
    """Write the PNG atomically (a complete file or none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI)
    return path


def _suptitle(fig, text: str, fontsize: float = 11) -> None:
    # wrapped to the figure's width (about 0.55 em per glyph, one em of margin)
    chars = max(20, int(fig.get_figwidth() * 72 / (0.55 * fontsize)) - 2)
    fig.suptitle(textwrap.fill(text, chars), fontsize=fontsize)


def _read(ds):
    """The dataset (or a path to its netCDF file), checked to be a training flow."""
    if isinstance(ds, (str, Path)):
        ds = xr.load_dataset(ds, engine="h5netcdf")
    if not isinstance(ds, xr.Dataset) or ds.attrs.get("nngp_ppl_format") != FLOW_FORMAT:
        raise NNGPInputError("ds must be a training-flow dataset (nngp_ppl.inference."
                             "training_flow.training_flow) or the path of its file")
    return ds


def _title(ds, what: str) -> str:
    try:
        net = ensemble_from_dict(json.loads(ds.attrs["ensemble"])).describe()
    except (NNGPInputError, KeyError, ValueError):
        net = "ensemble"
    train = json.loads(ds.attrs["training"])
    return (f"{what}: {net}, {len(train['y_train'])} training points, "
            f"{train['optimizer']} η = {train['learning_rate']:g}")


def _step_axis(ax, steps):
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(0, max(float(np.max(steps)) * 1.3, 1.0))
    ax.set_xlabel("training step t")


def plot_training_couplings(ds, path) -> Path:
    """Figure (d): each coupling's posterior median with its central interval (band) and
    the point fit (crosses) against the step, one colour per width; hollow where the
    band's variances are within float32 rounding of the stored sums."""
    ds = _read(ds)
    couplings = [str(c) for c in ds["coupling"].values]
    steps = ds["step"].values
    fig, axes = _figure(len(couplings), 1)
    colours = [f"C{i}" for i in range(ds.sizes["width"])]
    level = float(ds.attrs.get("interval", 0.9))
    for ax, c in zip(axes[0], couplings, strict=True):
        sub = ds.sel(coupling=c)
        for colour, w in zip(colours, ds["width"].values, strict=True):
            one = sub.sel(width=w)
            ax.fill_between(steps, one["coupling_lower"], one["coupling_upper"],
                            color=colour, alpha=0.25, lw=0)
            ax.plot(steps, one["coupling_median"], "-", color=colour,
                    label=f"N = {w}: median, {level:.0%} band")
            lim = ds["coupling_rounding_limited"].sel(width=w).values.astype(bool)
            med = one["coupling_median"].values
            ax.plot(steps[~lim], med[~lim], "o", color=colour, ms=3)
            ax.plot(steps[lim], med[lim], "o", mfc="white", color=colour, ms=4)
            ax.plot(steps, one["coupling_point"], "x", color=colour, ms=5)
        ax.axhline(0.0, color="0.5", lw=0.6)
        _step_axis(ax, steps)
        finite = np.abs(sub["coupling_sd"].values)
        finite = finite[np.isfinite(finite) & (finite > 0)]
        ax.set_yscale("symlog", linthresh=float(np.min(finite)) if finite.size else 1.0)
        ax.set_ylabel(f"{_NAMES.get(c, c)} (Λ = {ds.attrs['cutoff']:g}, propagator Σ_t)")
        ax.plot([], [], "x", color="0.3", label="point fit (inverse-variance WLS)")
        if np.any(ds["coupling_rounding_limited"].values):
            ax.plot([], [], "o", mfc="white", color="0.3",
                    label="hollow: band within float32 rounding")
        ax.legend(fontsize=7)
    _suptitle(fig, _title(ds, "Couplings along training, around the learned mean"))
    return _save(fig, Path(path))


def plot_training_symmetry(ds, path) -> Path:
    """Figure (e): the symmetry verdict against the step. Left: -log10 p of the test of
    φ -> -φ around the learned mean (solid; filled where it rejects) and of f -> -f
    (dashed), with the level α, and a cross where the test cannot decide (its variances
    within float32 rounding); right: the largest |κ₃|/se of the odd connected 3-pt
    function."""
    ds = _read(ds)
    steps = ds["step"].values
    alpha = float(ds.attrs["alpha"])
    fig, axes = _figure(2, 1)
    left, right = axes[0]
    tiny = np.finfo(float).tiny
    for i, w in enumerate(ds["width"].values):
        one = ds.sel(width=w)
        colour = f"C{i}"
        p = -np.log10(np.clip(one["parity_p_value"].values, tiny, 1.0))
        raw = -np.log10(np.clip(one["raw_parity_p_value"].values, tiny, 1.0))
        rej = one["parity_reject"].values.astype(bool)
        lim = one["parity_rounding_limited"].values.astype(bool)
        left.plot(steps, p, "-", color=colour, label=f"N = {w}: φ → −φ (φ = f − ⟨f⟩)")
        left.plot(steps[rej], p[rej], "o", color=colour, ms=5)
        left.plot(steps[~rej & ~lim], p[~rej & ~lim], "o", mfc="white", color=colour, ms=5)
        left.plot(steps[lim], p[lim], "x", color=colour, ms=7)
        left.plot(steps, raw, "--", color=colour, lw=0.9, label=f"N = {w}: f → −f")
        right.plot(steps, one["odd_connected_max_z"].values, "o-", color=colour, ms=3,
                   label=f"N = {w}")
    left.axhline(-np.log10(alpha), color="k", lw=0.7, ls=":", label=f"α = {alpha:g}")
    if np.any(ds["parity_rounding_limited"].values):
        left.plot([], [], "x", color="0.3", label="not decidable: float32 rounding")
    left.set_yscale("symlog", linthresh=1.0)
    left.set_ylim(bottom=0.0)
    left.set_ylabel("−log10 p (filled: rejected)")
    right.set_yscale("log")
    right.set_ylabel("largest |κ₃| / standard error")
    for ax in (left, right):
        _step_axis(ax, steps)
        ax.legend(fontsize=7)
    _suptitle(fig, _title(ds, "Symmetry along training"))
    return _save(fig, Path(path))
