r"""The stage actions of a study: sample → exact → fit → infer → flow → report.

The study types and TOML live in :mod:`nngp_ppl.study.spec`, the manifest (stage keys,
hashes, up-to-date checks) in :mod:`nngp_ppl.study.manifest`; this module holds what each
stage computes.

:func:`reproduce` reruns the experiments of Halverson, Maiti and Stoner (arXiv:2008.08601;
physics.md §9) for Erf-, ReLU- and Gauss-net on the authors' inputs and widths, adds the
Bayesian versions beside the paper's point estimates, and writes a report
(:mod:`nngp_ppl.study.report`). Every stage writes its result into the output directory:

===========================  ==============================================================
``run_<key>.nc``             correlator statistics (:class:`~nngp_ppl.CorrelatorStats`)
``parts/<key>/N*_*.nc``      the same, one width and network range each (resume unit)
``exact_<key>.nc``           exact finite-width m_n, connected functions, λ̄ of the exact G4;
                             only for an ensemble with an oracle up to the 6-pt function
                             (without one, e.g. a deep MLP or a user's JaxNetwork, the
                             report shows the sampled values and posteriors alone and says so)
``fit_<key>[_bs].nc``        point estimates (:func:`nngp_ppl.inference.eft.fit_dataset`); ``_bs``:
                             propagator K - σ_b² on the vertex legs
``posterior_<key>.nc``       coupling posteriors (:func:`nngp_ppl.inference.infer_couplings`)
``beta_<key>.nc``            β-function posteriors (:func:`nngp_ppl.inference.beta_function`)
``symmetry_<key>.json``      the parity test (f -> -f) per width and the 1- and 3-pt
                             functions; only for a run with ``symmetries``, ``odd_orders``
                             or non-zero means
``target_<key>.json``        a run with non-zero means: the exact centred target
                             B(Λ) r and its running at the posterior's widths and cutoffs
``report.md``,               the report, every number in it, and its figures
``summary.json``,
``figures/*.png``
``manifest.json``            per stage: the key of its inputs and parameters, its outputs'
                             SHA-256, its wall time
===========================  ==============================================================

A run with non-zero means (μ_W, μ_b; :attr:`~nngp_ppl.study.spec.RunSpec.centred`) has no
exact summary; where the centred theory describes it (ErfNet, GaussNet, ActivationNet;
physics.md §6d) its fit, posterior and flow stages are centred (expanded around the
measured mean, basis g₃, λ by default), followed by its ``target`` stage where the
ensemble's oracle reaches the basis' orders; otherwise it would have only its sample and
symmetry stages (reading the study refuses such ensembles: ReLU-net and MLP with means have
no limit kernel here). A study whose every run has non-zero means runs too: its report
leaves out the sections and figures built on the zero-mean GP kernel and says why, and its
symmetry and centred sections carry it.

Resuming. A stage is skipped when ``manifest.json`` records the same key (a hash of the
stage's parameters, the package version and the SHA-256 of every file it reads) and each of
its outputs still exists with the recorded SHA-256. So an interrupted run continues where it
stopped, a changed setting reruns exactly the stages it affects, and a deleted or damaged
file is recomputed with everything downstream of it. Sampling is split into parts of at most
``Preset.chunk`` networks per width (disjoint network index ranges of one seed, merged
exactly by :meth:`~nngp_ppl.CorrelatorStats.merge`); a part already on disk is reused, and a
part in progress keeps the sampler's checkpoint (``<part>.nc.partial``, see
:mod:`nngp_ppl.sampling.checkpoint`), so an interruption loses at most one shard of networks.
"""

from __future__ import annotations

import datetime
import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import xarray as xr

