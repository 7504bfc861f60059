r"""The stages of a study's ``[train]`` block (:mod:`nngp_ppl.study.train_spec`).

Three stages, after the study's own (``nngp-ppl reproduce`` runs them; each is skipped
when its manifest record matches, like every stage of :mod:`nngp_ppl.study.stages`):

===============================  ==========================================================
``train_<run>``                  ``train_<run>.nc``: the trained ensemble's correlators of
                                 orders 1..6 with covariance at every recorded step
                                 (:class:`~nngp_ppl.training.trainer.TrainedCorrelators`); a kill
                                 loses at most one shard (checkpoint
                                 ``train_<run>.nc.partial-<key>``, resumed on the next run)
``training_<run>``               ``training_<run>.nc``: per step and width, the sampled
                                 connected 1-, 2- and 3-pt functions with standard errors
                                 against the infinite-width oracle
                                 (:func:`nngp_ppl.training.comparison.oracle_comparison`)
``training_flow_<run>``          ``training_flow_<run>.nc``: couplings and the f -> -f
                                 verdict per step (:func:`effective_action_along_training`)
===============================  ==========================================================
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from .._io import write_netcdf
from ..inference.training_flow import training_flow
from ..training.comparison import (
    COMPARISON_FORMAT,
    COMPARISON_VERSION,
    CURVE_POINTS,
    FLOW_FORMAT,
    FLOW_IMPLEMENTATION,
    FLOW_VERSION,
    TRAIN_ORDERS,
    oracle_comparison,
)
from ..training.trainer import TRAINED_VERSION, TrainedCorrelators, train_correlators
from .manifest import Stage
from .train_spec import comparison_file, flow_file, trained_file, trained_run

__all__ = ["effective_action_along_training", "report_inputs", "training_stages"]


def effective_action_along_training(trained, *, seed: int = 0, progress: bool = False):
    """The couplings (with bands) and the f -> -f verdict at every recorded step, as a
    Dataset over ``step``; the report draws them against the step (figures d, e; the
    variables it reads: :mod:`nngp_ppl.study.report.training`).

    :func:`nngp_ppl.inference.training_flow.training_flow` (docs/training_flow.md): the
    expansion around the learned 1-pt function with the trained covariance Σ_t as
    propagator, the (g3, λ) posteriors per step (closed form, Λ = 10) and the test of
    φ -> -φ around the learned mean, whose verdict and p-value the report reads as
    ``symmetry_reject`` and ``symmetry_p_value``.
    """
    del progress
    ds = training_flow(trained, seed=seed)
    ds = ds.assign(symmetry_p_value=ds["parity_p_value"],
                   symmetry_reject=ds["parity_reject"])
    # "band" is training_flow's account of how the band was built; the figure's title
    # takes this shorter label.
    kind = "score band" if ds.attrs["band"].startswith("score") else "posterior interval"
    ds.attrs.update(computed="yes", reason="",
                    band_label=f"{ds.attrs['interval']:.0%} {kind}")
    return ds


def _train_action(run, spec, progress: bool, log, params: dict):
    def action(out: Path):
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
        trained = TrainedCorrelators.from_netcdf(out / trained_file(run.key))
        write_netcdf(oracle_comparison(trained), out / comparison_file(run.key),
                     file_format=COMPARISON_FORMAT, version=COMPARISON_VERSION)

    return action


def _flow_action(run, seed: int, progress: bool):
    def action(out: Path):
        trained = TrainedCorrelators.from_netcdf(out / trained_file(run.key))
        ds = effective_action_along_training(trained, seed=seed, progress=progress)
        write_netcdf(ds, out / flow_file(run.key), file_format=FLOW_FORMAT,
                     version=FLOW_VERSION)

    return action


def training_stages(preset, *, progress: bool = True, log=print) -> list[Stage]:
    """The stages of the study's ``[train]`` block (module docstring); none without one."""
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
