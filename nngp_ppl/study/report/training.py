r"""The report's section "Training": the stored results of a study's ``[train]`` stages.

Reads ``training_<run>.nc`` (:func:`nngp_ppl.training.comparison.oracle_comparison`: sampled
connected 1-, 2-, 3-pt functions per step and width, against the infinite-width oracle)
and ``training_flow_<run>.nc`` (couplings and the f -> -f verdict per step) -- it computes
no physics -- into the summary, draws the figures and writes the section:

* ``training_one_point.png`` (a): the learned 1-pt function :math:`\kappa_1 = E[f_t(x)]`
  per input against the step, ± 2 standard errors, and the oracle's mean :math:`\mu_t`;
* ``training_two_point.png`` (b): the connected 2-pt function at coincident inputs
  :math:`\kappa_2(x, x)` against :math:`\Sigma_t(x, x)`;
* ``training_three_point.png`` (c): the connected 3-pt function at coincident inputs,
  standardised, :math:`\kappa_3(x, x, x) / \kappa_2(x, x)^{3/2}`, against zero (its value
  at step 0 and in the infinite-width limit);
* ``training_couplings.png`` (d) and ``training_symmetry.png`` (e), from the flow file,
  only where it was computed (its ``computed`` attribute; :data:`nngp_ppl.training.comparison.
  FLOW_IMPLEMENTATION`). They read ``coupling_median``, ``coupling_lower``,
  ``coupling_upper`` (step, width, coupling; the band the ``band`` attribute describes,
  labelled by ``band_label``) and ``symmetry_p_value``, ``symmetry_reject`` (step, width;
  the level ``alpha``).
"""

from __future__ import annotations

import json

import numpy as np

from ... import _io
from ...training.comparison import (
    COMPARISON_FORMAT,
    FLOW_FORMAT,
    FLOW_IMPLEMENTATION,
    nanmax,
)
from ..train_spec import trained_run

__all__ = ["FIGURES", "FLOW_FIGURES", "Z_LIMIT", "figure_names", "figures", "section",
           "summary"]

#: Figures (a), (b), (c): drawn for every study with a ``[train]`` block.
FIGURES = ("training_one_point.png", "training_two_point.png", "training_three_point.png")
#: Figures (d), (e): drawn where the couplings along training were computed.
FLOW_FIGURES = ("training_couplings.png", "training_symmetry.png")
#: |z| a comparison with an exact target is judged against (fixed seeds, several inputs).
Z_LIMIT = 4.5


def figure_names(preset) -> tuple[str, ...]:
    """The figures a study's report draws for its ``[train]`` block."""
    if trained_run(preset) is None:
        return ()
    return FIGURES + (FLOW_FIGURES if FLOW_IMPLEMENTATION != "none" else ())


def _read(out, plan: dict, runs=None):
    """(plan entry, comparison Dataset, flow Dataset) or None; read once per ``runs`` (a
    :class:`~nngp_ppl.study.report.files.StudyRuns`) when given."""
    if runs is not None:
        return runs.cached("training", lambda: _read(out, plan))
    entry = plan.get("training")
    if not entry:
        return None
    comp = _io.read_netcdf(out / entry["files"]["comparison"], name="report",
                           what="training comparison file", file_format=COMPARISON_FORMAT)
    flow = _io.read_netcdf(out / entry["files"]["flow"], name="report",
                           what="training flow file", file_format=FLOW_FORMAT)
    return entry, comp, flow


def _flow_computed(flow) -> bool:
    return str(flow.attrs.get("computed", "no")) == "yes"