from .. import _io
from .._checks import NNGPInputError
from .._lock import exclusive_lock
from ..inference import beta_function, eft, infer_couplings, read_posterior
from ..inference import eft as _eft
from ..inference.connected import connected_six_point
from ..inference.eft import log_slope
from ..inference.symmetry import check_declared_symmetries, parity_test
from ..sampling import stats as _stats
from ..sampling.sampler import sample_correlators
from ..sampling.stats import CorrelatorStats, check_tails, normalised_deviation
from ..theory.exact import exact_correlator_tuples, exact_cumulant_tuples
from ..theory.wick import connected_correlator_tuples, gp_correlator_tuples
from ..tuples import distinct_tuples
from .manifest import (
    ReproduceResult,
    Stage,
    load_manifest,
    save_manifest,
    sha256_file,
    stage_key,
    up_to_date,
    write_netcdf,
    write_text,
)
from .presets import PAPER_WIDTHS
from .report import FIGURES, write_report
from .report.second_order import FIGURE
from .report.symmetry import FIGURE as SYMMETRY_FIGURE
from .report.training import figure_names
from .spec import (
    ORDERS,
    Preset,
    RunSpec,
    beta_file,
    check_study,
    exact_file,
    fit_file,
    get_preset,
    part_file,
    plan_dict,
    posterior_file,
    run_file,
    second_order_files,
    symmetry_file,
    target_file,
)
from .training_stages import report_inputs, training_stages

__all__ = [
    "second_order_cutoffs",
    "SHOWN_ODD",
    "report_outputs",
    "stages",
    "reproduce",
]


def _part_ok(path: Path, net, X, width: int, start: int, stop: int, seed: int,
             orders=ORDERS) -> bool:
    """Whether a part file holds exactly this slice of networks (else it is resampled)."""

    if not path.is_file():
        return False
    try:
        s = CorrelatorStats.from_netcdf(path)
    except NNGPInputError:
        return False
    return (s.net == net and s.X.shape == X.shape and np.array_equal(s.X, X)
            and s.widths == (width,) and s.seed == seed and s.orders == orders
            and s.has_covariance and s.network_ranges(width) == ((start, stop),))


def _chunks(n_nets: int, chunk: int) -> list[tuple[int, int]]:
    return [(a, min(a + chunk, n_nets)) for a in range(0, n_nets, chunk)]


def _sample_action(run: RunSpec, preset: Preset, progress: bool, log):
    def action(out: Path):

        net, X = run.net(), run.inputs()
        merged = None
        for w in run.widths:
            for a, b in _chunks(preset.n_nets, preset.chunk):
                part = out / part_file(run.key, w, a, b)
                if _part_ok(part, net, X, w, a, b, preset.seed, run.orders):
                    log(f"        reusing {part.relative_to(out)}")

                    stats = CorrelatorStats.from_netcdf(part)
                    # Sampling this part warned about its tails; a part reused after an
                    # interruption must warn the same, or the stage's record (and so the
                    # report) would hold fewer warnings than an uninterrupted run's. The
                    # check reads only the stored sums, so it repeats the warning exactly.
                    check_tails(stats)
                else:
                    # The sampler's own checkpoint makes even a part resumable: an
                    # interruption loses at most one shard of it.
                    ckpt = part.with_name(part.name + ".partial")
                    stats = sample_correlators(net, X, [w], b - a, orders=run.orders,
                                               seed=preset.seed, start=a, progress=progress,
                                               checkpoint=ckpt, resume=True)
                    stats.to_netcdf(part)
                    ckpt.unlink(missing_ok=True)
                merged = stats if merged is None else merged.merge(stats)
        merged.to_netcdf(out / run_file(run.key))

    return action


