"""The figures of a study's report, drawn from the stored files (see :data:`FIGURES`).

Each ``fig_*`` takes the runs of :func:`~nngp_ppl.study.report.files.study_runs` and returns a
matplotlib ``Figure`` with an Agg canvas (no pyplot state); a figure whose kind of run the
study lacks (see ``--only``) is a placeholder saying so. Nothing is recomputed: the curves
are the exact file's, the points the fit, posterior and β files'. A run without an exact
oracle (no exact file) gets what exists — sampled points, posteriors — and an empty legend
entry saying that its exact curve is missing, so the absence is visible, not silent.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np

from ..._io import atomic_path
from ..._progress import bar
from . import second_order, symmetry, training
from .files import StudyRuns, deviation, nearest, six_point, study_runs
from .summary import orders_text, six_point_summary

__all__ = [
    "FIGURES",
    "fig_deviation",
    "fig_connected",
    "fig_lambda",
    "fig_beta",
    "fig_rg_dimension",
    "fig_six_point",
    "fig_posterior_vs_point",
    "make_figures",
]

#: File names of the figures, in report order.
FIGURES = (
    "deviation_vs_width.png",
    "connected_vs_width.png",
    "lambda_vs_cutoff.png",
    "beta_function.png",
    "rg_dimension.png",
    "six_point.png",
    "posterior_vs_point.png",
)

_DPI = 110


def _figure(ncols, nrows, size=(4.2, 3.4)):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI)
    return path


def _suptitle(fig, text: str, fontsize: float = 11) -> None:
    """The figure's title, wrapped to the figure's width: a study with one run has narrow
    figures, where a one-line title would be cut off at both edges."""

    # An average glyph of DejaVu Sans is about 0.55 em wide; keep a margin of one em.
    chars = max(20, int(fig.get_figwidth() * 72 / (0.55 * fontsize)) - 2)
    fig.suptitle(textwrap.fill(text, chars), fontsize=fontsize)


def _analytic_text(runs) -> str:
    """'label γ = value' for each run, from its fit file's ``gamma_analytic``."""
    seen = {}
    for run in runs:
        fit = run.fit(run.spec["propagators"][0])
        seen.setdefault(f"{run.label}, d_in = {run.spec['d_in']}",
                        float(fit.attrs["gamma_analytic"]))
    return "; ".join(f"{k}: γ = {v:g}" for k, v in seen.items())


def _by_role(runs, *roles):
    return [r for r in runs if r.spec["role"] in roles]


def _placeholder(title: str):
    """A figure saying that the study has no runs of the kind the figure shows."""
    fig, axes = _figure(1, 1, size=(5.0, 2.0))
    ax = axes[0, 0]
    ax.set_axis_off()
    ax.text(0.5, 0.5, f"{title}:\nno run of this kind in this study (see --only)",
            ha="center", va="center", fontsize=10)
    return fig


def _grid(n, size):
    """A near-square grid of n panels (two columns from four panels on); spare ones hidden."""
    ncols = n if n <= 3 else 2
    nrows = -(-n // ncols)
    fig, axes = _figure(ncols, nrows, size=size)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)[:n]


def _no_exact_entry(ax, color, what="exact curve"):
    """A legend entry with nothing drawn: the run has no exact oracle, so no ``what``."""
    ax.plot([], [], "-", color=color, alpha=0.0, label=f"{what}: none (no exact oracle)")


def _width_ticks(ax, widths):
    """Label a log width axis at the widths themselves (few widths: no minor clutter)."""
    from matplotlib.ticker import NullFormatter

    widths = sorted({int(w) for w in widths})
    ax.set_xticks(widths)
    ax.set_xticklabels([str(w) for w in widths])
    ax.xaxis.set_minor_formatter(NullFormatter())
    lo, hi = min(widths), max(widths)
    ax.set_xlim(lo / 1.5, hi * 1.5)


