r"""Figures, ``summary.json`` and ``report.md`` of a reproduction (:mod:`nngp_ppl.reproduce`).

Everything here reads the files the earlier stages wrote; nothing is sampled or fitted
again. :func:`collect_summary` gathers every number the report shows into one plain
dictionary (written as ``summary.json``), :func:`make_figures` draws the PNG figures from
the files, and :func:`render_report` writes the markdown from the summary alone, so that
the report and the JSON cannot disagree.

Quantities (physics.md §3, §7, §8):

* :math:`m_n = \langle |G^{(n)} - G^{(n)}_{GP}| / |G^{(n)}_{GP}| \rangle_t`, sampled and exact
  (:mod:`nngp_ppl.theory.exact`), and its statistical background
  :math:`\langle \delta G^{(n)}_t / |G^{(n)}_{GP}| \rangle_t` with the naive standard error;
* the connected functions :math:`c_n = \langle |\kappa_n| / |G^{(n)}_{GP}| \rangle_t`, with
  :math:`\kappa_4 \propto 1/N` and :math:`\kappa_6 \propto 1/N^2`;
* the couplings :math:`\lambda_t(\Lambda) = -(G_4 - G_{4,GP})_t / (24 I_t)`, their mean
  :math:`\bar\lambda`, the posterior of :math:`\lambda`, the β-function
  :math:`\beta = d\lambda/d\log\Lambda` and the exponent :math:`\gamma = -\beta/\lambda`.

Figures are matplotlib ``Figure`` objects with an Agg canvas (no pyplot state).
"""

from __future__ import annotations

import datetime
import json
import math
import platform
from pathlib import Path

import numpy as np

from ._checks import NNGPInputError
from ._io import atomic_path

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

_COLORS = {"erf": "tab:blue", "relu": "tab:red", "gauss": "tab:green"}
_DPI = 110


# ---------------------------------------------------------------------------------------------
# reading the stage files
# ---------------------------------------------------------------------------------------------
class _Run:
    """The files of one run, loaded lazily."""

    def __init__(self, out: Path, spec: dict):
        self.out, self.spec = out, spec
        self.key = spec["key"]
        self._cache = {}

    def _get(self, name, loader):
        if name not in self._cache:
            self._cache[name] = loader()
        return self._cache[name]

    @property
    def stats(self):
        from .stats import CorrelatorStats

        return self._get("stats", lambda: CorrelatorStats.from_netcdf(
            self.out / self.spec["files"]["run"]))

    @property
    def exact(self):
        import xarray as xr

        return self._get("exact", lambda: xr.load_dataset(
            self.out / self.spec["files"]["exact"], engine="h5netcdf"))

    def fit(self, propagator="full"):
        from . import eft

        files = self.spec["files"]
        return self._get(f"fit_{propagator}", lambda: eft.load_fit(
            self.out / files["fit"][propagator], self.out / files["run"]))

    @property
    def posterior(self):
        from . import _io

        return self._get("posterior", lambda: _io.read_netcdf(
            self.out / self.spec["files"]["posterior"], name="posterior",
            what="coupling posterior", tree=True, file_format=_io.POSTERIOR_FORMAT,
            version=_io.POSTERIOR_VERSION))

    @property
    def beta(self):
        from . import _io

        return self._get("beta", lambda: _io.read_netcdf(
            self.out / self.spec["files"]["beta"], name="beta", what="β-function posterior",
            tree=True, file_format=_io.BETA_FORMAT, version=_io.BETA_VERSION))

    @property
    def net(self):
        return self.stats.net

    @property
    def label(self) -> str:
        return self.spec["label"]

    @property
    def color(self) -> str:
        return _COLORS[self.spec["ensemble"]]

    def infer_width(self, width: int) -> int:
        """``width`` if it has a posterior, else the closest width that has one."""
        widths = [int(w) for w in self.posterior["posterior"]["width"].values]
        return min(widths, key=lambda w: (abs(math.log(w / width)), w))


def _runs(out: Path, plan: dict) -> list[_Run]:
    return [_Run(out, spec) for spec in plan["runs"]]