def summary(out, plan: dict, runs=None) -> dict | None:
    """The summary's ``training`` entry: the setup, the oracle, per width and step the
    largest |z| of κ1 against μ_t and κ2 against Σ_t, the largest |κ3| and |κ3| / s.e.;
    whether the flow was computed and, if not, why. None without a ``[train]`` block.
    ``runs``: the report's :class:`~nngp_ppl.study.report.files.StudyRuns` (files read once)."""
    found = _read(out, plan, runs)
    if found is None:
        return None
    entry, comp, flow = found
    has_oracle = "oracle1" in comp
    rows = []
    for j, w in enumerate(comp["width"].values):
        for i, step in enumerate(comp["step"].values):
            k3, se3 = comp["kappa3"].values[i, j], comp["kappa3_stderr"].values[i, j]
            z3 = np.abs(k3) / se3
            rows.append({
                "width": int(w), "step": int(step),
                "max_abs_kappa1": float(np.max(np.abs(comp["kappa1"].values[i, j]))),
                "max_abs_mu": float(np.max(np.abs(comp["oracle1"].values[i])))
                if has_oracle else None,
                "max_abs_z1": float(comp["max_abs_z1"].values[i, j]) if has_oracle else None,
                "max_abs_z2": float(comp["max_abs_z2"].values[i, j]) if has_oracle else None,
                "max_abs_kappa3": float(np.max(np.abs(k3))),
                "max_abs_z3_zero": float(nanmax(z3)),
                "unusable": int(np.sum(~np.isfinite(se3))) + sum(
                    int(comp[f"unusable{n}"].values[i, j]) for n in (1, 2)
                    if f"unusable{n}" in comp)})
    return {"key": entry["key"], "label": entry["label"], "data": entry["spec"].get("data"),
            "setup": json.loads(comp.attrs["training"]), "seed": int(comp.attrs["seed"]),
            "ensemble": comp.attrs["ensemble"], "oracle": comp.attrs["oracle"],
            "has_oracle": has_oracle, "inputs": json.loads(comp.attrs["inputs"]),
            "steps": [int(s) for s in comp["step"].values],
            "widths": [int(w) for w in comp["width"].values],
            "n_nets": [int(n) for n in comp["n_nets"].values], "rows": rows,
            "flow": {"computed": _flow_computed(flow),
                     "reason": str(flow.attrs.get("reason", ""))}}


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------
def _input_label(x) -> str:
    return "x = " + (f"{x[0]:g}" if len(x) == 1 else "(" + ", ".join(f"{c:g}" for c in x) + ")")


def _panels(comp):
    import matplotlib.pyplot as plt

    widths = list(comp["width"].values)
    fig, axes = plt.subplots(1, len(widths), figsize=(4.4 * len(widths), 3.5), squeeze=False,
                             constrained_layout=True)
    return fig, axes[0], widths


def _step_axis(ax, last: float) -> None:
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(-0.3, max(1.0, last) * 1.6)
    ax.set_xlabel("training step t")
    ax.grid(True, alpha=0.3)


def _diagonal(k: int, rows) -> list[int]:
    """Index of the tuple (a, a, ..) of each input a among ``rows``."""
    rows = np.asarray(rows)
    return [int(np.flatnonzero(np.all(rows == a, axis=1))[0]) for a in range(k)]


def _values(comp, n: int):
    """(values, stderr) (step, width, input) the figure of order ``n`` shows: κ_n at
    coincident inputs, the 3-pt one standardised (``skewness``)."""
    if n == 3:
        return comp["skewness"].values, comp["skewness_stderr"].values
    idx = _diagonal(comp.sizes["input"], comp[f"inputs_{n}"].values)
    return comp[f"kappa{n}"].values[..., idx], comp[f"kappa{n}_stderr"].values[..., idx]


def _against_step(comp, n: int, curve, ylabel: str, title: str):
    """:func:`_values` per input against the step, ± 2 s.e., one panel per width, with
    ``curve`` (a curve variable, or "zero") as the oracle's line."""
    import matplotlib.pyplot as plt

    fig, axes, widths = _panels(comp)
    X = json.loads(comp.attrs["inputs"])
    vals, errs = _values(comp, n)
    steps = comp["step"].values.astype(float)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, (ax, w) in enumerate(zip(axes, widths, strict=True)):
        for a in range(len(X)):
            c = colors[a % len(colors)]
            ax.errorbar(steps, vals[:, j, a], yerr=2 * errs[:, j, a], fmt="o", ms=3,
                        capsize=2, color=c, label=_input_label(X[a]))
            if curve != "zero" and curve in comp:
                ax.plot(comp["curve_step"].values, comp[curve].values[:, a], "-", lw=1,
                        color=c, alpha=0.7)
        if curve == "zero":
            ax.axhline(0.0, color="0.3", lw=1)
        _step_axis(ax, steps.max())
        ax.set_ylabel(ylabel)
        ax.set_title(f"N = {int(w)}, {int(comp['n_nets'].values[j]):,} networks", fontsize=9)
        ax.legend(fontsize=6)
    fig.suptitle(title + ("" if curve == "zero" or curve in comp
                          else " (no infinite-width oracle for this training)"), fontsize=10)
    return fig


