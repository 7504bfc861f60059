r"""The training stages of a study with a ``[train]`` block (:mod:`nngp_ppl.train_study`).

Three stages, after the study's own (``nngp-ppl reproduce`` runs them; each is skipped
when its manifest record matches, like every stage of :mod:`nngp_ppl.reproduce`):

===============================  ==========================================================
``train_<run>``                  ``train_<run>.nc``: the trained ensemble's correlators of
                                 orders 1..6 with covariance at every recorded step
                                 (:class:`~nngp_ppl.training.TrainedCorrelators`); a kill
                                 loses at most one shard (checkpoint
                                 ``train_<run>.nc.partial-<key>``, resumed on the next run)
``training_<run>``               ``training_<run>.nc``: per step and width, the sampled
                                 connected 1-, 2- and 3-pt functions with standard errors
                                 against the infinite-width oracle (:func:`oracle_comparison`)
``training_flow_<run>``          ``training_flow_<run>.nc``: couplings and the f -> -f
                                 verdict per step (:func:`effective_action_along_training`)
===============================  ==========================================================

The estimands. At step t the trained networks f_t form an ensemble with connected
correlators :math:`\kappa_n^{(t)}` (joint cumulants). As N -> infinity, gradient descent
in the NTK parametrisation makes it the Gaussian process of
:func:`nngp_ppl.theory.ntk.training_oracle`: :math:`\kappa_1 = \mu_t`,
:math:`\kappa_2 = \Sigma_t` and every :math:`\kappa_{n \ge 3} = 0`. At finite width the
differences are O(1/N); the 3-pt function starts at zero (the initial ensemble is
symmetric under f -> -f) and training, which breaks that symmetry through the data, makes
it grow. The comparison's z-scores use the delta-method standard errors of the sampled
cumulants (:meth:`nngp_ppl.CorrelatorStats.connected`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

#: Orders the train stage records: all of 1..6, so that every connected function up to
#: the 6-pt one (odd ones included) and the f -> -f test have their data.
TRAIN_ORDERS = (1, 2, 3, 4, 5, 6)
#: Format of ``training_<run>.nc``.
COMPARISON_FORMAT, COMPARISON_VERSION = "nngp_ppl.TrainingComparison", 1
#: Format of ``training_flow_<run>.nc``.
FLOW_FORMAT, FLOW_VERSION = "nngp_ppl.TrainingFlow", 1
#: Which implementation fills ``training_flow_<run>.nc`` (part of the stage's key, so
#: wiring another one reruns the stage): "none" until the effective action along training
#: (issue 20, part 3) is wired into :func:`effective_action_along_training`.
FLOW_IMPLEMENTATION = "none"
#: Points of the oracle's curves between the recorded steps (the figures' lines).
CURVE_POINTS = 80


def trained_file(key: str) -> str:
    return f"train_{key}.nc"


def comparison_file(key: str) -> str:
    return f"training_{key}.nc"


def flow_file(key: str) -> str:
    return f"training_flow_{key}.nc"


def trained_run(preset):
    """(run, resolved TrainSpec) of the study's ``[train]`` block, or None (no block, or
    its run left out by ``only``)."""
    spec = getattr(preset, "train", None)
    if spec is None:
        return None
    run = next((r for r in preset.runs() if r.key == spec.run), None)
    return None if run is None else (run, spec.resolved(preset, run))


def files(key: str) -> dict:
    return {"trained": trained_file(key), "comparison": comparison_file(key),
            "flow": flow_file(key)}


def plan_entry(preset) -> dict | None:
    """The plan's ``training`` entry (:func:`nngp_ppl.reproduce.plan_dict`)."""
    found = trained_run(preset)
    if found is None:
        return None
    run, spec = found
    return {"key": run.key, "label": run.label, "files": files(run.key),
            "spec": dataclasses.asdict(spec)}


# ---------------------------------------------------------------------------------------------
# the comparison with the oracle
# ---------------------------------------------------------------------------------------------
def _curve_steps(steps) -> np.ndarray:
    top = max(steps)
    grid = np.geomspace(1, max(top, 1), CURVE_POINTS) if top > 0 else np.zeros(1)
    return np.unique(np.concatenate([[0], np.round(grid), steps]).astype(np.int64))