# ---------------------------------------------------------------------------------------------
# numbers
# ---------------------------------------------------------------------------------------------
def _clean(obj):
    """JSON-ready copy: numpy scalars and arrays to Python, NaN and inf to None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return x if math.isfinite(x) else None
    return obj


def _loglog_slope(x, y) -> float:
    from .eft import log_slope

    x, y = np.log(np.asarray(x, float)), np.log(np.abs(np.asarray(y, float)))
    return float(log_slope(x, y)[0])


def _deviation_summary(run: _Run) -> dict:
    """m_n and c_n per sampled width: sampled, exact, statistical background."""
    return run._get("deviation", lambda: _deviation(run))


def _deviation(run: _Run) -> dict:
    from .stats import normalised_deviation
    from .theory.wick import connected_correlator_tuples, gp_correlator_tuples

    stats, ex = run.stats, run.exact
    X = stats.X
    K = np.asarray(stats.net.kernel(X))
    gp = {n: gp_correlator_tuples(K, n) for n in (4, 6)}
    out = {"widths": list(stats.widths), "n_nets": [stats.n_nets(w) for w in stats.widths]}
    curve = [int(w) for w in ex["curve_width"].values]
    for n in (4, 6):
        sampled, background, conn = [], [], []
        for w in stats.widths:
            G = stats.correlator_tuples(n, w)
            sampled.append(normalised_deviation(G, gp[n]))
            background.append(normalised_deviation(gp[n] + stats.stderr_tuples(n, w), gp[n]))
            moments = {m: stats.correlator_tuples(m, w) for m in (2, 4, 6)}
            kappa = connected_correlator_tuples(moments, n, stats.k)
            conn.append(float(np.mean(np.abs(kappa) / np.abs(gp[n]))))
        out[f"m{n}_sampled"], out[f"m{n}_background"] = sampled, background
        out[f"c{n}_sampled"] = conn
        exact = {int(w): v for w, v in zip(curve, ex[f"m{n}_exact"].values, strict=True)}
        cexact = {int(w): v for w, v in zip(curve, ex[f"c{n}_exact"].values, strict=True)}
        out[f"m{n}_exact"] = [exact[w] for w in stats.widths]
        out[f"c{n}_exact"] = [cexact[w] for w in stats.widths]
        out[f"m{n}_z"] = [(s - e) / b for s, e, b in
                          zip(sampled, out[f"m{n}_exact"], background, strict=True)]
    return out


def _exact_summary(run: _Run) -> dict:
    ex = run.exact
    widths = [int(w) for w in ex["curve_width"].values]
    out = {"widths": widths}
    large = [i for i, w in enumerate(widths) if w >= 10]
    for q in ("m4", "m6", "c4", "c6"):
        vals = ex[f"{q}_exact"].values
        out[q] = vals.tolist()
        if len(large) >= 2:
            out[f"{q}_slope"] = _loglog_slope(np.asarray(widths)[large], vals[large])
    return out


def _fit_summary(run: _Run) -> dict:
    out = {}
    ex = run.exact
    for p in run.spec["propagators"]:
        fit = run.fit(p)
        cut = fit["cutoff"].values
        names = [str(c) for c in fit["coupling"].values]
        entry = {
            "widths": [int(w) for w in fit["width"].values],
            "cutoffs": cut.tolist(),
            "lambda_mean": fit["lambda_mean"].values,
            "lambda_mean_exact": ex["lambda_mean_exact"].sel(propagator=p).values,
            "beta": fit["beta"].values,
            "gamma_local": fit["gamma_local"].values,
            "gamma_fit": fit["gamma_fit"].values,
            "gamma_fit_stderr": fit["gamma_fit_stderr"].values,
            "gamma_analytic": float(fit.attrs["gamma_analytic"]),
            "m6_gp": fit["m6_gp"].values,
            "m6_eft": fit["m6_eft"].values,
            "improvement6": fit["improvement6"].values,
        }
        for c, name in enumerate(names):
            entry[f"wls_{name}"] = fit["fit"].values[..., c]
            entry[f"wls_{name}_stderr"] = fit["fit_stderr"].values[..., c]
        with np.errstate(divide="ignore", invalid="ignore"):
            exact_gamma = []
            lam_ex = entry["lambda_mean_exact"]
            for i in range(lam_ex.shape[0]):
                exact_gamma.append(-_loglog_slope(cut, lam_ex[i]) if len(cut) > 1 else None)
        entry["gamma_fit_exact"] = exact_gamma
        out[p] = entry
    return out


def _gate_summary(run: _Run) -> dict:
    from .inference import diagnostics_gate

    gate = diagnostics_gate(run.posterior, warn=False)
    t = gate.table
    coupling_rows = t[t["variable"] == "lambda"]
    return {
        "passed": bool(gate.passed),
        "n_posteriors": int(len(coupling_rows)),
        "n_failed": int(len(gate.failures)),
        "failures": [[int(f[0]), float(f[1])] for f in gate.failures],
        "max_r_hat": float(np.nanmax(t["r_hat"].values)),
        "min_ess_bulk": float(np.nanmin(t["ess_bulk"].values)),
        "min_ess_tail": float(np.nanmin(t["ess_tail"].values)),
        "divergences": int(coupling_rows["divergences"].sum()),
    }


def _posterior_summary(run: _Run) -> dict:
    """The posterior's couplings beside the exact estimand, its settings read from the file."""
    dt = run.posterior
    post = dt["posterior"].to_dataset()
    const = dt["constant_data"].to_dataset()
    attrs = dt.attrs
    lam = post["lambda"].transpose("chain", "draw", "width", "cutoff").values
    flat = lam.reshape(-1, *lam.shape[2:])
    spread = post["spread"].transpose("chain", "draw", "width", "cutoff").values
    widths = [int(w) for w in post["width"].values]
    cutoffs = [float(c) for c in post["cutoff"].values]
    propagator = str(attrs.get("propagator", "full"))
    # The estimand on the exact correlators, from the exact-summary file of the run.
    ex = run.exact["lambda_mean_exact"].sel(propagator=propagator)
    exact = np.array([[float(ex.sel(width=w).values[_idx(ex["cutoff"].values.tolist(), c)])
                       for c in cutoffs] for w in widths])
    q05, q50, q95 = np.quantile(flat, [0.05, 0.5, 0.95], axis=0)
    mean, sd = flat.mean(axis=0), flat.std(axis=0, ddof=1)
    out = {
        "widths": widths,
        "cutoffs": cutoffs,
        "propagator": propagator,
        "orders": json.loads(attrs["orders"]),
        "data_orders": json.loads(attrs["data_orders"]),
        "couplings": json.loads(attrs["couplings"]),
        "noise": str(attrs["covariance"]),
        "likelihood": str(attrs["likelihood"]),
        "estimand": str(attrs["estimand"]),
        "lambda_mean": mean,
        "lambda_sd": sd,
        "lambda_q05": q05,
        "lambda_median": q50,
        "lambda_q95": q95,
        "lambda_exact": exact,
        "z_exact": (mean - exact) / sd,
        "exact_inside90": (q05 <= exact) & (exact <= q95),
        "plugin": const["point_estimate"].sel(coupling="lambda").values,
        "plugin_sd": const["point_sd"].sel(coupling="lambda").values,
        "spread_median": np.median(spread.reshape(-1, *spread.shape[2:]), axis=0),
        "gate": _gate_summary(run),
    }
    if "elpd" in const:
        out["elpd_models"] = [str(m) for m in const["model"].values]
        out["elpd"] = const["elpd"].values
        out["elpd_se"] = const["elpd_se"].values
    return out


