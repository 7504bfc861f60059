"""The report's second-order section: stored results of a run's second-order stage.

A run of a study with ``order = 2`` has, besides its first-order files, the second-order
posterior of (λ, κ) (:func:`nngp_ppl.infer_couplings` with ``order=2``: its ELPD table
ranks the GP, λ and λ + κ at first and second order on the same data, and stores each
model's couplings), its β-functions, and the connected 6-pt comparison
(:func:`nngp_ppl.inference.connected.connected_six_point`). This module reads them — it computes no
physics — into the summary, draws the connected 6-pt figure and writes the section.
"""

from __future__ import annotations

import json

import numpy as np

from ... import _io

__all__ = [
    "FIGURE",
    "files",
    "summary",
    "figure",
    "section",
]

#: The figure this section adds (drawn only where some run has a second-order stage).
FIGURE = "connected_six_point.png"


def _read(run, name: str, what: str, file_format, version, tree: bool):

    path = run.spec["files"].get(name)
    if not path:
        return None
    return run.cached(name, lambda: _io.read_netcdf(
        run.out / path, name=name, what=what, tree=tree, file_format=file_format,
        version=version))


def files(run):
    """(posterior, β, connected 6-pt) of the run's second-order stage, or None."""

    post = _read(run, "posterior2", "second-order coupling posterior",
                 _io.POSTERIOR_FORMAT, _io.POSTERIOR_VERSION, True)
    if post is None:
        return None
    beta = _read(run, "beta2", "second-order β-function posterior", _io.BETA_FORMAT,
                 _io.BETA_VERSION, True)
    six = _read(run, "sixpoint", "connected 6-pt comparison", _io.SIXPOINT_FORMAT,
                _io.SIXPOINT_VERSION, False)
    return post, beta, six


def summary(run) -> dict | None:
    """Per width and cutoff: each model's couplings (posterior mean, sd) and ELPD, the
    second-order posterior's λ, κ, the λ² share and β; the connected 6-pt table."""
    found = files(run)
    if found is None:
        return None
    post, beta, six = found
    const = post["constant_data"].to_dataset()
    pos = post["posterior"].to_dataset()

    def q(da):
        v = np.asarray(da.values, dtype=float)
        return {"median": np.median(v, axis=(0, 1)).tolist(),
                "q05": np.quantile(v, 0.05, axis=(0, 1)).tolist(),
                "q95": np.quantile(v, 0.95, axis=(0, 1)).tolist()}

    out = {
        "widths": [int(w) for w in pos["width"].values],
        "cutoffs": [float(c) for c in pos["cutoff"].values],
        "estimand": str(post.attrs["estimand"]),
        "models": [str(m) for m in const["model"].values],
        "elpd": const["elpd"].values.tolist(), "elpd_se": const["elpd_se"].values.tolist(),
        "model_couplings": const["model_couplings"].values.tolist(),
        "model_couplings_sd": const["model_couplings_sd"].values.tolist(),
        "lambda": q(pos["lambda"]), "kappa": q(pos["kappa"]),
        "share": q(pos["second_order_share"]),
    }
    if beta is not None:
        b = beta["posterior"].to_dataset()
        out["beta"] = {c: q(b["beta"].sel(coupling=c)) for c in ("lambda", "kappa")}
        out["gamma"] = q(b["gamma"])  # per width
    if six is not None:
        out["six_point"] = {
            "cutoff": float(six.attrs["cutoff"]), "reference": str(six.attrs["reference"]),
            "widths": [int(w) for w in six["width"].values],
            "sources": [str(s) for s in six["source"].values],
            "labels": json.loads(six.attrs["labels"]),
            "rms": six["rms"].values.tolist(), "misfit": six["misfit"].values.tolist(),
            "noise": six["noise"].values.tolist(),
        }
    return out


_STYLE = {  # source -> (marker, linestyle, colour), the same in both panels
    "exact": ("", "-", "black"), "sampled": ("o", "", "0.45"),
    "first_order": ("v", ":", "tab:green"), "exchange": ("^", ":", "tab:red"),
    "exchange_kappa": ("s", ":", "tab:purple"), "contact_fit": ("v", "--", "tab:green"),
    "exchange_exact": ("^", "--", "tab:red"), "exchange_contact_fit": ("s", "--", "tab:purple"),
}