def _exact_action(run: RunSpec, preset: Preset):
    def action(out: Path):

        net, X = run.net(), run.inputs()
        K = np.asarray(net.kernel(X))
        gp = {n: gp_correlator_tuples(K, n) for n in (4, 6)}
        curve = sorted(set(PAPER_WIDTHS) | set(run.widths))
        data = {f"{q}{n}_exact": np.empty(len(curve)) for q in ("m", "c") for n in (4, 6)}
        for i, w in enumerate(curve):
            for n in (4, 6):
                G = exact_correlator_tuples(net, X, w, n)
                data[f"m{n}_exact"][i] = normalised_deviation(G, gp[n])
                kappa = exact_cumulant_tuples(net, X, w, n)
                data[f"c{n}_exact"][i] = float(np.mean(np.abs(kappa) / np.abs(gp[n])))
        g4 = np.stack([exact_correlator_tuples(net, X, w, 4) for w in run.widths])
        g6 = np.stack([exact_correlator_tuples(net, X, w, 6) for w in run.widths])
        cut = np.asarray(preset.fit_cutoffs)
        lam = np.empty((len(run.propagators), len(run.widths), len(cut)))
        for p, prop in enumerate(run.propagators):
            for i in range(len(run.widths)):
                lam[p, i] = eft.mean_coupling(net, X, g4[i], cut, prop)
        ds = xr.Dataset(
            {
                **{name: (("curve_width",), v, {"long_name": _EXACT_NAMES[name]})
                   for name, v in data.items()},
                "G4_exact": (("width", "tuple_4"), g4, {"long_name": "exact G4 per tuple"}),
                "G6_exact": (("width", "tuple_6"), g6, {"long_name": "exact G6 per tuple"}),
                "lambda_mean_exact": (
                    ("propagator", "width", "cutoff"), lam,
                    {"long_name": "mean over tuples of -(G4_exact - G4_GP)/(24 I_t)"}),
                **_exact_slopes(curve, data, cut, lam),
            },
            coords={"curve_width": np.asarray(curve, np.int64),
                    "width": np.asarray(run.widths, np.int64), "cutoff": cut,
                    "propagator": list(run.propagators)},
            attrs={"ensemble": json.dumps(net.to_dict()), "inputs": json.dumps(X.tolist()),
                   "source": "nngp_ppl.theory.exact (finite-width oracle, no sampling noise)"},
        )
        write_netcdf(ds, out / exact_file(run.key), file_format=_io.EXACT_FORMAT,
                     version=_io.EXACT_VERSION)

    return action


def _exact_slopes(curve, data: dict, cutoffs, lam) -> dict:
    """Log-log slopes the report shows, stored so that the report recomputes nothing.

    ``{q}_slope``: slope of log q against log N over the curve widths N >= 10 (NaN with fewer
    than two), for q = m4, m6, c4, c6 (expected -1, -1, -1, -2; physics.md §3).
    ``gamma_fit_exact``: -slope of log|λ̄_exact| against log Λ over all cutoffs, the paper's
    regression on the exact G4 (NaN with one cutoff; physics.md §8).
    """

    out = {}
    large = np.asarray([w >= 10 for w in curve])
    for q in ("m4", "m6", "c4", "c6"):
        slope = np.nan
        if large.sum() >= 2:
            slope = float(log_slope(np.log(np.asarray(curve, float)[large]),
                                    np.log(np.abs(data[f"{q}_exact"][large])))[0])
        out[f"{q}_slope"] = ((), slope, {"long_name": f"d log {q} / d log N, widths >= 10"})
    gamma = np.full(lam.shape[:2], np.nan)
    if len(cutoffs) > 1:
        with np.errstate(divide="ignore", invalid="ignore"):
            gamma = -log_slope(np.log(np.asarray(cutoffs, float)), np.log(np.abs(lam)))[0]
    out["gamma_fit_exact"] = (("propagator", "width"), gamma,
                              {"long_name": "-d log|lambda_mean_exact| / d log cutoff"})
    return out


def _sampled_deviation(stats) -> dict:
    r"""m_n, its statistical background and c_n of the sampled correlators, per width.

    :math:`m_n = \langle |G_n - G_{n,GP}| / |G_{n,GP}| \rangle_t`, the background
    :math:`\langle \delta G_n / |G_{n,GP}| \rangle_t` (naive standard error) and
    :math:`c_n = \langle |\kappa_n| / |G_{n,GP}| \rangle_t` with :math:`\kappa_n` the
    connected function of the sampled moments (physics.md §3, §7), for n = 4, 6. Stored in
    the fit file so that the report only reads them.
    """

    K = np.asarray(stats.net.kernel(stats.X))
    gp = {n: gp_correlator_tuples(K, n) for n in (4, 6)}
    out = {"n_nets": (("width",), np.asarray([stats.n_nets(w) for w in stats.widths]),
                      {"long_name": "networks per width"})}
    for n in (4, 6):
        sampled, background, connected = [], [], []
        for w in stats.widths:
            sampled.append(normalised_deviation(stats.correlator_tuples(n, w), gp[n]))
            background.append(normalised_deviation(gp[n] + stats.stderr_tuples(n, w), gp[n]))
            moments = {m: stats.correlator_tuples(m, w) for m in (2, 4, 6)}
            kappa = connected_correlator_tuples(moments, n, stats.k)
            connected.append(float(np.mean(np.abs(kappa) / np.abs(gp[n]))))
        out[f"m{n}_sampled"] = (("width",), np.asarray(sampled),
                                {"long_name": f"<|G{n} - G{n}_GP| / |G{n}_GP|>, sampled"})
        out[f"m{n}_background"] = (("width",), np.asarray(background),
                                   {"long_name": f"<stderr(G{n}) / |G{n}_GP|>"})
        out[f"c{n}_sampled"] = (("width",), np.asarray(connected),
                                {"long_name": f"<|kappa_{n}| / |G{n}_GP|>, sampled"})
    return out