def _beta_summary(run: _Run) -> dict:
    b = run.beta
    post = b["posterior"].to_dataset()
    const = b["constant_data"].to_dataset()

    def q(name, *dims):
        v = post[name].transpose("chain", "draw", *dims).values
        flat = v.reshape(-1, *v.shape[2:])
        return np.nanquantile(flat, [0.05, 0.5, 0.95], axis=0), np.nanstd(flat, axis=0)

    (g05, g50, g95), gsd = q("gamma", "width")
    (d05, d50, d95), dsd = q("gamma_data", "width")
    (s05, s50, s95), ssd = q("gamma_slope", "width")
    beta = post["beta"].sel(coupling="lambda").transpose("chain", "draw", "width", "cutoff")
    b05, b50, b95 = np.nanquantile(
        beta.values.reshape(-1, post.sizes["width"], post.sizes["cutoff"]), [0.05, 0.5, 0.95],
        axis=0)
    return {
        "widths": [int(w) for w in post["width"].values],
        "cutoffs": [float(c) for c in post["cutoff"].values],
        "reference_cutoff": float(b.attrs["reference_cutoff"]),
        "interval_sources": json.loads(b.attrs["interval_sources"]),
        "gamma_analytic": float(const["gamma_analytic"]),
        "gamma_q05": g05, "gamma_median": g50, "gamma_q95": g95, "gamma_sd": gsd,
        "gamma_data_q05": d05, "gamma_data_median": d50, "gamma_data_q95": d95,
        "gamma_data_sd": dsd,
        "gamma_slope_median": s50, "gamma_slope_sd": ssd,
        "gamma_systematic": const["gamma_systematic"].values,
        "converged": const["converged"].values.astype(bool),
        "beta_q05": b05, "beta_median": b50, "beta_q95": b95,
    }


def _six_point_summary(run: _Run, cutoff: float) -> dict:
    """The 6-pt check at the run's NGP width and ``cutoff``: GP, GP + ΔG6(λ), experiment."""
    pred = _six_point_predictions(run, cutoff)
    g6, gp, se = pred["experiment"], pred["gp"], pred["stderr"]

    def m6(p):
        return float(np.mean(np.abs(g6 - p) / np.abs(gp)))

    m_gp = m6(gp)
    m_point, m_post = m6(pred["point"]), m6(pred["posterior"])
    return {
        "width": pred["width"], "cutoff": cutoff,
        "lambda_mean_point": pred["lambda_point"], "lambda_posterior_mean": pred["lambda_post"],
        "m6_gp": m_gp, "m6_eft_point": m_point, "m6_eft_posterior": m_post,
        "improvement_point": m_gp / m_point, "improvement_posterior": m_gp / m_post,
        "m6_background": float(np.mean(se / np.abs(gp))),
    }


def _six_point_predictions(run: _Run, cutoff: float) -> dict:
    return run._get(f"six_point_{cutoff!r}", lambda: _six_point(run, cutoff))


def _six_point(run: _Run, cutoff: float) -> dict:
    """GP + ΔG6(λ) from the posterior file's own design, observed data and draws, and the
    point estimate λ̄ of the fit file: nothing is recomputed."""
    dt = run.posterior
    const = dt["constant_data"].to_dataset()
    obs = dt["observed_data"].to_dataset()
    if "design6" not in const:
        raise NNGPInputError("the posterior was not conditioned on the 6-pt function; the "
                             "6-pt check needs runs sampled with order 6")
    width = run.infer_width(run.spec["ngp_width"])
    post = dt["posterior"].to_dataset()
    cut = post["cutoff"].values
    c = float(cut[np.argmin(np.abs(cut - cutoff))])
    design = const["design6"].sel(cutoff=c, coupling="lambda").values
    gp = const["G6_gp"].values
    fit = run.fit(str(dt.attrs.get("propagator", "full")))
    fcut = fit["cutoff"].values
    lam_point = float(fit["lambda_mean"].sel(width=width).values[
        int(np.argmin(np.abs(fcut - c)))])
    draws = post["lambda"].sel(width=width, cutoff=c).values.ravel()
    lam_post = float(draws.mean()) if np.isclose(c, cutoff) else float("nan")
    return {
        "width": width, "gp": gp, "experiment": obs["G6"].sel(width=width).values,
        "stderr": obs["G6_se"].sel(width=width).values, "point": gp + lam_point * design,
        "posterior": gp + lam_post * design, "lambda_point": lam_point,
        "lambda_post": lam_post, "draws": gp[None, :] + draws[:, None] * design[None, :],
    }