def fig_deviation(runs) -> object:
    """m_4 and m_6 against N: sampled, exact, statistical background (log-log)."""
    main = _by_role(runs, "main")
    if not main:
        return _placeholder("m_n against N")
    fig, axes = _figure(len(main), 2)
    for j, run in enumerate(main):
        dev = deviation(run)
        ex = run.exact
        for i, n in enumerate((4, 6)):
            ax = axes[i, j]
            if ex is None:
                _no_exact_entry(ax, run.color)
            else:
                ax.plot(ex["curve_width"].values, ex[f"m{n}_exact"].values, "-",
                        color=run.color, label="exact (finite-width oracle)")
            ax.plot(dev["widths"], dev[f"m{n}_sampled"], "o", color=run.color, ms=6,
                    label=f"sampled ({dev['n_nets'][0]:.0e} nets)")
            ax.plot(dev["widths"], dev[f"m{n}_background"], "x--", color="0.45", lw=1,
                    label="statistical background")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("width N")
            ax.set_ylabel(rf"$m_{n}$ = ⟨|G$_{n}$ − G$_{{{n},GP}}$| / |G$_{{{n},GP}}$|⟩")
            ax.set_title(run.label, fontsize=10)
            ax.grid(True, which="major", alpha=0.3)
        axes[0, j].legend(fontsize=7)
    _suptitle(fig, "Deviation from the GP against width (slope −1: the 4-pt cumulant ∝ 1/N)")
    return fig