_EXACT_NAMES = {
    "m4_exact": "<|G4 - G4_GP| / |G4_GP|> over tuples, exact",
    "m6_exact": "<|G6 - G6_GP| / |G6_GP|> over tuples, exact",
    "c4_exact": "<|kappa_4| / |G4_GP|> over tuples (connected 4-pt), exact",
    "c6_exact": "<|kappa_6| / |G6_GP|> over tuples (connected 6-pt), exact",
}


def _fit_action(run: RunSpec, preset: Preset, propagator: str):
    def action(out: Path):

        stats = CorrelatorStats.from_netcdf(out / run_file(run.key))
        if run.centred:
            # Non-zero means: the centred point fit of the run's basis (fit, fit_stderr,
            # beta_fit, tau; eft._centred_dataset), no λ̄ or 6-pt check (physics.md §6d).
            ds = eft.fit_dataset(stats, np.asarray(preset.fit_cutoffs), propagator,
                                 couplings=run.basis)
        else:
            ds = eft.fit_dataset(stats, np.asarray(preset.fit_cutoffs), propagator,
                                 couplings=("lambda", "kappa"))
            ds = ds.assign(_sampled_deviation(stats))
        eft.write_fit(ds, out / fit_file(run.key, propagator), out / run_file(run.key))

    return action


def _infer_action(run: RunSpec, preset: Preset, progress: bool, log):
    def action(out: Path):

        stats = CorrelatorStats.from_netcdf(out / run_file(run.key))
        dt = infer_couplings(stats, cutoffs=preset.infer_cutoffs, couplings=run.basis,
                             **_sampler_arguments(run, preset, progress))
        write_netcdf(dt, out / posterior_file(run.key), file_format=_io.POSTERIOR_FORMAT,
                     version=_io.POSTERIOR_VERSION)

    return action


def _sampler_arguments(run: RunSpec, preset: Preset, progress: bool) -> dict:
    """What every posterior of a run shares: widths, NUTS sizes, seed, propagator, noise."""
    return dict(widths=run.infer_widths, num_chains=preset.num_chains,
                num_samples=preset.num_samples, num_warmup=preset.num_warmup,
                seed=preset.seed, propagator=run.propagators[0], progress=progress,
                covariance=preset.covariance)


def second_order_cutoffs(preset: Preset) -> list[float]:
    """The second-order stage's cutoffs: the posteriors' and the 6-pt check's."""
    return sorted({*map(float, preset.infer_cutoffs), float(preset.six_point_cutoff)})


def _second_order_action(run: RunSpec, preset: Preset, progress: bool):
    """A run with ``order = 2``: the joint (λ, κ) posterior at second order (its ELPD table
    ranks GP, λ and λ + κ at both orders on the same draws), its β-functions, and the
    connected 6-pt function against N with the contact, exchange and exchange + contact
    descriptions; the first-order files are left as they are."""
    def action(out: Path):

        files = second_order_files(run.key)
        stats = CorrelatorStats.from_netcdf(out / run_file(run.key))
        dt = infer_couplings(stats, cutoffs=second_order_cutoffs(preset),
                             couplings=("lambda", "kappa"), order=2,
                             **_sampler_arguments(run, preset, progress))
        write_netcdf(dt, out / files["posterior2"], file_format=_io.POSTERIOR_FORMAT,
                     version=_io.POSTERIOR_VERSION)
        write_netcdf(beta_function(dt), out / files["beta2"], file_format=_io.BETA_FORMAT,
                     version=_io.BETA_VERSION)
        write_netcdf(connected_six_point(stats, dt, float(preset.six_point_cutoff)),
                     out / files["sixpoint"], file_format=_io.SIXPOINT_FORMAT,
                     version=_io.SIXPOINT_VERSION)

    return action