def collect_summary(out, plan: dict, timings: dict | None = None, *, warnings=None,
                    runs=None) -> dict:
    """Every number the report shows, as a JSON-ready dict (see the module docstring)."""
    import jax

    from . import __version__

    out = Path(out)
    preset = plan["preset"]
    runs = _runs(out, plan) if runs is None else runs
    summary = {
        "title": "nngp_ppl reproduction of Halverson, Maiti, Stoner, arXiv:2008.08601",
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "nngp_ppl_version": __version__,
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "jax": jax.__version__,
                    "devices": [str(d) for d in jax.devices()]},
        "preset": preset,
        "conventions": conventions(),
        "runs": {},
        "timings_s": timings or {},
        "warnings": warnings or {},
    }
    for run in runs:
        entry = {k: run.spec[k] for k in ("label", "ensemble", "sigma_b", "d_in", "role",
                                          "widths", "infer_widths", "ngp_width", "inputs",
                                          "propagators")}
        entry["n_nets"] = int(preset["n_nets"])
        entry["deviation"] = _deviation_summary(run)
        entry["exact_curve"] = _exact_summary(run)
        entry["fit"] = _fit_summary(run)
        entry["posterior"] = _posterior_summary(run)
        entry["beta"] = _beta_summary(run)
        entry["six_point"] = _six_point_summary(run, float(preset["six_point_cutoff"]))
        summary["runs"][run.key] = entry
    return _clean(summary)


def conventions() -> dict:
    """The conventions every number of the report uses (physics.md §5–§8)."""
    from .inference.diagnostics import ESS_MIN, RHAT_MAX

    return {
        "action": "P[f] ~ exp(-S), S = S_GP + int_[-L,L]^d_in (lambda f^4 + kappa f^6) dy, "
                  "unit coefficients (no 1/4!)",
        "sign": "lambda < 0 means heavier-than-Gaussian tails; finite-width nets give "
                "lambda < 0",
        "propagator": "vertex legs carry the full kernel K (posteriors and main point fits); "
                      "Gauss-net is also fitted with K - sigma_b^2 (the paper's revised "
                      "EFT, 'bias_subtracted')",
        "rule_4_5": "diagrams in which the vertex corrects the 2-pt function are dropped (K "
                    "is the exact 2-pt function at every width)",
        "per_tuple_coupling": "lambda_t = -(G4_exp - G4_GP)_t / (24 int_box prod_a K(x_a,y) "
                              "dy); lambda_bar = mean over the distinct 4-tuples",
        "cutoffs": "vertex integrals over the box [-L, L]^d_in by composite Gauss-Legendre "
                   "quadrature (nngp_ppl.theory.lattice)",
        "posterior_model": "the noise-free deviations r = G - G_GP are latent, the sampled "
                           "correlators are r plus the noise of a mean over n_nets networks; "
                           "the coupling at each cutoff is the declared estimand B(L) r "
                           "(nngp_ppl.problem); the noise model and the orders are read "
                           "from each posterior file (section 2)",
        "diagnostics_gate": f"R-hat <= {RHAT_MAX}, bulk ESS >= {ESS_MIN}, no divergences, "
                            "for every width and cutoff",
        "m_n": "<|G_n - G_n,GP| / |G_n,GP|> over the distinct tuples; background "
               "<stderr / |G_n,GP|>",
        "c_n": "<|kappa_n| / |G_n,GP|> over the distinct tuples (connected n-pt function)",
    }


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------
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
        dev = _deviation_summary(run)
        ex = run.exact
        for i, n in enumerate((4, 6)):
            ax = axes[i, j]
            ax.plot(ex["curve_width"].values, ex[f"m{n}_exact"].values, "-", color=run.color,
                    label="exact (finite-width oracle)")
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
    fig.suptitle("Deviation from the GP against width (slope −1: the 4-pt cumulant ∝ 1/N)",
                 fontsize=11)
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
        dev = _deviation_summary(run)
        ex = run.exact
        wc = ex["curve_width"].values.astype(float)
        for n, power in ((4, 1), (6, 2)):
            color, name = styles[n]
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
    fig.suptitle("Connected correlators: κ₄ ∝ 1/N, κ₆ ∝ 1/N² (dashed guides, offset ×3)",
                 fontsize=11)
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
        ex = run.exact["lambda_mean_exact"].sel(propagator=run.spec["propagators"][0],
                                                 width=width).values
        ax.plot(cut, np.abs(ex), "--", color="tab:orange", lw=1.5, label=r"|λ̄| exact G$_4$")
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
                    color="tab:cyan", lw=1.5, label=r"|λ̄| with K − σ$_b^2$ (γ → 0)")
        ax.set_xscale("log")
        # Signed values on a symmetric-log axis: a posterior that reaches the other sign is
        # drawn there, not folded back as |value|.
        ax.set_yscale("symlog", linthresh=float(np.nanmin(np.abs(ex[ex != 0]))) / 3)
        _symlog_floor(ax, lowest)
        ax.set_xlabel("cutoff Λ")
        ax.set_ylabel(r"$-\lambda(\Lambda)$ (symlog)" if sign < 0
                      else r"$\lambda(\Lambda)$ (symlog)")
        note = ""
        if run.spec["ensemble"] == "relu" and run.spec["sigma_b"] == 0 and run.spec["d_in"] == 1:
            note = "\ndegenerate: f(x) = x·S, λ$_t$ equal, ∝ Λ$^{-5}$"
        elif run.spec["role"] == "sigma_b":
            note = "\nwhat the authors' RG script ran (σ_b = 1)"
        ax.set_title(f"{run.label}, N = {width}{note}", fontsize=9.5)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle("Quartic coupling against the cutoff: point estimates and posteriors",
                 fontsize=11)
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
    fig.suptitle("β-function posterior: β = −γ λ; γ → d_in (Erf, Gauss with full K), "
                 "d_in + 4 (ReLU)", fontsize=11)
    return fig