def figures(out, plan: dict, runs=None) -> dict:
    """``{file name: maker}`` of the section's figures (none without a ``[train]`` block);
    ``runs`` as in :func:`summary`."""
    found = _read(out, plan, runs)
    if found is None:
        return {}
    _, comp, flow = found
    makers = {
        FIGURES[0]: lambda: _against_step(
            comp, 1, "mu_curve", "κ₁ = E[f_t(x)]",
            "(a) learned 1-pt function (± 2 s.e.) and the oracle's mean μ_t (lines)"),
        FIGURES[1]: lambda: _against_step(
            comp, 2, "var_curve", "κ₂(x, x)",
            "(b) connected 2-pt function (± 2 s.e.) and the oracle's Σ_t(x, x) (lines)"),
        FIGURES[2]: lambda: _against_step(
            comp, 3, "zero", "κ₃(x, x, x) / κ₂(x, x)^3/2",
            "(c) connected 3-pt function, standardised (± 2 s.e.): zero at t = 0 and as "
            "N → ∞"),
    }
    if FLOW_IMPLEMENTATION != "none":
        makers[FLOW_FIGURES[0]] = lambda: _couplings_figure(flow)
        makers[FLOW_FIGURES[1]] = lambda: _symmetry_figure(flow)
    return makers


def _not_computed(flow, what: str):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 2.5))
    ax.text(0.5, 0.5, f"{what}: not computed\n{flow.attrs.get('reason', '')}", ha="center",
            va="center", wrap=True, fontsize=8, transform=ax.transAxes)
    ax.set_axis_off()
    return fig


def _couplings_figure(flow):
    """(d): each coupling's median and band against the step, one panel per coupling."""
    import matplotlib.pyplot as plt

    if not _flow_computed(flow):
        return _not_computed(flow, "couplings along training")
    names = [str(c) for c in flow["coupling"].values]
    fig, axes = plt.subplots(1, len(names), figsize=(4.4 * len(names), 3.5), squeeze=False,
                             constrained_layout=True)
    steps = flow["step"].values.astype(float)
    for ax, name in zip(axes[0], names, strict=True):
        for w in flow["width"].values:
            sel = {"coupling": name, "width": w}
            ax.plot(steps, flow["coupling_median"].sel(sel).values, "o-", ms=3,
                    label=f"N = {int(w)}")
            ax.fill_between(steps, flow["coupling_lower"].sel(sel).values,
                            flow["coupling_upper"].sel(sel).values, alpha=0.25)
        _step_axis(ax, steps.max())
        ax.set_ylabel(name)
        ax.legend(fontsize=6)
    # Files written before band_label existed kept the label in "band".
    label = flow.attrs.get("band_label", flow.attrs.get("band", "band"))
    fig.suptitle(f"(d) couplings along training ({label})", fontsize=10)
    return fig


def _symmetry_figure(flow):
    """(e): the p-value of the f -> -f test against the step, the level as a line."""
    import matplotlib.pyplot as plt

    if not _flow_computed(flow):
        return _not_computed(flow, "f -> -f along training")
    fig, ax = plt.subplots(figsize=(5, 3.5), constrained_layout=True)
    steps = flow["step"].values.astype(float)
    for w in flow["width"].values:
        ax.plot(steps, flow["symmetry_p_value"].sel(width=w).values, "o-", ms=3,
                label=f"N = {int(w)}")
    ax.axhline(float(flow.attrs.get("alpha", 0.05)), color="tab:red", lw=1,
               label="level α")
    ax.set_yscale("log")
    _step_axis(ax, steps.max())
    ax.set_ylabel("p-value of f -> -f")
    ax.legend(fontsize=6)
    fig.suptitle("(e) the f -> -f test along training (below α: broken)", fontsize=10)
    return fig


# ---------------------------------------------------------------------------------------------
# the section
# ---------------------------------------------------------------------------------------------
def _f(x, spec=".3g") -> str:
    return "–" if x is None or not np.isfinite(x) else format(x, spec)


#: How the section names each optimiser (nngp_ppl.training.trainer.OPTIMIZERS).
OPTIMIZER_NAMES = {"gd": "full-batch gradient descent", "sgd": "optax's sgd (full batch)",
                   "momentum": "optax's sgd with momentum (full batch)",
                   "adam": "optax's adam (full batch)"}