#: The odd orders the report shows against zero (the 1- and 3-pt functions).
SHOWN_ODD = (1, 3)


def _odd_correlators(stats, run: RunSpec, width: int) -> dict:
    """The sampled 1- and 3-pt functions on their distinct tuples, with standard errors,
    and the exact finite-width values where the ensemble's oracle reaches the order
    (:func:`nngp_ppl.theory.exact.exact_correlator_tuples`: zero for zero means)."""

    oracle = run.exact_oracle()
    out = {}
    for n in SHOWN_ODD:
        g = stats.correlator_tuples(n, width)
        se = stats.stderr_tuples(n, width)
        row = {"tuples": np.asarray(distinct_tuples(stats.k, n)).tolist(),
               "estimate": g.tolist(), "stderr": se.tolist(), "exact": None,
               "max_abs_z_zero": float(np.max(np.abs(g) / se))}
        if oracle["moments"] is not None and oracle["max_order"] >= n:
            exact = exact_correlator_tuples(stats.net, stats.X, width, n)
            row["exact"] = exact.tolist()
            row["max_abs_z_exact"] = float(np.max(np.abs(g - exact) / se))
        out[str(n)] = row
    return out


def _symmetry_action(run: RunSpec):
    """The parity test (:func:`nngp_ppl.inference.symmetry.parity_test`) of each width on
    the run's odd correlators; a declared symmetry the data reject warns
    (:class:`~nngp_ppl.inference.symmetry.SymmetryWarning`, via
    :func:`~nngp_ppl.inference.symmetry.check_declared_symmetries`). Writes the tests and
    the 1- and 3-pt functions to ``symmetry_<key>.json`` so the report only reads them."""
    def action(out: Path):

        stats = CorrelatorStats.from_netcdf(out / run_file(run.key))
        widths = []
        for w in stats.widths:
            if run.symmetries:
                test = check_declared_symmetries(stats, w, run.symmetries)["z2"]
            else:
                test = parity_test(stats, w)
            entry = {k: getattr(test, k) for k in (
                "statistic", "dof", "p_value", "alpha", "reject", "width", "n_nets",
                "n_observables")}
            entry.update(orders=list(test.orders), verdict=test.verdict,
                         odd=_odd_correlators(stats, run, w))
            widths.append(entry)
        result = {"key": run.key, "declared": list(run.symmetries),
                  "test": "Wald test of f -> -f on the odd correlators "
                          "(nngp_ppl.inference.symmetry.parity_test)",
                  "declared_rejected": bool(run.symmetries) and any(
                      e["reject"] for e in widths),
                  "basis_comparison": None, "widths": widths}
        write_text(out / symmetry_file(run.key), json.dumps(result, indent=1))

    return action


def _target_action(run: RunSpec):
    r"""The exact centred target of a run with non-zero means (physics.md §5a, §6d): at
    each width and cutoff of its posterior, :math:`g^* = B(\Lambda)\, r` and
    :math:`\beta^* = \dot B(\Lambda)\, r` on the exact centred deviations r of the exact
    finite-width moments (:meth:`~nngp_ppl.inference.problem.EFTTheory.exact_deviation`),
    with the theory the posterior file records (couplings, fitted orders, propagator, free
    part), read and verified by :func:`~nngp_ppl.inference.read_posterior` and built by
    :meth:`~nngp_ppl.inference.StoredPosterior.theory` as :func:`~nngp_ppl.beta_function`
    builds it. Written to ``target_<key>.json`` so that the report only reads it."""
    def action(out: Path):

        stored = read_posterior(out / posterior_file(run.key),
                                name=f"the posterior of run {run.key!r}")
        widths = [int(w) for w in stored.widths]
        cutoffs = [float(c) for c in stored.cutoffs]
        theory = stored.theory()
        est = theory.estimator(tuple(cutoffs))
        target, beta = [], []
        for w in widths:
            r = theory.exact_deviation(w, stored.two_point)
            g = est.couplings(r)  # (cutoff, coupling)
            target.append(np.asarray(g).tolist())
            beta.append(np.asarray(est.beta(r, g)).tolist())
        result = {"key": run.key, "couplings": list(stored.couplings),
                  "orders": list(stored.orders), "two_point": stored.two_point,
                  "propagator": stored.propagator, "widths": widths, "cutoffs": cutoffs,
                  "target": target, "beta": beta,
                  "source": "B(cutoff) r and dB/dlog(cutoff) r of the exact centred "
                            "moments (nngp_ppl.theory.exact; nngp_ppl.inference.centred)"}
        write_text(out / target_file(run.key), json.dumps(result, indent=1))

    return action