def fig_rg_dimension(runs) -> object:
    """γ against d_in: posterior, point estimate and analytic, per ensemble."""
    fig, axes = _figure(1, 1, size=(7.0, 4.2))
    ax = axes[0, 0]
    offsets = {"erf": -0.12, "relu": 0.0, "gauss": 0.12}
    seen = set()
    if not _by_role(runs, "main", "dim"):
        return _placeholder("γ against d_in")
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
    ax.set_title("Running exponent against input dimension\n(analytic: Erf, Gauss with full K: "
                 "γ = d_in; ReLU: γ = d_in + 4)", fontsize=9.5)
    return fig


def fig_six_point(runs, cutoff) -> object:
    """6-pt function: experiment against GP and GP + ΔG6(λ) per tuple (relative to GP)."""
    shown = _by_role(runs, "main", "sigma_b")
    if not shown:
        return _placeholder("the d_in = 1 runs")
    fig, axes = _grid(len(shown), size=(5.0, 4.6))
    for ax, run in zip(axes, shown, strict=True):
        p = _six_point_predictions(run, cutoff)
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
        s = _six_point_summary(run, cutoff)
        ax.set_title(f"{run.label}, N = {p['width']}, Λ = {cutoff:g}\n"
                     f"m₆: GP {s['m6_gp']:.2e}, GP + ΔG₆(λ̄) {s['m6_eft_point']:.2e} "
                     f"(×{s['improvement_point']:.2f})", fontsize=8.5)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6.5, loc="upper left")
    fig.suptitle("6-pt prediction from the 4-pt coupling, one point per distinct 6-tuple",
                 fontsize=11)
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
        c = float(pc[np.argmin(np.abs(pc - cutoff))])
        widths = post["width"].values.astype(int)
        d = post["lambda"].sel(cutoff=c).transpose("chain", "draw", "width").values
        d = d.reshape(-1, len(widths)) * widths[None, :]
        lo, med, hi = np.quantile(d, [0.05, 0.5, 0.95], axis=0)
        ax.errorbar(widths, med, yerr=[med - lo, hi - med], fmt="s", color=run.color,
                    capsize=3, label="posterior median, 90%")
        fit = run.fit(run.spec["propagators"][0])
        fc = fit["cutoff"].values
        jc = int(np.argmin(np.abs(fc - c)))
        fw = fit["width"].values.astype(int)
        lm = fit["lambda_mean"].values[:, jc] * fw
        ax.plot(fw * 1.06, lm, "o", mfc="none", color="k", label="λ̄ (paper's estimator)")
        ex = run.exact["lambda_mean_exact"].sel(propagator=run.spec["propagators"][0])
        ew = ex["width"].values.astype(int)
        ax.plot(ew, ex.values[:, jc] * ew, ".-", color="tab:orange",
                label="λ̄ of the exact G₄")
        const = run.posterior["constant_data"].to_dataset()
        gls = const["point_estimate"].sel(coupling="lambda", cutoff=c).values * widths
        orders = _orders_text(json.loads(run.posterior.attrs["orders"]))
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
    fig.suptitle("Posterior against point estimates per width (N·λ flat: λ ∝ 1/N)",
                 fontsize=11)
    return fig


def make_figures(out, plan: dict, *, runs=None) -> list[Path]:
    """Draw every figure of :data:`FIGURES` into ``out/figures``; returns their paths."""
    out = Path(out)
    runs = _runs(out, plan) if runs is None else runs
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
    paths = []
    for name in FIGURES:
        paths.append(_save(makers[name](), out / "figures" / name))
    return paths


# ---------------------------------------------------------------------------------------------
# the markdown report
# ---------------------------------------------------------------------------------------------
def _f(x, spec=".3g") -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    return format(x, spec)


def _orders_text(orders) -> str:
    return " and ".join(f"{n}-pt" for n in orders)


def _table(header, rows) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _idx(values, x):
    return int(np.argmin(np.abs(np.asarray(values, float) - x)))


