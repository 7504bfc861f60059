"""The stored files of one run of a study, as the report reads them.

Nothing here computes physics: every number comes from a file an earlier stage of
:mod:`nngp_ppl.study.stages` wrote (the exact file holds the oracle's curves and their slopes,
the fit file the point estimates and the sampled m_n and c_n, the posterior and β files the
draws and the design of the 6-pt check). Each file is read once and checked as its reader
checks it (format, version, checksum).

A run whose ensemble has no exact finite-width oracle (a deep MLP, a user's JaxNetwork) has
no exact file: its plan entry says so (``files["exact"] is None``, ``exact_oracle`` the
capability the ensemble declares), :attr:`StudyRun.has_exact` is False, :attr:`StudyRun.exact`
is None, and every exact value below is None (never a stand-in number).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ... import _io
from ..._checks import NNGPInputError
from ...inference import diagnostics_gate
from ...inference.eft import load_fit

__all__ = [
    "StudyRun",
    "StudyRuns",
    "study_runs",
    "deviation",
    "gate_summary",
    "nearest",
    "six_point",
]

#: Colours of the paper's three nets, as in its figures; every other ensemble takes the next
#: free colour of :data:`_CYCLE` in the order the study lists its ensembles (cosmetic only).
_COLORS = {"erf": "tab:blue", "relu": "tab:red", "gauss": "tab:green"}
_CYCLE = ("tab:purple", "tab:orange", "tab:brown", "tab:olive", "tab:cyan", "tab:pink",
          "tab:gray")


def nearest(values, x) -> int:
    """Index of the value nearest ``x`` (cutoffs are matched across files this way)."""
    return int(np.argmin(np.abs(np.asarray(values, float) - x)))



class StudyRun:
    """The files of one run, loaded lazily and cached."""

    def __init__(self, out: Path, spec: dict, color: str | None = None):
        self.out, self.spec = out, spec
        self.key = spec["key"]
        self._cache = {}
        self._color = color or _COLORS.get(spec["ensemble"], _CYCLE[0])

    def cached(self, name, loader):
        if name not in self._cache:
            self._cache[name] = loader()
        return self._cache[name]

    @property
    def has_exact(self) -> bool:
        """Whether the run has an exact-summary file (its ensemble has an oracle up to the
        6-pt function; the plan says so, nothing is recomputed)."""
        return self.spec["files"].get("exact") is not None

    @property
    def exact(self):
        """The exact-summary file, or None for a run without an exact oracle."""

        if not self.has_exact:
            return None
        return self.cached("exact", lambda: _io.read_netcdf(
            self.out / self.spec["files"]["exact"], name="exact file",
            what="exact finite-width summary", file_format=_io.EXACT_FORMAT,
            version=_io.EXACT_VERSION))

    def fit(self, propagator="full"):

        files = self.spec["files"]
        return self.cached(f"fit_{propagator}", lambda: load_fit(
            self.out / files["fit"][propagator], self.out / files["run"]))

    @property
    def posterior(self):

        return self.cached("posterior", lambda: _io.read_netcdf(
            self.out / self.spec["files"]["posterior"], name="posterior",
            what="coupling posterior", tree=True, file_format=_io.POSTERIOR_FORMAT,
            version=_io.POSTERIOR_VERSION))

    @property
    def beta(self):

        return self.cached("beta", lambda: _io.read_netcdf(
            self.out / self.spec["files"]["beta"], name="beta", what="β-function posterior",
            tree=True, file_format=_io.BETA_FORMAT, version=_io.BETA_VERSION))

    @property
    def label(self) -> str:
        return self.spec["label"]

    @property
    def color(self) -> str:
        return self._color

    def infer_width(self, width: int) -> int:
        """``width`` if it has a posterior, else the closest width that has one."""
        widths = [int(w) for w in self.posterior["posterior"]["width"].values]
        return min(widths, key=lambda w: (abs(math.log(w / width)), w))


class StudyRuns(list):
    """The :class:`StudyRun` of every run of a study, and a cache of the study-wide files
    (the ``[train]`` block's), so that the summary and the figures of one report read each
    file once (a comparison and a flow file: about 0.5 s of CPU per read)."""

    def __init__(self, runs=()):
        super().__init__(runs)
        self._cache = {}

    @classmethod
    def of(cls, runs) -> StudyRuns:
        """``runs`` itself if it is a StudyRuns, else a StudyRuns of the same runs."""
        return runs if isinstance(runs, cls) else cls(runs)

    def cached(self, name, loader):
        if name not in self._cache:
            self._cache[name] = loader()
        return self._cache[name]


def study_runs(out: Path, plan: dict) -> StudyRuns:
    others = [e for e in dict.fromkeys(s["ensemble"] for s in plan["runs"])
              if e not in _COLORS]
    colors = {e: _CYCLE[i % len(_CYCLE)] for i, e in enumerate(others)}
    return StudyRuns(StudyRun(out, spec, colors.get(spec["ensemble"]))
                     for spec in plan["runs"])


def deviation(run: StudyRun) -> dict:
    """m_n and c_n per sampled width (n = 4, 6): sampled and background from the fit file,
    exact from the exact file's curve, and z = (sampled - exact) / background; the exact
    values and z are None for a run without an exact oracle."""
    return run.cached("deviation", lambda: _deviation(run))


def _deviation(run: StudyRun) -> dict:
    fit, ex = run.fit(run.spec["propagators"][0]), run.exact
    widths = [int(w) for w in fit["width"].values]
    out = {"widths": widths, "n_nets": [int(n) for n in fit["n_nets"].values]}
    curve = [] if ex is None else [int(w) for w in ex["curve_width"].values]
    for n in (4, 6):
        for q in ("m", "c"):
            out[f"{q}{n}_sampled"] = fit[f"{q}{n}_sampled"].values.tolist()
            if ex is None:
                out[f"{q}{n}_exact"] = [None] * len(widths)
                continue
            exact = dict(zip(curve, ex[f"{q}{n}_exact"].values.tolist(), strict=True))
            out[f"{q}{n}_exact"] = [exact[w] for w in widths]
        out[f"m{n}_background"] = fit[f"m{n}_background"].values.tolist()
        out[f"m{n}_z"] = [None if e is None else (s - e) / b for s, e, b in zip(
            out[f"m{n}_sampled"], out[f"m{n}_exact"], out[f"m{n}_background"], strict=True)]
    return out


def six_point(run: StudyRun, cutoff: float) -> dict:
    """GP + ΔG6(λ) at the run's NGP width and the posterior cutoff nearest ``cutoff``."""
    return run.cached(f"six_point_{cutoff!r}", lambda: _six_point(run, cutoff))


def _six_point(run: StudyRun, cutoff: float) -> dict:
    """GP + ΔG6(λ) = G6_GP + λ D6(Λ) from the posterior file's own design D6, observed data
    and draws, and the point estimate λ̄ of the fit file (first order in λ, κ = 0)."""
    dt = run.posterior
    const = dt["constant_data"].to_dataset()
    obs = dt["observed_data"].to_dataset()
    if "design6" not in const:
        raise NNGPInputError("the posterior was not conditioned on the 6-pt function; the "
                             "6-pt check needs runs sampled with order 6")
    width = run.infer_width(run.spec["ngp_width"])
    post = dt["posterior"].to_dataset()
    cut = post["cutoff"].values
    c = float(cut[nearest(cut, cutoff)])
    design = const["design6"].sel(cutoff=c, coupling="lambda").values
    gp = const["G6_gp"].values
    fit = run.fit(str(dt.attrs.get("propagator", "full")))
    fcut = fit["cutoff"].values
    lam_point = float(fit["lambda_mean"].sel(width=width).values[
        nearest(fcut, c)])
    draws = post["lambda"].sel(width=width, cutoff=c).values.ravel()
    lam_post = float(draws.mean()) if np.isclose(c, cutoff) else float("nan")
    return {
        "width": width, "gp": gp, "experiment": obs["G6"].sel(width=width).values,
        "stderr": const["G6_se"].sel(width=width).values, "point": gp + lam_point * design,
        "posterior": gp + lam_post * design, "lambda_point": lam_point,
        "lambda_post": lam_post, "draws": gp[None, :] + draws[:, None] * design[None, :],
    }


def gate_summary(run: StudyRun) -> dict:
    """The diagnostics gate (R-hat, ESS, divergences) of the stored chains."""

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