def _flow_action(run: RunSpec):
    def action(out: Path):

        beta = beta_function(out / posterior_file(run.key))
        write_netcdf(beta, out / beta_file(run.key), file_format=_io.BETA_FORMAT,
                     version=_io.BETA_VERSION)

    return action


def _messages(caught) -> list[str]:
    """Warning texts worth keeping: not numpy's floating-point notices (e.g. the 0/0 of an
    exactly flat exponent), each once."""
    texts = [f"{type(w.message).__name__}: {str(w.message).strip()}" for w in caught
             if "encountered in" not in str(w.message)]
    return list(dict.fromkeys(texts))


def _report_action(preset: Preset, records: Callable[[], dict], progress: bool):
    def action(out: Path):

        rec = records()
        write_report(out, plan_dict(preset),
                     timings={k: v.get("seconds") for k, v in rec.items()},
                     warnings={k: v.get("warnings", []) for k, v in rec.items()
                               if v.get("warnings")}, progress=progress)

    return action


def report_outputs(preset: Preset) -> tuple[str, ...]:

    runs = get_preset(preset).runs()
    # The even-coupling figures show the zero-mean runs (make_figures): none without one.
    even = FIGURES if any(r.zero_mean for r in runs) else ()
    extra = (FIGURE,) if any(r.order == 2 for r in runs) else ()
    extra += (SYMMETRY_FIGURE,) if any(r.tests_symmetry for r in runs) else ()
    extra += figure_names(get_preset(preset))
    return ("report.md", "summary.json") + tuple(f"figures/{f}" for f in (*even, *extra))