def render_report(summary: dict) -> str:
    """The markdown report, from the summary alone (figures referenced by file name)."""
    p = summary["preset"]
    runs = summary["runs"]
    conv = summary["conventions"]
    L = [f"# {summary['title']}", ""]
    L += [f"Preset **{p['name']}**: {p['n_nets']:,} networks per width, widths "
          f"{', '.join(map(str, p['widths']))} (d_in = 1), seed {p['seed']}; point estimates "
          f"at {len(p['fit_cutoffs'])} cutoffs Λ = {_f(min(p['fit_cutoffs']))} … "
          f"{_f(max(p['fit_cutoffs']))}; posteriors at Λ = "
          f"{', '.join(_f(c) for c in p['infer_cutoffs'])} with {p['num_chains']} chains × "
          f"{p['num_samples']} draws ({p['num_warmup']} warm-up), noise model "
          f"'{p.get('covariance', 'gp')}'. nngp_ppl "
          f"{summary['nngp_ppl_version']}, JAX {summary['machine']['jax']} on "
          f"{', '.join(summary['machine']['devices'])}; created {summary['created']}.", ""]
    total = sum(v for v in summary["timings_s"].values() if v)
    if total:
        L += [f"Compute time of the stages (as last run): {total:.0f} s.", ""]

    L += ["## Conventions", ""]
    labels = {"action": "action", "sign": "sign", "propagator": "propagator",
              "rule_4_5": "rule 4.5", "per_tuple_coupling": "per-tuple coupling",
              "cutoffs": "cutoffs", "posterior_model": "posterior model", "m_n": "m_n",
              "c_n": "c_n", "diagnostics_gate": "diagnostics gate"}
    for k, label in labels.items():
        L.append(f"- **{label}**: {conv[k]}")
    L.append("")
    L += ["Ensembles and inputs (the authors', physics.md §9):", ""]
    L += _table(["run", "ensemble", "σ_b", "d_in", "inputs", "widths", "posterior widths"],
                [[k, r["label"], _f(r["sigma_b"]), r["d_in"],
                  "; ".join(",".join(_f(v) for v in x) for x in r["inputs"]),
                  ",".join(map(str, r["widths"])), ",".join(map(str, r["infer_widths"]))]
                 for k, r in runs.items()])

    # 1. correlators against width
    L += ["## 1. Deviation from the Gaussian process against width", "",
          "![m_n against N](figures/deviation_vs_width.png)", "",
          "Sampled m_n next to the exact finite-width value and the statistical background "
          "(z = (sampled − exact) / background):", ""]
    rows = []
    for r in runs.values():
        if r["role"] != "main":
            continue
        d = r["deviation"]
        for i, w in enumerate(d["widths"]):
            rows.append([r["label"], w, _f(d["m4_sampled"][i]), _f(d["m4_exact"][i]),
                         _f(d["m4_background"][i]), _f(d["m4_z"][i], ".2f"),
                         _f(d["m6_sampled"][i]), _f(d["m6_exact"][i]),
                         _f(d["m6_background"][i]), _f(d["m6_z"][i], ".2f")])
    L += _table(["ensemble", "N", "m4 sampled", "m4 exact", "m4 background", "z4",
                 "m6 sampled", "m6 exact", "m6 background", "z6"], rows)
    L += ["![connected correlators](figures/connected_vs_width.png)", "",
          "Slopes of log c_n and log m_n against log N from the exact oracle (widths ≥ 10):",
          ""]
    rows = []
    for r in runs.values():
        if r["role"] != "main":
            continue
        e = r["exact_curve"]
        rows.append([r["label"]] + [_f(e.get(f"{q}_slope"), ".3f")
                                    for q in ("m4", "m6", "c4", "c6")])
    L += _table(["ensemble", "m4 slope", "m6 slope", "c4 slope (−1)", "c6 slope (−2)"], rows)

    # 2. couplings
    L += ["## 2. The quartic coupling at a cutoff", "",
          "![lambda against cutoff](figures/lambda_vs_cutoff.png)", ""]
    settings = sorted({(tuple(r["posterior"]["orders"]), tuple(r["posterior"]["data_orders"]),
                        r["posterior"]["noise"], r["posterior"]["likelihood"])
                       for r in runs.values()})
    for orders, data_orders, noise, lik in settings:
        names = [r["label"] for r in runs.values()
                 if (tuple(r["posterior"]["orders"]), tuple(r["posterior"]["data_orders"]),
                     r["posterior"]["noise"], r["posterior"]["likelihood"])
                 == (orders, data_orders, noise, lik)]
        L += [f"- {', '.join(names)}: couplings from the {_orders_text(orders)} function; "
              f"the posterior conditions on the {_orders_text(data_orders)} function; noise "
              f"model '{noise}', {lik} likelihood."]
    first = next(iter(runs.values()))["posterior"]
    L += ["", f"The estimand (stored in each posterior file): {first['estimand']}. The paper's "
          "λ̄ of the sampled G4 is its plug-in estimate; 'λ̄ exact' is the estimand itself, "
          "evaluated on the exact finite-width correlators. 'spread' is the model "
          "discrepancy — the rms over tuples of λ_t − λ, posterior median — which the "
          "interval does not contain by design. At the NGP width of each ensemble:", ""]
    rows, misses, total = [], [], 0
    for r in runs.values():
        if r["role"] == "dim":
            continue
        po = r["posterior"]
        fit = r["fit"][po["propagator"]]
        w = r["ngp_width"] if r["ngp_width"] in po["widths"] else po["widths"][0]
        i, fi = po["widths"].index(w), fit["widths"].index(w)
        for j, c in enumerate(po["cutoffs"]):
            jc = _idx(fit["cutoffs"], c)
            rows.append([r["label"], w, _f(c), _f(fit["lambda_mean"][fi][jc]),
                         _f(po["lambda_exact"][i][j]), _f(po["lambda_median"][i][j]),
                         f"[{_f(po['lambda_q05'][i][j])}, {_f(po['lambda_q95'][i][j])}]",
                         "yes" if po["exact_inside90"][i][j] else "**no**",
                         _f(po["z_exact"][i][j], ".2f"), _f(po["spread_median"][i][j])])
    for r in runs.values():
        po = r["posterior"]
        for i, w in enumerate(po["widths"]):
            for j, c in enumerate(po["cutoffs"]):
                total += 1
                if not po["exact_inside90"][i][j]:
                    misses.append(f"{r['label']} N={w} Λ={_f(c)} (z = "
                                  f"{_f(po['z_exact'][i][j], '.2f')})")
    L += _table(["ensemble", "N", "Λ", "λ̄ sampled", "λ̄ exact", "posterior median",
                 "90% interval", "exact in 90%", "z(exact)", "spread"], rows)
    L += [f"Over all {total} posteriors (every width and cutoff) the 90% interval contains "
          f"the exact λ̄ in {total - len(misses)}. "
          + ("Missed: " + "; ".join(misses) + ". The posteriors of one run share their "
             "networks, so misses come in groups; the calibration over independent seeds "
             "is in `benchmarks/calibration.py` (docs/comparison.md)."
             if misses else "") , ""]
    L += ["Models ranked by PSIS-LOO ELPD (GP only, λ, λ + κ; each correlator under its "
          "noise and the model's stated discrepancy; higher is better) — the Bayesian answer "
          "to 'is first order enough here?':", ""]
    rows = []
    for r in runs.values():
        po = r["posterior"]
        if "elpd" not in po:
            continue
        for i, w in enumerate(po["widths"]):
            for j, c in enumerate(po["cutoffs"]):
                vals = np.asarray(po["elpd"][i][j], dtype=float)
                errs = np.asarray(po["elpd_se"][i][j], dtype=float)
                rows.append([r["label"], w, _f(c)]
                            + [f"{v:.1f} ± {e:.1f}" for v, e in zip(vals, errs, strict=True)]
                            + [po["elpd_models"][int(np.nanargmax(vals))]])
        models = po["elpd_models"]
    if rows:
        L += _table(["ensemble", "N", "Λ"] + [f"ELPD {m}" for m in models] + ["best"], rows)

    # 3. running
    L += ["## 3. Running with the cutoff: β-function and exponent γ", "",
          "![beta function](figures/beta_function.png)", "",
          "![gamma against d_in](figures/rg_dimension.png)", "",
          "γ with λ ∝ Λ^−γ: the paper's regression of log|λ̄| on log Λ over all "
          f"{len(p['fit_cutoffs'])} cutoffs (sampled and exact G4); the posterior of the "
          "asymptotic γ from the networks alone (each draw's estimand differentiated in log Λ "
          "and extrapolated) and with the extrapolation's systematic error added; the "
          "posterior of the regression slope over the posterior's cutoffs; and the analytic "
          "exponent (physics.md §8). With one coupling γ depends on the data only through how "
          "the non-Gaussianity is shared between tuples (γ is their λ_t-weighted mean "
          "exponent), so its interval from the networks is narrow; the systematic one is the "
          "extrapolation's, not the networks'.", ""]
    rows = []
    for r in runs.values():
        fit = r["fit"][r["propagators"][0]]
        b = r["beta"]
        w = r["ngp_width"] if r["ngp_width"] in b["widths"] else b["widths"][0]
        i, fi = b["widths"].index(w), fit["widths"].index(w)
        ei = r["widths"].index(w)
        rows.append([r["label"], w, _f(fit["gamma_fit"][fi], ".4f"),
                     _f(fit["gamma_fit_exact"][ei], ".4f"),
                     f"{_f(b['gamma_data_median'][i], '.4f')} "
                     f"[{_f(b['gamma_data_q05'][i], '.4f')}, "
                     f"{_f(b['gamma_data_q95'][i], '.4f')}]",
                     _f(b["gamma_systematic"][i], ".2g"),
                     f"{_f(b['gamma_median'][i], '.4f')} "
                     f"[{_f(b['gamma_q05'][i], '.4f')}, {_f(b['gamma_q95'][i], '.4f')}]",
                     f"{_f(b['gamma_slope_median'][i], '.4f')} ± "
                     f"{_f(b['gamma_slope_sd'][i], '.2g')}",
                     _f(b["gamma_analytic"], "g")])
    L += _table(["ensemble", "N", "γ fit (sampled)", "γ fit (exact G4)",
                 "γ networks [90%]", "extrapolation syst.", "γ networks + syst. [90%]",
                 "slope over cutoffs ± sd", "analytic"], rows)
    for r in runs.values():
        if "bias_subtracted" in r["fit"]:
            bs = r["fit"]["bias_subtracted"]
            fi = bs["widths"].index(r["ngp_width"])
            L += [f"With the bias-subtracted propagator K − σ_b² on the vertex legs "
                  f"({r['label']}, N = {r['ngp_width']}) λ̄ stops running: fitted "
                  f"γ = {_f(bs['gamma_fit'][fi], '.4f')} (analytic "
                  f"{_f(bs['gamma_analytic'], 'g')}); λ̄ = "
                  f"{_f(bs['lambda_mean'][fi][0])} at Λ = {_f(bs['cutoffs'][0])} and "
                  f"{_f(bs['lambda_mean'][fi][-1])} at Λ = {_f(bs['cutoffs'][-1])}.", ""]
    relu0 = next((r for r in runs.values() if r["ensemble"] == "relu" and r["sigma_b"] == 0
                  and r["d_in"] == 1), None)
    relu1 = next((r for r in runs.values() if r["role"] == "sigma_b"), None)
    if relu0 and relu1:
        L += ["ReLU-net with σ_b = 0 on positive one-dimensional inputs is degenerate "
              "(f(x) = x·S for a single random S): every λ_t is the same and runs exactly as "
              "Λ^−5. The authors' RG script meant σ_b = 0 but ran σ_b = 1 (a `==` typo); "
              "both are shown, labelled by σ_b.", ""]

    # 4. six-point
    L += ["## 4. Predicting the 6-pt function from the 4-pt coupling", "",
          "![six-point prediction](figures/six_point.png)", "",
          f"At Λ = {_f(p['six_point_cutoff'])}: m_6 of the GP, of GP + ΔG6(λ̄) (the "
          "paper's check, κ = 0) and of GP + ΔG6 at the posterior-mean λ; improvement = "
          "m6(GP) / m6(EFT); background = ⟨stderr / |G6_GP|⟩:", ""]
    rows = []
    for r in runs.values():
        if r["role"] == "dim":
            continue
        s = r["six_point"]
        rows.append([r["label"], s["width"], _f(s["m6_gp"]), _f(s["m6_eft_point"]),
                     _f(s["improvement_point"], ".2f"), _f(s["m6_eft_posterior"]),
                     _f(s["improvement_posterior"], ".2f"), _f(s["m6_background"])])
    L += _table(["ensemble", "N", "m6 GP", "m6 EFT (λ̄)", "improvement", "m6 EFT (posterior)",
                 "improvement", "background"], rows)

    # 5. posterior vs point
    L += ["## 5. Posterior against point estimates, per width", "",
          "![posterior vs point](figures/posterior_vs_point.png)", "",
          f"At Λ = {_f(p['six_point_cutoff'])}, every width with a posterior: the posterior, "
          "its plug-in point estimate B r̂ (the estimand's map of the sampled correlators) with "
          "its standard deviation under the noise model, the paper's λ̄ of the sampled G4, and "
          "the exact λ̄:", ""]
    rows = []
    for r in runs.values():
        po = r["posterior"]
        j = _idx(po["cutoffs"], p["six_point_cutoff"])
        fit = r["fit"][po["propagator"]]
        jc = _idx(fit["cutoffs"], po["cutoffs"][j])
        for i, w in enumerate(po["widths"]):
            rows.append([r["label"], w, _f(po["lambda_median"][i][j]),
                         _f(po["lambda_sd"][i][j]),
                         f"{_f(po['plugin'][i][j])} ± {_f(po['plugin_sd'][i][j], '.2g')}",
                         _f(fit["lambda_mean"][fit["widths"].index(w)][jc]),
                         _f(po["lambda_exact"][i][j]), _f(po["z_exact"][i][j], ".2f"),
                         "yes" if po["exact_inside90"][i][j] else "**no**"])
    L += _table(["ensemble", "N", "posterior median", "posterior sd", "plug-in B r̂ ± sd",
                 "λ̄ sampled", "λ̄ exact", "z(exact)", "exact in 90%"], rows)

    # 6. diagnostics
    L += ["## 6. Diagnostics gate", "", f"{conv['diagnostics_gate']}.", ""]
    rows = []
    for r in runs.values():
        g = r["posterior"]["gate"]
        rows.append([r["label"], "PASSED" if g["passed"] else "**FAILED**",
                     f"{g['n_posteriors'] - g['n_failed']}/{g['n_posteriors']}",
                     _f(g["max_r_hat"], ".4f"), _f(g["min_ess_bulk"], ".0f"),
                     _f(g["min_ess_tail"], ".0f"), g["divergences"],
                     "; ".join(f"N={w}, Λ={_f(c)}" for w, c in g["failures"]) or "–"])
    L += _table(["ensemble", "gate", "passed (N, Λ)", "max R-hat", "min bulk ESS",
                 "min tail ESS", "divergences", "failing (N, Λ)"], rows)
    warn_lines = []
    for stage, texts in summary["warnings"].items():
        for w in texts:
            warn_lines.append(f"- `{stage}`: " + " ".join(s.strip() for s in w.splitlines()))
    if warn_lines:
        L += ["Warnings raised while computing (also in `manifest.json`):", ""] + warn_lines
        L.append("")

    # 7. timings
    if summary["timings_s"]:
        L += ["## 7. Stage timings", ""]
        L += _table(["stage", "seconds"], [[k, _f(v, ".1f")]
                                           for k, v in summary["timings_s"].items()])
    L += ["Every number above is in `summary.json`; the data behind the figures are the "
          "netCDF files beside this report (see docs/file_formats.md).", ""]
    return "\n".join(L)


def write_report(out, plan: dict, timings: dict | None = None,
                 warnings: dict | None = None) -> tuple[Path, Path, list]:
    """Figures, ``summary.json`` and ``report.md`` into ``out`` (all written atomically)."""
    from .reproduce import write_text

    out = Path(out)
    runs = _runs(out, plan)
    summary = collect_summary(out, plan, timings, warnings=warnings, runs=runs)
    figures = make_figures(out, plan, runs=runs)
    summary["figures"] = [str(f.relative_to(out)) for f in figures]
    spath = write_text(out / "summary.json", json.dumps(summary, indent=1))
    rpath = write_text(out / "report.md", render_report(summary))
    return rpath, spath, figures