def fig_connected(runs) -> object:
    """Connected 4- and 6-pt functions against N with the 1/N and 1/N² laws."""
    main = _by_role(runs, "main")
    if not main:
        return _placeholder("connected correlators against N")
    fig, axes = _figure(len(main), 1, size=(4.4, 3.8))
    styles = {4: ("tab:purple", r"$c_4$ (connected 4-pt)"), 6: ("tab:orange",
                                                                 r"$c_6$ (connected 6-pt)")}
    for j, run in enumerate(main):
        ax = axes[0, j]
        dev = deviation(run)
        ex = run.exact
        for n, power in ((4, 1), (6, 2)):
            color, name = styles[n]
            if ex is None:
                # The guides then hang from the sampled points, the only curve there is.
                wc = np.asarray(dev["widths"], float)
                ce = np.abs(np.asarray(dev[f"c{n}_sampled"], float))
                _no_exact_entry(ax, color, f"{name}, exact")
            else:
                wc = ex["curve_width"].values.astype(float)
                ce = ex[f"c{n}_exact"].values
                ax.plot(wc, ce, "-", color=color, label=f"{name}, exact")
            ax.plot(dev["widths"], dev[f"c{n}_sampled"], "o", color=color, mfc="none",
                    label=f"{name}, sampled")
            ax.plot(dev["widths"], dev[f"m{n}_background"], "x:", color=color, lw=1,
                    label=f"background ⟨δG$_{n}$⟩/|G$_{{{n},GP}}$|")
            seg = wc[wc >= wc[-1] / 20]  # a guide over the last decade and a bit
            ref = 3 * ce[-1] * (seg / seg[-1]) ** (-power)
            ax.plot(seg, ref, "--", color=color, lw=1)
            at = 0 if n == 4 else len(seg) // 2  # labels apart: no overlap
            ax.annotate(rf"$\propto N^{{-{power}}}$", (seg[at], ref[at]), fontsize=9,
                        color=color, xytext=(-4 if n == 4 else 2, 4),
                        textcoords="offset points", ha="right" if n == 4 else "left")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("width N")
        ax.set_ylabel(r"$c_n$ = ⟨|κ$_n$| / |G$_{n,GP}$|⟩")
        ax.set_title(run.label, fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    _suptitle(fig, "Connected correlators: κ₄ ∝ 1/N, κ₆ ∝ 1/N² (dashed guides, offset ×3)")
    return fig


def _signed_errorbar(ax, x, draws, color, label, marker="s"):
    """Median and 90% interval of ``draws`` (S, len(x)) with their signs (symlog axes);
    returns the lowest interval end."""
    lo, med, hi = np.nanquantile(draws, [0.05, 0.5, 0.95], axis=0)
    ax.errorbar(x, med, yerr=[med - lo, hi - med], fmt=marker, color=color, ms=5, capsize=3,
                label=label)
    return float(np.nanmin(lo))


def _symlog_floor(ax, lowest: float):
    """Show the negative half of a symlog axis only as far as something drawn reaches it."""
    ax.set_ylim(bottom=0.0 if lowest >= 0 else 3.0 * lowest)


def fig_lambda(runs, six_point_cutoff) -> object:
    """λ against Λ at the NGP width: per-tuple λ_t, λ̄ (sampled, exact), posterior bands."""
    shown = _by_role(runs, "main", "sigma_b")
    if not shown:
        return _placeholder("the d_in = 1 runs")
    fig, axes = _grid(len(shown), size=(5.4, 4.3))
    for ax, run in zip(axes, shown, strict=True):
        width = run.infer_width(run.spec["ngp_width"])
        fit = run.fit(run.spec["propagators"][0])
        cut = fit["cutoff"].values
        lt = fit["lambda_tuple"].sel(width=width).values  # (C, T)
        sign = -1.0 if np.nanmedian(fit["lambda_mean"].sel(width=width).values) < 0 else 1.0
        for t in range(lt.shape[1]):
            ax.plot(cut, np.abs(lt[:, t]), "-", color="0.6", lw=0.5, alpha=0.35,
                    label=r"|λ$_t$| per 4-tuple (sampled)" if t == 0 else None)
        ax.plot(cut, np.abs(fit["lambda_mean"].sel(width=width).values), "-", color="k",
                lw=1.8, label=r"|λ̄| sampled")
        if run.has_exact:
            ex = run.exact["lambda_mean_exact"].sel(propagator=run.spec["propagators"][0],
                                                     width=width).values
            ax.plot(cut, np.abs(ex), "--", color="tab:orange", lw=1.5,
                    label=r"|λ̄| exact G$_4$")
        else:
            # The symlog scale below is then set by the sampled λ̄.
            ex = fit["lambda_mean"].sel(width=width).values
            _no_exact_entry(ax, "tab:orange", r"|λ̄| exact G$_4$")
        post = run.posterior["posterior"].to_dataset()
        pc = post["cutoff"].values
        d = sign * post["lambda"].sel(width=width).transpose("chain", "draw", "cutoff").values
        lowest = _signed_errorbar(ax, pc, d.reshape(-1, len(pc)), run.color,
                                  "posterior median, 90% interval")
        gamma = float(fit.attrs["gamma_analytic"])
        anchor = np.abs(fit["lambda_mean"].sel(width=width).values[-1])
        ax.plot(cut, anchor * (cut / cut[-1]) ** (-gamma), ":", color="tab:red", lw=1.3,
                label=rf"$\Lambda^{{-{gamma:g}}}$ (analytic γ)")
        if "bias_subtracted" in run.spec["propagators"]:
            bs = run.fit("bias_subtracted")
            ax.plot(cut, np.abs(bs["lambda_mean"].sel(width=width).values), "-",
                    color="tab:cyan", lw=1.5, label=r"|λ̄| with K − σ$_b^2$ (analytic γ = "
                    f"{float(bs.attrs['gamma_analytic']):g})")
        ax.set_xscale("log")
        # Signed values on a symmetric-log axis: a posterior that reaches the other sign is
        # drawn there, not folded back as |value|.
        ax.set_yscale("symlog", linthresh=float(np.nanmin(np.abs(ex[ex != 0]))) / 3)
        _symlog_floor(ax, lowest)
        ax.set_xlabel("cutoff Λ")
        ax.set_ylabel(r"$-\lambda(\Lambda)$ (symlog)" if sign < 0
                      else r"$\lambda(\Lambda)$ (symlog)")
        note = ""
        # Read from the data, not the ensemble's name: every tuple's λ_t the same at every
        # cutoff (ReLU-net, σ_b = 0, positive inputs in d_in = 1: f(x) = x·S).
        if lt.shape[1] > 1 and np.allclose(lt, lt[:, :1], rtol=1e-6, atol=0.0):
            note = f"\ndegenerate: λ$_t$ equal, ∝ Λ$^{{-{gamma:g}}}$"
        elif run.spec["role"] == "sigma_b" and run.spec.get("inputs_source") == "paper":
            note = "\nwhat the authors' RG script ran (σ_b = 1)"
        ax.set_title(f"{run.label}, N = {width}{note}", fontsize=9.5)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    _suptitle(fig, "Quartic coupling against the cutoff: point estimates and posteriors")
    return fig


def fig_beta(runs) -> object:
    """β(Λ) and γ(Λ) = -β/λ posteriors with the point estimates and the analytic γ."""
    shown = _by_role(runs, "main", "sigma_b")
    if not shown:
        return _placeholder("the d_in = 1 runs")
    fig, axes = _figure(2, len(shown), size=(5.0, 3.3))
    axes = axes.T  # axes[0, j]: β of run j; axes[1, j]: γ of run j
    for j, run in enumerate(shown):
        width = run.infer_width(run.spec["ngp_width"])
        b = run.beta
        post = b["posterior"].to_dataset()
        pc = post["cutoff"].values
        beta = post["beta"].sel(width=width, coupling="lambda").transpose(
            "chain", "draw", "cutoff").values.reshape(-1, len(pc))
        lam = run.posterior["posterior"]["lambda"].sel(width=width).transpose(
            "chain", "draw", "cutoff").values.reshape(-1, len(pc))
        sign = -1.0 if np.median(lam) < 0 else 1.0
        fit = run.fit(run.spec["propagators"][0])
        cut = fit["cutoff"].values
        ax = axes[0, j]
        point = -sign * fit["beta"].sel(width=width).values
        ax.plot(cut, point, "-", color="k", lw=1.5, label="point estimate dλ̄/d log Λ")
        lowest = _signed_errorbar(ax, pc, -sign * beta, run.color, "posterior, 90%")
        ax.set_xscale("log")
        ax.set_yscale("symlog", linthresh=float(np.nanmin(np.abs(point[point != 0]))) / 3)
        _symlog_floor(ax, min(lowest, float(np.nanmin(point))))
        ax.set_xlabel("cutoff Λ")
        ax.set_ylabel(("−" if sign > 0 else "") + r"$\beta(\Lambda)$ (symlog), "
                      "β = dλ/d log Λ = −γλ")
        ax.set_title(f"{run.label}, N = {width}", fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7)
        ax = axes[1, j]
        g = post["gamma_local"].sel(width=width).transpose("chain", "draw", "cutoff").values
        g = g.reshape(-1, len(pc))
        ax.plot(cut, fit["gamma_local"].sel(width=width).values, "-", color="k", lw=1.5,
                label="point estimate −β/λ̄")
        lo, med, hi = np.nanquantile(g, [0.05, 0.5, 0.95], axis=0)
        ax.errorbar(pc, med, yerr=[med - lo, hi - med], fmt="s", color=run.color, capsize=3,
                    label="posterior, 90%")
        gam = post["gamma"].sel(width=width).values.ravel()
        glo, gmed, ghi = np.nanquantile(gam, [0.05, 0.5, 0.95])
        xr_ = cut[-1] * 3
        ax.errorbar([xr_], [gmed], yerr=[[gmed - glo], [ghi - gmed]], fmt="D", color="tab:purple",
                    capsize=3, label=f"asymptotic γ = {gmed:.3f}")
        analytic = float(b["constant_data"]["gamma_analytic"])
        ax.axhline(analytic, color="tab:red", ls="--", lw=1, label=f"analytic γ = {analytic:g}")
        shown_values = np.concatenate([fit["gamma_local"].sel(width=width).values, lo, hi,
                                       [glo, ghi, analytic]])
        shown_values = shown_values[np.isfinite(shown_values)]
        span = max(shown_values.max() - shown_values.min(), 0.05 * max(1.0, abs(analytic)))
        ax.set_ylim(shown_values.min() - 0.1 * span, shown_values.max() + 0.1 * span)
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.set_xscale("log")
        ax.set_xlabel("cutoff Λ")
        ax.set_ylabel(r"$\gamma(\Lambda) = -\beta/\lambda$")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7)
    _suptitle(fig, "β-function posterior: β = −γ λ; analytic asymptotic γ (physics.md §8): "
              + _analytic_text(shown))
    return fig