def stages(preset: Preset, *, progress: bool = True, log=print,
           records: Callable[[], dict] = dict) -> list[Stage]:
    """The stages of a reproduction in execution order (see the module docstring)."""

    preset = get_preset(preset)
    sampled = preset.runs()
    runs = tuple(r for r in sampled if r.zero_mean)  # the even-coupling stages' runs
    # With the runs fitted centred (non-zero means, RunSpec.centred), in study order: the
    # fit, posterior and flow stages.
    fitted = tuple(r for r in sampled if r.zero_mean or r.centred)
    out: list[Stage] = []
    for r in sampled:
        out.append(Stage(
            f"sample_{r.key}",
            f"sample {r.label}: widths {','.join(map(str, r.widths))}, "
            f"{preset.n_nets:,} networks each",
            (), (run_file(r.key),),
            {"net": r.net().to_dict(), "X": r.inputs().tolist(), "widths": list(r.widths),
             "n_nets": preset.n_nets, "chunk": preset.chunk, "seed": preset.seed,
             "orders": list(r.orders), "format": _stats.FILE_VERSION},
            _sample_action(r, preset, progress, log)))
    # Right after sampling: a rejected declaration warns before the long posteriors.
    for r in (r for r in sampled if r.tests_symmetry):
        out.append(Stage(
            f"symmetry_{r.key}",
            f"parity test (f -> -f) on the odd correlators, {r.label}"
            + (f"; declared: {', '.join(r.symmetries)}" if r.symmetries else ""),
            (run_file(r.key),), (symmetry_file(r.key),),
            {"declared": list(r.symmetries), "shown": list(SHOWN_ODD), "format": 1},
            _symmetry_action(r)))
    # The exact stage where the ensemble has an oracle up to the 6-pt function (a
    # capability it declares: exact_moments / exact_max_order), none otherwise.
    for r in (r for r in runs if r.has_exact()):
        out.append(Stage(
            f"exact_{r.key}", f"exact finite-width correlators, {r.label}", (),
            (exact_file(r.key),),
            {"net": r.net().to_dict(), "X": r.inputs().tolist(), "widths": list(r.widths),
             "cutoffs": list(preset.fit_cutoffs), "propagators": list(r.propagators),
             "format": _io.EXACT_VERSION},
            _exact_action(r, preset)))
    for r in fitted:
        for p in r.propagators:
            params = {"cutoffs": list(preset.fit_cutoffs), "propagator": p,
                      "format": _eft.FIT_VERSION, "sampled_deviation": True}
            if r.centred:
                params = {**params, "sampled_deviation": False, "centred": True,
                          "couplings": list(r.basis)}
            out.append(Stage(
                f"fit_{r.key}" + ("" if p == "full" else "_bs"),
                ("centred " if r.centred else "") + f"point estimates, {r.label}, "
                f"propagator {p}, {len(preset.fit_cutoffs)} cutoffs", (run_file(r.key),),
                (fit_file(r.key, p),), params, _fit_action(r, preset, p)))
    for r in fitted:
        out.append(Stage(
            f"infer_{r.key}",
            ("centred " if r.centred else "")
            + f"coupling posteriors, {r.label}: widths {','.join(map(str, r.infer_widths))} x "
            f"cutoffs {','.join(f'{c:g}' for c in preset.infer_cutoffs)}",
            (run_file(r.key),), (posterior_file(r.key),),
            {"cutoffs": list(preset.infer_cutoffs), "widths": list(r.infer_widths),
             "chains": preset.num_chains, "samples": preset.num_samples,
             "warmup": preset.num_warmup, "seed": preset.seed,
             "propagator": r.propagators[0], "couplings": list(r.basis),
             "covariance": preset.covariance, "format": _io.POSTERIOR_VERSION},
            _infer_action(r, preset, progress, log)))
    for r in fitted:
        out.append(Stage(
            f"flow_{r.key}", f"β-function posterior, {r.label}",
            (posterior_file(r.key),), (beta_file(r.key),), {}, _flow_action(r)))
    # The exact centred target where the ensemble's oracle reaches the basis' orders.
    for r in (r for r in fitted if r.centred and r.centred_oracle()["available"]):
        out.append(Stage(
            f"target_{r.key}", f"exact centred target of the posterior, {r.label}",
            (posterior_file(r.key),), (target_file(r.key),),
            {"net": r.net().to_dict(), "format": 1}, _target_action(r)))
    for r in (r for r in runs if r.order == 2):
        out.append(Stage(
            f"second_order_{r.key}",
            f"second order (λ, κ), {r.label}: posterior, β-functions, connected 6-pt",
            (run_file(r.key),), tuple(second_order_files(r.key).values()),
            {"cutoffs": second_order_cutoffs(preset), "widths": list(r.infer_widths),
             "chains": preset.num_chains, "samples": preset.num_samples,
             "warmup": preset.num_warmup, "seed": preset.seed,
             "propagator": r.propagators[0], "covariance": preset.covariance,
             "six_point_cutoff": float(preset.six_point_cutoff),
             "format": [_io.POSTERIOR_VERSION, _io.SIXPOINT_VERSION]},
            _second_order_action(r, preset, progress)))
    inputs = []
    for r in runs:
        inputs += [run_file(r.key), *([exact_file(r.key)] if r.has_exact() else []),
                   posterior_file(r.key), beta_file(r.key)]
        if r.order == 2:
            inputs += list(second_order_files(r.key).values())
        if r.tests_symmetry:
            inputs.append(symmetry_file(r.key))
        inputs += [fit_file(r.key, p) for p in r.propagators]
    inputs += [p for r in sampled if not r.zero_mean
               for p in (run_file(r.key), symmetry_file(r.key))]
    for r in (r for r in sampled if r.centred):
        inputs += [fit_file(r.key, p) for p in r.propagators]
        inputs += [posterior_file(r.key), beta_file(r.key)]
        inputs += [target_file(r.key)] if r.centred_oracle()["available"] else []
    out += training_stages(preset, progress=progress, log=log)  # a study's [train] block
    inputs += report_inputs(preset)
    out.append(Stage("report", "figures, summary.json and report.md", tuple(inputs),
                     report_outputs(preset), {"preset": preset.to_dict()},
                     _report_action(preset, records, progress)))
    return out