def _rounding_floor(stats, c, width: int) -> np.ndarray:
    r"""Per tuple, a bound on the rounding error of the delta-method variance of a
    connected function ``c`` (:meth:`~nngp_ppl.CorrelatorStats.connected`).

    The accumulation multiplies float32 outputs in float32 (relative error
    :math:`\le m\,2^{-24}` for a product of m of them) before adding them in float64, so an
    estimator covariance entry :math:`\mathrm{Cov}(\hat G_s, \hat G_t)` can be off by
    :math:`\epsilon\,|G_{s\cup t}|/n` with :math:`\epsilon = 2n_{max}\,2^{-24}`; the
    variance :math:`J\Sigma J^T` then by at most :math:`\epsilon\,|J|\,|U|\,|J|^T/n`, U
    the raw moments of the unions. Untrained ensembles are centred and this is negligible;
    trained networks whose spread at an input is far below their mean (near the data,
    late in training) cancel many digits, and there the error bar is not computable from
    the stored sums.
    """
    from .stats import cumulants_with_jacobian, union_index

    count = stats.n_nets(width)
    sums = stats.moment_sums(width)
    used = c.orders
    moments = {m: sums[m] / count for m in used}
    jac = np.abs(cumulants_with_jacobian(moments, stats.k, c.order)[1])
    U = np.abs(np.block([[sums[a + b][union_index(stats.k, a, b)] / count for b in used]
                         for a in used]))
    eps = 2 * max(used) * 2.0**-24
    return eps * np.einsum("ti,ij,tj->t", jac, U, jac) / count


def _connected(stats, n: int, width: int):
    """(values, stderr) of the connected n-pt function; stderr NaN where the rounding
    floor (:func:`_rounding_floor`) is over a tenth of the variance."""
    c = stats.connected(n, width)
    usable = c.stderr**2 > 10.0 * _rounding_floor(stats, c, width)
    return c.values, np.where(usable, c.stderr, np.nan)


def _oracle(trained, reason):
    """(mu (S, k), Sigma (S, k, k), curve steps, mu curve, variance curve) or Nones."""
    from .theory.ntk import training_oracle

    if reason is not None:
        return None
    s, first = trained.setup, trained.at_step(trained.steps[0])
    args = (first.net, first.X, np.asarray(s.x_train), np.asarray(s.y_train))
    mu, cov = training_oracle(*args, trained.steps, s.learning_rate)
    curve = _curve_steps(trained.steps)
    mu_c, cov_c = training_oracle(*args, curve, s.learning_rate)
    return mu, cov, curve, mu_c, np.diagonal(cov_c, axis1=1, axis2=2)


def oracle_reason(trained) -> str | None:
    """Why the infinite-width oracle does not describe ``trained``, or None."""
    s, net = trained.setup, trained.at_step(trained.steps[0]).net
    if s.optimizer != "gd" or s.parametrisation != "ntk":
        return (f"the infinite-width oracle covers gradient descent in the NTK "
                f"parametrisation; this run used {s.optimizer} in the {s.parametrisation} "
                f"parametrisation")
    if not getattr(net, "zero_mean", True):
        return "the infinite-width oracle covers zero-mean ensembles only"
    return None