def fig_rg_dimension(runs) -> object:
    """γ against d_in: posterior, point estimate and analytic, per ensemble."""
    fig, axes = _figure(1, 1, size=(7.0, 4.2))
    ax = axes[0, 0]
    seen = set()
    if not _by_role(runs, "main", "dim"):
        return _placeholder("γ against d_in")
    # Side by side at each d_in, in the order the study lists its ensembles.
    order = list(dict.fromkeys(r.spec["ensemble"] for r in _by_role(runs, "main", "dim")))
    offsets = {e: 0.12 * (i - (len(order) - 1) / 2) for i, e in enumerate(order)}
    for run in _by_role(runs, "main", "dim"):
        ens, d = run.spec["ensemble"], run.spec["d_in"]
        width = run.infer_width(run.spec["ngp_width"])
        post = run.beta["posterior"].to_dataset()
        gam = post["gamma"].sel(width=width).values.ravel()
        lo, med, hi = np.nanquantile(gam, [0.05, 0.5, 0.95])
        x = d + offsets[ens]
        first = ens not in seen
        seen.add(ens)
        ax.errorbar([x], [med], yerr=[[med - lo], [hi - med]], fmt="s", color=run.color,
                    capsize=3, label=f"{ens}: posterior γ (90%)" if first else None)
        fit = run.fit(run.spec["propagators"][0])
        gf = float(fit["gamma_fit"].sel(width=width))
        ax.plot([x + 0.05], [gf], "o", mfc="none", color=run.color,
                label=f"{ens}: point-estimate slope" if first else None)
        analytic = float(fit.attrs["gamma_analytic"])
        ax.plot([x - 0.06, x + 0.06], [analytic, analytic], "-", color="k", lw=2,
                label="analytic γ" if len(seen) == 1 and first else None)
    ax.set_xlabel(r"input dimension $d_{in}$")
    ax.set_ylabel(r"running exponent γ, λ ∝ Λ$^{-γ}$")
    dims = sorted({r.spec["d_in"] for r in _by_role(runs, "main", "dim")})
    ax.set_xticks(dims)
    ax.set_xlim(min(dims) - 0.6, max(dims) + 0.6)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    ax.set_title("Running exponent against input dimension\n(black bars: each run's "
                 "analytic γ, physics.md §8)", fontsize=9.5)
    return fig


