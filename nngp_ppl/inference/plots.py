"""Figures of coupling and β-function posteriors.

matplotlib with the Agg canvas attached to each Figure explicitly: no pyplot, no global
backend switch, nothing shown on screen; save with ``fig.savefig(path)``. (arviz-plots
draws generic posteriors well; these figures need log-cutoff axes, point estimates and
analytic curves on the same panel, which plain matplotlib does with less machinery.)
"""

from __future__ import annotations

import numpy as np

from .._checks import NNGPInputError

__all__ = [
    "plot_coupling_posteriors",
    "plot_running",
    "plot_beta",
]


def _figure(ncols=1, nrows=1, size=(5.0, 3.6)):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _band(ax, x, draws, color, label, prob=(0.5, 0.9)):
    """Median line and central credible bands of draws (..., len(x)) over the sample axes."""
    flat = draws.reshape(-1, draws.shape[-1])
    ax.plot(x, np.nanmedian(flat, axis=0), color=color, label=label)
    for p, alpha in zip(prob, (0.35, 0.18), strict=True):
        lo, hi = np.nanquantile(flat, [(1 - p) / 2, (1 + p) / 2], axis=0)
        ax.fill_between(x, lo, hi, color=color, alpha=alpha, lw=0)


def plot_coupling_posteriors(posterior, points=None, *, coupling: str = "lambda", bins: int = 40):
    """Histogram of the posterior of ``coupling`` at each cutoff (one panel per cutoff,
    widths overlaid), with the point estimates (a table with ``width``, ``cutoff``,
    ``coupling``, ``point`` columns, e.g. from :func:`compare_point_estimates`; default: the
    least-squares estimates stored in the posterior) marked as vertical lines."""
    post = posterior["posterior"].to_dataset()
    if coupling not in post:
        raise NNGPInputError(f"posterior has no variable {coupling!r}")
    cutoffs = post["cutoff"].values
    ncols = min(len(cutoffs), 4)
    nrows = int(np.ceil(len(cutoffs) / ncols))
    fig, axes = _figure(ncols, nrows, size=(3.6, 2.8))
    colors = _colors(len(post["width"]))
    for j, lam_c in enumerate(cutoffs):
        ax = axes.flat[j]
        for i, w in enumerate(post["width"].values):
            d = post[coupling].sel(width=w, cutoff=lam_c).values.ravel()
            ax.hist(d, bins=bins, density=True, histtype="step", color=colors[i], label=f"N={w}")
            for value in _points(posterior, points, coupling, w, lam_c):
                ax.axvline(value, color=colors[i], ls="--", lw=1)
        ax.set_title(f"Λ = {lam_c:g}", fontsize=9)
        ax.set_xlabel(coupling)
    for ax in list(axes.flat)[len(cutoffs):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"posterior of {coupling} (dashed: point estimates)", fontsize=10)
    return fig


def plot_running(posterior, points=None, *, coupling: str = "lambda"):
    """λ(Λ): posterior median and 50/90% bands against the cutoff (log axes on |λ|), one
    colour per width, point estimates as markers."""
    post = posterior["posterior"].to_dataset()
    if coupling not in post:
        raise NNGPInputError(f"posterior has no variable {coupling!r}")
    fig, axes = _figure()
    ax = axes[0, 0]
    cutoffs = post["cutoff"].values
    colors = _colors(len(post["width"]))
    sign = None
    for i, w in enumerate(post["width"].values):
        d = post[coupling].sel(width=w).transpose("chain", "draw", "cutoff").values
        sign = np.sign(np.nanmedian(d)) or 1.0
        _band(ax, cutoffs, sign * d, colors[i], f"N={w}")
        pts = [_points(posterior, points, coupling, w, c) for c in cutoffs]
        xs = [c for c, p in zip(cutoffs, pts, strict=True) for _ in p]
        ys = [sign * v for p in pts for v in p]
        if xs:
            ax.plot(xs, ys, "o", ms=4, mfc="none", color=colors[i])
    ax.set_xscale("log")
    if len(cutoffs) > 1 and np.all(np.sign(post[coupling].median(("chain", "draw")).values)
                                   == (sign or 1.0)):
        ax.set_yscale("log")
    ax.set_xlabel("cutoff Λ")
    ax.set_ylabel(f"{'-' if sign is not None and sign < 0 else ''}{coupling}(Λ)")
    ax.set_title(f"running of {coupling}: posterior bands, point estimates (o)", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def plot_beta(beta, *, coupling: str = "lambda"):
    """Two panels per β-posterior (from :func:`~nngp_ppl.beta_function`): β(Λ) bands for
    ``coupling`` against the cutoff, and the local exponent γ(Λ) = -β/λ with the
    asymptotic posterior of γ (band at the right edge) and the analytic exponent
    (dashed line)."""
    post = beta["posterior"].to_dataset()
    const = beta["constant_data"].to_dataset()
    cutoffs = post["cutoff"].values
    fig, axes = _figure(2, 1)
    colors = _colors(len(post["width"]))
    for i, w in enumerate(post["width"].values):
        b = post["beta"].sel(width=w, coupling=coupling).transpose("chain", "draw", "cutoff")
        _band(axes[0, 0], cutoffs, b.values, colors[i], f"N={w}")
        g = post["gamma_local"].sel(width=w).transpose("chain", "draw", "cutoff").values
        _band(axes[0, 1], cutoffs, g, colors[i], f"N={w}")
        gam = post["gamma"].sel(width=w).values.ravel()
        lo, hi = np.nanquantile(gam, [0.05, 0.95])
        axes[0, 1].axhspan(lo, hi, xmin=0.92, xmax=1.0, color=colors[i], alpha=0.5)
    analytic = float(const["gamma_analytic"])
    axes[0, 1].axhline(analytic, color="k", ls="--", lw=1, label=f"analytic γ = {analytic:g}")
    for ax in axes[0]:
        ax.set_xscale("log")
        ax.set_xlabel("cutoff Λ")
    axes[0, 0].set_ylabel(f"β({coupling}) = d{coupling}/d log Λ")
    axes[0, 1].set_ylabel("γ(Λ) = -β/λ")
    axes[0, 0].legend(fontsize=7)
    axes[0, 1].legend(fontsize=7)
    fig.suptitle("β-function posterior (bands: 50%, 90%; right edge: asymptotic γ)",
                 fontsize=10)
    return fig


def _colors(n):
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(x) for x in np.linspace(0.1, 0.85, max(n, 1))]


def _points(posterior, points, coupling, width, cutoff):
    """Point estimates for one panel: from a comparison table, else the stored least-squares fit."""
    if points is None:
        if "constant_data" not in posterior.children:
            return []
        pe = posterior["constant_data"].to_dataset().get("point_estimate")
        if pe is None:
            return []
        return [float(pe.sel(width=width, cutoff=cutoff, coupling=coupling))]
    sel = points[
        (points["coupling"] == coupling)
        & (points["width"] == int(width))
        & np.isclose(points["cutoff"].astype(float), float(cutoff))
    ]
    return [float(v) for v in sel["point"]]