def oracle_comparison(trained):
    r"""The sampled connected 1-, 2- and 3-pt functions of ``trained``
    (:class:`~nngp_ppl.training.TrainedCorrelators` with orders 1..6 and covariance) at
    every step and width, against the infinite-width oracle, as an xarray Dataset.

    Variables (``tuple_n``: the distinct n-tuples of inputs, :func:`nngp_ppl.tuples.
    distinct_tuples`; ``inputs_n`` names their inputs): ``kappa{n}``, ``kappa{n}_stderr``
    (step, width, tuple_n), the sampled cumulants and their delta-method errors;
    ``oracle{n}`` (step, tuple_n): :math:`\mu_t`, :math:`\Sigma_t`, 0; ``z{n}`` = (kappa -
    oracle) / stderr, ``max_abs_z{n}`` (step, width) over the tuples with a usable error
    and ``unusable{n}`` (step, width) the count of those without (the stderr is NaN where
    the stored sums cannot resolve it, :func:`_rounding_floor`); the oracle's curves
    ``mu_curve``, ``var_curve`` (curve_step, input) between the recorded steps. Without an
    oracle (another optimiser or parametrisation, non-zero means) the ``oracle*``, ``z*``
    and curve variables are absent and the ``oracle`` attribute says why.
    """
    import xarray as xr

    from .tuples import distinct_tuples

    steps = list(trained.steps)
    first = trained.at_step(steps[0])
    widths, k = list(first.widths), first.k
    reason = oracle_reason(trained)
    oracle = _oracle(trained, reason)
    data, coords = {}, {"step": np.asarray(steps, np.int64),
                        "width": np.asarray(widths, np.int64), "input": np.arange(k)}
    for n in (1, 2, 3):
        tup = f"tuple_{n}"
        rows = np.asarray(distinct_tuples(k, n))
        vals = np.empty((len(steps), len(widths), len(rows)))
        errs = np.empty_like(vals)
        for i, step in enumerate(steps):
            st = trained.at_step(step)
            for j, w in enumerate(widths):
                vals[i, j], errs[i, j] = _connected(st, n, w)
        dims = ("step", "width", tup)
        data[f"kappa{n}"] = (dims, vals, {"long_name": f"sampled connected {n}-pt function"})
        data[f"kappa{n}_stderr"] = (dims, errs, {"long_name": "delta-method standard error"})
        data[f"inputs_{n}"] = ((tup, f"leg_{n}"), rows)
        if oracle is None:
            continue
        mu, cov = oracle[0], oracle[1]
        if n == 1:
            ref = mu
        elif n == 2:
            ref = cov[:, rows[:, 0], rows[:, 1]]
        else:
            ref = np.zeros((len(steps), len(rows)))
        z = (vals - ref[:, None, :]) / errs
        data[f"oracle{n}"] = (("step", tup), ref, {"long_name": (
            "mu_t", "Sigma_t", "0 (a Gaussian process has no connected 3-pt function)")[n - 1]})
        data[f"z{n}"] = (dims, z)
        data[f"max_abs_z{n}"] = (("step", "width"), _nanmax(np.abs(z)))
        data[f"unusable{n}"] = (("step", "width"), np.sum(~np.isfinite(z), axis=2),
                                {"long_name": "tuples whose error is below the rounding "
                                              "floor of the stored sums (z not computed)"})
    data.update(_standardised_three_point(data, k))
    if oracle is not None:
        coords["curve_step"] = oracle[2]
        data["mu_curve"] = (("curve_step", "input"), oracle[3])
        data["var_curve"] = (("curve_step", "input"), oracle[4])
    data["n_nets"] = (("width",), np.asarray([first.n_nets(w) for w in widths], np.int64))
    s = trained.setup
    attrs = {"training": json.dumps(s.describe()), "ensemble": first.net.describe(),
             "inputs": json.dumps(first.X.tolist()), "seed": int(first.seed),
             "oracle": "training_oracle: linearised gradient descent at N -> infinity "
                       "(Lee et al. 2019), NTK and NNGP kernels of the ensemble"
             if oracle is not None else f"none: {reason}"}
    return xr.Dataset(data, coords=coords, attrs=attrs)


def _nanmax(a) -> np.ndarray:
    """Max over the last axis ignoring NaN (NaN where every entry is NaN), no warning."""
    finite = np.isfinite(a)
    out = np.max(np.where(finite, a, -np.inf), axis=-1)
    return np.where(np.any(finite, axis=-1), out, np.nan)


def _standardised_three_point(data: dict, k: int) -> dict:
    r""":math:`\kappa_3(x,x,x) / \kappa_2(x,x)^{3/2}` per input (the skewness of f_t(x)), and
    its standard error :math:`\delta\kappa_3 / \kappa_2^{3/2}`: the error of
    :math:`\kappa_2` is left out (relative :math:`\approx\sqrt{2/n_{nets}}`, a few per cent
    of the ratio's own error at the sizes the stage runs). Scale-free, so a 3-pt function
    that shrinks only because training shrinks the variance does not look like zero."""
    from .tuples import distinct_tuples

    def diagonal(n):
        rows = np.asarray(distinct_tuples(k, n))
        return [int(np.flatnonzero(np.all(rows == a, axis=1))[0]) for a in range(k)]

    var = data["kappa2"][1][..., diagonal(2)]
    scale = np.where(var > 0, var, np.nan) ** 1.5
    dims = ("step", "width", "input")
    return {"skewness": (dims, data["kappa3"][1][..., diagonal(3)] / scale,
                         {"long_name": "kappa3(x,x,x) / kappa2(x,x)^(3/2)"}),
            "skewness_stderr": (dims, data["kappa3_stderr"][1][..., diagonal(3)] / scale,
                                {"long_name": "stderr(kappa3) / kappa2^(3/2)"})}