def figure(runs):
    """The connected 6-pt function against N (top: its size; bottom: each description's
    relative misfit), one column per run (:class:`~nngp_ppl.study.report.files.StudyRun`) with a
    second-order stage."""
    import matplotlib.pyplot as plt

    found = [(run.label, summary(run)) for run in runs]
    cols = [(label, so["six_point"]) for label, so in found if so and "six_point" in so]
    fig, axes = plt.subplots(2, max(1, len(cols)), figsize=(4.6 * max(1, len(cols)), 6.4),
                             squeeze=False, constrained_layout=True)
    if not cols:
        for ax in axes.ravel():
            ax.text(0.5, 0.5, "no run with a second-order stage", ha="center", va="center",
                    transform=ax.transAxes)
            ax.set_axis_off()
        return fig
    for c, (label, six) in enumerate(cols):
        top, bottom = axes[0, c], axes[1, c]
        widths = np.asarray(six["widths"])
        rms, misfit = np.asarray(six["rms"], float), np.asarray(six["misfit"], float)
        for s, name in enumerate(six["sources"]):
            marker, ls, color = _STYLE.get(name, ("x", ":", "tab:orange"))
            kw = dict(marker=marker, linestyle=ls, color=color, label=six["labels"][name],
                      ms=4)
            if np.any(np.isfinite(rms[:, s])):
                top.plot(widths, rms[:, s], **kw)
            if np.any(np.isfinite(misfit[:, s])):
                bottom.plot(widths, misfit[:, s], **kw)
        top.plot(widths, six["noise"], color="0.7", lw=0.8,
                 label="noise (rms s.e. of sampled G6)")
        for ax in (top, bottom):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.grid(True, alpha=0.3)
            ax.set_xlabel("width N")
        top.set_title(f"{label}, Λ = {six['cutoff']:g}", fontsize=9)
        top.set_ylabel("rms over tuples of κ6")
        bottom.set_ylabel(f"‖prediction − κ6‖ / ‖κ6‖ ({six['reference']})")
        bottom.axhline(1.0, color="k", lw=0.6)
        top.legend(fontsize=6)
    fig.suptitle("Connected 6-pt function κ6 against N", fontsize=11)
    return fig


def _f(x, spec=".3g") -> str:
    return "–" if x is None or not np.isfinite(x) else format(x, spec)


def section(runs_summary: dict, table) -> list[str]:
    """Markdown lines of the second-order section (empty without a second-order run)."""
    runs = {k: r for k, r in runs_summary.items() if r.get("second_order")}
    if not runs:
        return []
    first = next(iter(runs.values()))["second_order"]
    L = ["## 5b. Second order: the λ² diagrams", "",
         f"Estimand: {first['estimand']}. One NUTS posterior of the noise-free correlators "
         "per width serves every model below; the couplings are each model's posterior mean.",
         ""]
    rows = []
    for r in runs.values():
        so = r["second_order"]
        models = so["models"]
        for i, w in enumerate(so["widths"]):
            for j, c in enumerate(so["cutoffs"]):
                elpd = np.asarray(so["elpd"][i][j], float)
                mc = np.asarray(so["model_couplings"][i][j], float)
                lam1, lam2 = mc[models.index("lambda+kappa"), 0], mc[
                    models.index("lambda+kappa@2"), 0]
                kap1, kap2 = mc[models.index("lambda+kappa"), 1], mc[
                    models.index("lambda+kappa@2"), 1]
                best = models[int(np.nanargmax(elpd))]
                gap = elpd[models.index("lambda+kappa@2")] - elpd[models.index("lambda+kappa")]
                rows.append([r["label"], w, _f(c), _f(lam1), _f(lam2), _f(kap1), _f(kap2),
                             _f(so["share"]["median"][i][j], ".2f"), f"{gap:+.1f}", best])
    L += ["Joint (λ, κ) at first and second order, the λ² term's share of the first-order "
          "prediction (posterior median), and the ELPD gain of second order over first "
          "(positive: second order predicts the correlators better):", ""]
    L += table(["ensemble", "N", "Λ", "λ (1st)", "λ (2nd)", "κ (1st)", "κ (2nd)",
                "λ² share", "ΔELPD 2nd − 1st", "best model"], rows)
    for r in runs.values():
        six = r["second_order"].get("six_point")
        if not six:
            continue
        L += [f"Connected 6-pt function, {r['label']}, Λ = {six['cutoff']:g} (figure "
              f"`{FIGURE}`): rms over the tuples, and each description's misfit relative to "
              f"the {six['reference']} κ6.", ""]
        header = ["source"] + [f"N = {w}" for w in six["widths"]]
        rms, mis = np.asarray(six["rms"], float), np.asarray(six["misfit"], float)
        body = [[six["labels"][s]] + [f"{_f(rms[i, k])} ({_f(mis[i, k], '.2f')})"
                                      for i in range(len(six["widths"]))]
                for k, s in enumerate(six["sources"])]
        body.append(["noise (rms s.e. of sampled G6)"] + [_f(v) for v in six["noise"]])
        L += table(header, body)
    return L