def fig_six_point(runs, cutoff) -> object:
    """6-pt function: experiment against GP and GP + ΔG6(λ) per tuple (relative to GP)."""
    shown = _by_role(runs, "main", "sigma_b")
    if not shown:
        return _placeholder("the d_in = 1 runs")
    fig, axes = _grid(len(shown), size=(5.0, 4.6))
    for ax, run in zip(axes, shown, strict=True):
        p = six_point(run, cutoff)
        scale = np.abs(p["gp"])
        x = (p["experiment"] - p["gp"]) / scale
        xe = p["stderr"] / scale
        yp = (p["point"] - p["gp"]) / scale
        yq = (p["posterior"] - p["gp"]) / scale
        band = np.quantile((p["draws"] - p["gp"]) / scale, [0.05, 0.95], axis=0)
        lo = min(x.min(), yp.min(), yq.min(), 0.0)
        hi = max(x.max(), yp.max(), yq.max(), 0.0)
        pad = 0.08 * (hi - lo if hi > lo else 1.0)
        lim = (lo - pad, hi + pad)
        ax.plot(lim, lim, "--", color="k", lw=1, label="prediction = experiment")
        ax.axhline(0.0, color="0.4", lw=1.2, label="GP (no interaction)")
        ax.errorbar(x, yq, yerr=[yq - band[0], band[1] - yq], fmt="none",
                    ecolor=run.color, alpha=0.3, lw=0.8)
        ax.plot(x, yq, "o", color=run.color, ms=3, label="GP + ΔG₆(posterior λ), 90%")
        ax.plot(x, yp, "x", color="tab:orange", ms=4, label="GP + ΔG₆(λ̄) (paper)")
        typical = float(np.median(xe))
        x0, y0 = lim[1] - 0.05 * (lim[1] - lim[0]) - typical, lim[0] + 0.07 * (lim[1] - lim[0])
        ax.errorbar([x0], [y0], xerr=[typical], fmt="none", ecolor="k", capsize=3, lw=1.2)
        ax.annotate("typical ±1σ of experiment", (x0, y0), xytext=(0, -11),
                    textcoords="offset points", ha="center", fontsize=7)
        ax.set_xlim(lim)
        ax.set_ylim(lim)
        ax.set_xlabel(r"experiment (G$_6$ − G$_{6,GP}$) / |G$_{6,GP}$|")
        ax.set_ylabel(r"prediction (G$_6^{pred}$ − G$_{6,GP}$) / |G$_{6,GP}$|")
        s = six_point_summary(run, cutoff)
        ax.set_title(f"{run.label}, N = {p['width']}, Λ = {cutoff:g}\n"
                     f"m₆: GP {s['m6_gp']:.2e}, GP + ΔG₆(λ̄) {s['m6_eft_point']:.2e} "
                     f"(×{s['improvement_point']:.2f})", fontsize=8.5)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6.5, loc="upper left")
    _suptitle(fig, "6-pt prediction from the 4-pt coupling, one point per distinct 6-tuple")
    return fig