# ---------------------------------------------------------------------------------------------
# the couplings and the symmetry verdict along training (issue 20, part 3)
# ---------------------------------------------------------------------------------------------
def effective_action_along_training(trained, *, seed: int = 0, progress: bool = False):
    """The couplings (with bands) and the f -> -f verdict at every recorded step, as a
    Dataset over ``step``; the report draws them against the step.

    Not implemented in this module: the effective action along training (expansion
    around the learned 1-pt function, coupling posteriors per step, the symmetry test per
    step) lives with the inference code. Until it is wired here (and
    :data:`FLOW_IMPLEMENTATION` names it), this returns a dataset that says, in its
    ``computed`` and ``reason`` attributes, that nothing was computed; the report then
    says so instead of drawing the two figures.
    """
    import xarray as xr

    del seed, progress
    return xr.Dataset(coords={"step": np.asarray(trained.steps, np.int64)}, attrs={
        "computed": "no",
        "reason": "the couplings and the symmetry verdict along training are not wired "
                  "into the training stage (nngp_ppl.training_stage."
                  "effective_action_along_training)"})


# ---------------------------------------------------------------------------------------------
# the stages
# ---------------------------------------------------------------------------------------------
def _train_action(run, spec, progress: bool, log, params: dict):
    def action(out: Path):
        from .training import train_correlators

        digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
        ckpt = out / f"{trained_file(run.key)}.partial-{digest.hexdigest()[:12]}"
        for stale in out.glob(f"{trained_file(run.key)}.partial-*"):
            if stale != ckpt:  # another setting's shards: never mixed into this run
                shutil.rmtree(stale, ignore_errors=True)
        if ckpt.is_dir():
            log(f"        resuming from {ckpt.name}")
        result = train_correlators(
            run.net(), run.inputs(), list(spec.widths), spec.n_nets,
            np.asarray(spec.x_train), np.asarray(spec.y_train), list(spec.steps),
            spec.learning_rate, orders=TRAIN_ORDERS, seed=spec.seed,
            optimizer=spec.optimizer, parametrisation=spec.parametrisation,
            momentum=spec.momentum, checkpoint=ckpt, resume=True, progress=progress)
        result.to_netcdf(out / trained_file(run.key))
        shutil.rmtree(ckpt, ignore_errors=True)

    return action


def _comparison_action(run):
    def action(out: Path):
        from .reproduce import write_netcdf
        from .training import TrainedCorrelators

        trained = TrainedCorrelators.from_netcdf(out / trained_file(run.key))
        write_netcdf(oracle_comparison(trained), out / comparison_file(run.key),
                     file_format=COMPARISON_FORMAT, version=COMPARISON_VERSION)

    return action


def _flow_action(run, seed: int, progress: bool):
    def action(out: Path):
        from .reproduce import write_netcdf
        from .training import TrainedCorrelators

        trained = TrainedCorrelators.from_netcdf(out / trained_file(run.key))
        ds = effective_action_along_training(trained, seed=seed, progress=progress)
        write_netcdf(ds, out / flow_file(run.key), file_format=FLOW_FORMAT,
                     version=FLOW_VERSION)

    return action


def training_stages(preset, *, progress: bool = True, log=print) -> list:
    """The stages of the study's ``[train]`` block (module docstring); none without one."""
    from .reproduce import Stage
    from .training import TRAINED_VERSION

    found = trained_run(preset)
    if found is None:
        return []
    run, spec = found
    params = {"net": run.net().to_dict(), "X": run.inputs().tolist(),
              "orders": list(TRAIN_ORDERS), "format": TRAINED_VERSION,
              "train": {k: v for k, v in dataclasses.asdict(spec).items() if k != "data"}}
    described = (f"{spec.optimizer} ({spec.parametrisation} parametrisation, learning rate "
                 f"{spec.learning_rate:g}) on {len(spec.y_train)} points")
    trained = trained_file(run.key)
    return [
        Stage(f"train_{run.key}",
              f"train {run.label}: widths {','.join(map(str, spec.widths))}, "
              f"{spec.n_nets:,} networks each, {described}, steps "
              f"{','.join(map(str, spec.steps))}",
              (), (trained,), params, _train_action(run, spec, progress, log, params)),
        Stage(f"training_{run.key}",
              f"trained {run.label} against the infinite-width oracle, per step",
              (trained,), (comparison_file(run.key),),
              {"format": COMPARISON_VERSION, "curve": CURVE_POINTS},
              _comparison_action(run)),
        Stage(f"training_flow_{run.key}",
              f"couplings and f -> -f along training, {run.label}",
              (trained,), (flow_file(run.key),),
              {"format": FLOW_VERSION, "implementation": FLOW_IMPLEMENTATION,
               "seed": spec.seed},
              _flow_action(run, spec.seed, progress)),
    ]


def report_inputs(preset) -> list[str]:
    """The files of the training stages the report reads."""
    found = trained_run(preset)
    return [] if found is None else [comparison_file(found[0].key), flow_file(found[0].key)]