def _setup_sentence(t: dict) -> str:
    """The training as the trained file records it (its ``training`` attribute)."""
    s = t["setup"]
    data = f"the file `{t['data']}`" if t.get("data") else "points given in the study"
    where = ", ".join(_input_label(x) for x in t["inputs"])
    optimizer = OPTIMIZER_NAMES.get(s["optimizer"], s["optimizer"])
    if s["optimizer"] == "momentum":
        optimizer += f", momentum {s['momentum']:g}"
    return (f"The networks of run '{t['key']}' ({t['ensemble']}; seed {t['seed']}, so "
            f"step 0 is the untrained ensemble) were trained at widths "
            f"{', '.join(map(str, t['widths']))} ({', '.join(f'{n:,}' for n in t['n_nets'])}"
            f" networks) on {len(s['y_train'])} points from {data} by {optimizer} "
            f"in the {s['parametrisation']} parametrisation, learning rate "
            f"{s['learning_rate']:g}, loss {s['loss']}; the connected correlators were "
            f"recorded at steps {', '.join(map(str, t['steps']))} at the inputs {where}.")


def _verdict_lines(t: dict) -> list[str]:
    """Sentences on the comparison at the largest width, from the stored |z|."""
    top = max(t["widths"])
    rows = [r for r in t["rows"] if r["width"] == top]
    first, last = rows[0], rows[-1]
    L = []
    if t["has_oracle"]:
        z1 = max(r["max_abs_z1"] for r in rows)
        z2 = max(r["max_abs_z2"] for r in rows)
        within = lambda z: "within" if z <= Z_LIMIT else "beyond"  # noqa: E731
        L.append(f"At the largest width N = {top} the learned 1-pt function is {within(z1)} "
                 f"{Z_LIMIT:g} standard errors of the oracle's mean μ_t at every input and "
                 f"step (largest |z| {z1:.2f}), and the connected 2-pt function is "
                 f"{within(z2)} {Z_LIMIT:g} of Σ_t (largest |z| {z2:.2f}); the learned mean "
                 f"reaches |μ_t| = {_f(last['max_abs_mu'])} at step {last['step']}.")
    bad = sum(r["unusable"] for r in t["rows"])
    if bad:
        L.append(f"{bad} connected-function entries (over all widths and steps) have no "
                 "usable standard error: the trained outputs' spread there is so far below "
                 "their mean that the stored sums (float32 products) cannot resolve it; "
                 "their z is not computed and they are left out of the largest |z|.")
    L.append(f"The connected 3-pt function at N = {top}: largest |κ₃| / s.e. "
             f"{first['max_abs_z3_zero']:.2f} at step {first['step']} and "
             f"{last['max_abs_z3_zero']:.2f} at step {last['step']} (largest |κ₃| "
             f"{_f(first['max_abs_kappa3'])} and {_f(last['max_abs_kappa3'])}).")
    return L + [""]


def section(t: dict | None, table) -> list[str]:
    """Markdown lines of the section (empty without a ``[train]`` block)."""
    if not t:
        return []
    L = ["## 5d. Training: the ensemble along gradient descent", "",
         _setup_sentence(t), "", f"Infinite-width oracle: {t['oracle']}.", ""]
    L += _verdict_lines(t)
    head = ["N", "step", "max \\|κ₁\\|"]
    if t["has_oracle"]:
        head += ["max \\|μ_t\\|", "max \\|κ₁ − μ_t\\| / s.e.", "max \\|κ₂ − Σ_t\\| / s.e."]
    head += ["max \\|κ₃\\|", "max \\|κ₃\\| / s.e."]
    body = []
    for r in t["rows"]:
        row = [r["width"], r["step"], _f(r["max_abs_kappa1"])]
        if t["has_oracle"]:
            row += [_f(r["max_abs_mu"]), _f(r["max_abs_z1"], ".2f"), _f(r["max_abs_z2"], ".2f")]
        body.append(row + [_f(r["max_abs_kappa3"]), _f(r["max_abs_z3_zero"], ".2f")])
    L += table(head, body)
    L += [f"Figures: `{FIGURES[0]}` (a), `{FIGURES[1]}` (b), `{FIGURES[2]}` (c).", ""]
    if t["flow"]["computed"]:
        L += [f"Couplings and the f → −f verdict along training: `{FLOW_FIGURES[0]}` (d), "
              f"`{FLOW_FIGURES[1]}` (e).", ""]
    else:
        L += [f"Couplings with bands and the f → −f verdict along training (figures d, e): "
              f"not computed — {t['flow']['reason']}.", ""]
    return L