def fig_posterior_vs_point(runs, cutoff) -> object:
    """N·λ(Λ) against N: posterior, λ̄ of the samples, λ̄ of the exact G4, plug-in estimate."""
    shown = _by_role(runs, "main", "sigma_b")
    if not shown:
        return _placeholder("the d_in = 1 runs")
    fig, axes = _grid(len(shown), size=(5.0, 3.9))
    for ax, run in zip(axes, shown, strict=True):
        post = run.posterior["posterior"].to_dataset()
        pc = post["cutoff"].values
        c = float(pc[nearest(pc, cutoff)])
        widths = post["width"].values.astype(int)
        d = post["lambda"].sel(cutoff=c).transpose("chain", "draw", "width").values
        d = d.reshape(-1, len(widths)) * widths[None, :]
        lo, med, hi = np.quantile(d, [0.05, 0.5, 0.95], axis=0)
        ax.errorbar(widths, med, yerr=[med - lo, hi - med], fmt="s", color=run.color,
                    capsize=3, label="posterior median, 90%")
        fit = run.fit(run.spec["propagators"][0])
        fc = fit["cutoff"].values
        jc = nearest(fc, c)
        fw = fit["width"].values.astype(int)
        lm = fit["lambda_mean"].values[:, jc] * fw
        ax.plot(fw * 1.06, lm, "o", mfc="none", color="k", label="λ̄ (paper's estimator)")
        if run.has_exact:
            ex = run.exact["lambda_mean_exact"].sel(propagator=run.spec["propagators"][0])
            ew = ex["width"].values.astype(int)
            ax.plot(ew, ex.values[:, jc] * ew, ".-", color="tab:orange",
                    label="λ̄ of the exact G₄")
        else:
            _no_exact_entry(ax, "tab:orange", "λ̄ of the exact G₄")
        const = run.posterior["constant_data"].to_dataset()
        gls = const["point_estimate"].sel(coupling="lambda", cutoff=c).values * widths
        orders = orders_text(json.loads(run.posterior.attrs["orders"]))
        ax.plot(widths / 1.06, gls, "^", color="tab:gray",
                label=f"plug-in B r̂ ({orders})")
        ax.axhline(0.0, color="0.6", lw=0.8)
        ax.set_xscale("log")
        _width_ticks(ax, np.concatenate([widths, fw]))
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        ax.set_xlabel("width N")
        ax.set_ylabel(rf"N · λ(Λ = {c:g})")
        ax.set_title(run.label, fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6.5)
    _suptitle(fig, "Posterior against point estimates per width (N·λ flat: λ ∝ 1/N)")
    return fig


def make_figures(out, plan: dict, *, runs=None, progress: bool = False) -> list[Path]:
    """Draw every figure of :data:`FIGURES` (where the study has a zero-mean run) and those of
    the second-order, symmetry and training sections into ``out/figures``; returns their paths.
    ``progress``: a bar over the figures on a terminal (:mod:`nngp_ppl._progress`)."""
    out = Path(out)
    runs = study_runs(out, plan) if runs is None else StudyRuns.of(runs)
    cutoff = float(plan["preset"]["six_point_cutoff"])
    makers = {
        "deviation_vs_width.png": lambda: fig_deviation(runs),
        "connected_vs_width.png": lambda: fig_connected(runs),
        "lambda_vs_cutoff.png": lambda: fig_lambda(runs, cutoff),
        "beta_function.png": lambda: fig_beta(runs),
        "rg_dimension.png": lambda: fig_rg_dimension(runs),
        "six_point.png": lambda: fig_six_point(runs, cutoff),
        "posterior_vs_point.png": lambda: fig_posterior_vs_point(runs, cutoff),
    }
    # The figures of the zero-mean runs (the even-coupling sections): none where every
    # run has non-zero means (the report says why).
    names = list(FIGURES) if runs else []
    tested = [*runs, *symmetry.tested_only_runs(out, plan)]
    if any(second_order.files(run) for run in runs):
        makers[second_order.FIGURE] = lambda: second_order.figure(runs)
        names.append(second_order.FIGURE)
    if any(symmetry.summary(run) for run in tested):
        makers[symmetry.FIGURE] = lambda: symmetry.figure(tested)
        names.append(symmetry.FIGURE)
    trained = training.figures(out, plan, runs)  # a study's [train] block
    makers.update(trained)
    names += list(trained)
    paths = []
    with bar(len(names), "report figures", progress) as shown:
        for name in names:
            paths.append(_save(makers[name](), out / "figures" / name))
            shown.update(1)
    return paths