def reproduce(preset="quick", out="demo_out", *, redo=(), progress: bool = True,
              log=print, dry_run: bool = False) -> ReproduceResult:
    """Run (or resume) the study of ``preset`` into the directory ``out``.

    ``redo``: stage names or prefixes to rerun even if up to date (``"report"``, ``"fit"``,
    ``"infer_erf"``; ``"all"`` reruns everything). ``dry_run``: only say what would run.
    ``log`` receives one line per event (default: print). Returns a
    :class:`ReproduceResult`; the report is ``out/report.md``.
    """

    preset = get_preset(preset)
    # Every study key, before any stage: a bad one must not fail after hours of sampling.
    check_study(preset)
    # Checked before the directory and the lock exist: "no" is a true string, and a log that
    # cannot be called would fail only after the first stage's work.
    for name, value in (("progress", progress), ("dry_run", dry_run)):
        if not isinstance(value, (bool, np.bool_)):
            raise NNGPInputError(f"{name} must be True or False, got {value!r}")
    if not callable(log):
        raise NNGPInputError(f"log must be a function taking one line of text, got {log!r}")
    if not isinstance(out, (str, Path)) or str(out) == "":
        raise NNGPInputError(f"out must be a directory path, got {out!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NNGPInputError(f"out must be a directory, got the file {out}")
    if isinstance(redo, str):
        redo = [redo]
    redo = tuple(str(r) for r in redo)
    names = [s.name for s in stages(preset)]
    for r in redo:
        if r != "all" and not any(name.startswith(r) for name in names):
            raise NNGPInputError(f"redo: no stage named or starting with {r!r}; stages are "
                                 f"{', '.join(names)}")
    if dry_run:
        return _reproduce(preset, out, redo, progress, log, dry_run)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise NNGPInputError(f"out: cannot create the directory {out} ({err.strerror})") from None
    # Two runs into one directory would share part checkpoints and temporaries and
    # overwrite each other's manifest: the second one is refused before any work.
    with exclusive_lock(out, option="out", directory=True):
        return _reproduce(preset, out, redo, progress, log, dry_run)


def _reproduce(preset: Preset, out: Path, redo: tuple[str, ...], progress: bool, log,
               dry_run: bool) -> ReproduceResult:
    manifest = load_manifest(out, log)
    records = manifest["stages"]
    seconds: dict[str, float] = {}

    todo = stages(preset, progress=progress, log=log, records=lambda: records)
    status = {}
    t_start = time.perf_counter()
    log(f"nngp-ppl reproduce: preset {preset.name} -> {out}/ ({len(todo)} stages)")
    for i, stage in enumerate(todo, 1):
        tag = f"[{i:>2}/{len(todo)}]"
        forced = any(r == "all" or stage.name.startswith(r) for r in redo)
        missing = [p for p in stage.inputs if not (out / p).is_file()]
        if missing and dry_run:
            log(f"{tag} would run   {stage.name}: {stage.describe}")
            status[stage.name] = "would run"
            continue
        key = stage_key(stage, out)
        if not forced and up_to_date(stage, out, records.get(stage.name), key):
            status[stage.name] = "skipped"
            log(f"{tag} up to date  {stage.name} ({', '.join(stage.outputs[:2])}"
                f"{', ...' if len(stage.outputs) > 2 else ''})")
            continue
        if dry_run:
            status[stage.name] = "would run"
            log(f"{tag} would run   {stage.name}: {stage.describe}")
            continue
        log(f"{tag} running     {stage.name}: {stage.describe}")
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            stage.action(out)
        dt = time.perf_counter() - t0
        notes = _messages(caught)
        for text in notes:  # e.g. the diagnostics gate, meant to be loud
            log("        WARNING " + text.replace("\n", "\n        "))
        seconds[stage.name] = dt
        records[stage.name] = {
            "key": key,
            "outputs": {p: sha256_file(out / p) for p in stage.outputs},
            "seconds": round(dt, 3),
            "warnings": notes,
            "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        manifest["preset"] = preset.to_dict()
        save_manifest(out, manifest)
        status[stage.name] = "ran"
        log(f"        done in {dt:.1f} s")
    wall = time.perf_counter() - t_start
    if not dry_run:
        log(f"finished in {wall:.0f} s; report: {out / 'report.md'}")
    return ReproduceResult(out, out / "report.md", out / "summary.json", status, seconds, wall)
