"""``nngp-ppl train``: train every sampled network on a data set, record correlators per step.

Example::

    nngp-ppl train --ensemble erf --sigma-b 0.5 --inputs=-1,-0.2,0.6 --widths 10,100 \\
        --n-nets 1e4 --data points.csv --steps 0,10,100,1000 --learning-rate 0.5 -o trained.nc

The networks are the ones ``nngp-ppl sample`` draws with the same seed (step 0 is its
result bit for bit); each is trained on the data by full-batch gradient descent on the mean
squared error ``1/(2n) sum (f(x_i) - y_i)^2`` (``--optimizer sgd|momentum|adam``: optax),
in the NTK or the standard parametrisation (:mod:`nngp_ppl.training.trainer`). The output holds the
correlator statistics of every recorded step along a ``step`` coordinate
(:class:`nngp_ppl.training.trainer.TrainedCorrelators`).

``--data``: an ``.npz`` file with arrays ``x_train`` (n, d_in) or (n,) and ``y_train`` (n,)
(read without pickle), or a ``.csv`` file of n rows ``x_1, .., x_{d_in}, y`` (one header
row allowed). A checkpoint directory (``RUN.nc.partial`` by default) is saved after each
shard; rerun with ``--resume`` after a kill. It is deleted once the output is written.
``--devices`` and ``--dask`` (local devices or Dask workers) work as for ``nngp-ppl sample``.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from pathlib import Path

import h5netcdf
import numpy as np

from ..._io import output_file
from ..._lock import exclusive_lock
from ...sampling.stats import normalised_deviation
from ...study.train_spec import read_training_data
from ...theory.ntk import gaussian_moment_tuples, training_oracle
from ...training.trainer import TRAINED_FORMAT, TrainedCorrelators, train_correlators
from .sample import (
    add_ensemble_arguments,
    ensemble_and_inputs,
    parse_integer,
    parse_integer_list,
    parse_real,
)

__all__ = [
    "OPTION_NAMES",
    "register",
    "run",
    "is_trained_file",
    "show_trained",
]

OPTION_NAMES = {"learning_rate": "--learning-rate", "optimizer": "--optimizer",
                "parametrisation": "--parametrisation", "steps": "--steps",
                "x_train": "--data", "y_train": "--data", "momentum": "--momentum",
                "n_nets": "--n-nets", "widths": "--widths", "orders": "--orders",
                "seed": "--seed", "batch_size": "--batch-size", "shard_size": "--shard-size",
                "devices": "--devices", "checkpoint": "--checkpoint", "X": "--inputs"}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train the sampled networks on data; correlators at recorded steps",
        description=__doc__.splitlines()[0].split(": ", 1)[1])
    add_ensemble_arguments(p)
    p.add_argument("--widths", required=True, metavar="N,N,...", help="hidden widths")
    p.add_argument("--n-nets", required=True, metavar="COUNT", help="networks per width")
    p.add_argument("--data", required=True, metavar="FILE",
                   help="training data: .npz (x_train, y_train) or .csv (x.., y per row)")
    p.add_argument("--steps", required=True, metavar="t,t,...",
                   help="training steps at which to record the correlators, e.g. 0,10,100")
    p.add_argument("--learning-rate", required=True, metavar="ETA", help="learning rate")
    p.add_argument("--optimizer", default="gd", choices=["gd", "sgd", "momentum", "adam"],
                   help="gd (default, plain gradient descent) or an optax optimiser")
    p.add_argument("--momentum", default="0.9", metavar="BETA",
                   help="momentum of --optimizer momentum (default 0.9)")
    p.add_argument("--parametrisation", default="ntk", choices=["ntk", "standard"],
                   help="ntk (default): train standard normals, scales in the forward pass; "
                        "standard: train the weights themselves")
    p.add_argument("--orders", default="2,4,6", metavar="n,n,...",
                   help="correlator orders (default 2,4,6)")
    p.add_argument("--seed", default="0", metavar="SEED", help="random seed (default 0)")
    p.add_argument("--batch-size", default=None, metavar="B", help="networks per batch")
    p.add_argument("--shard-size", default=None, metavar="S", help="networks per shard")
    p.add_argument("--devices", default=None, metavar="D", help="first D local JAX devices")
    p.add_argument("--dask", default=None, metavar="ADDRESS",
                   help="train the shards on Dask workers: a scheduler address "
                        "tcp://HOST:PORT, or local[:N] for N local worker processes (needs "
                        "nngp_ppl[distributed]); the same bits as a local run")
    p.add_argument("--no-covariance", action="store_true",
                   help="keep only standard errors, not the estimator covariance")
    p.add_argument("--checkpoint", default=None, metavar="DIR",
                   help="checkpoint directory (default: RUN.nc.partial)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    p.add_argument("-o", "--output", required=True, metavar="RUN.nc", help="output file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:

    net, X = ensemble_and_inputs(args)
    x_train, y_train = read_training_data(args.data, net.d_in, "--data")
    widths = parse_integer_list("--widths", args.widths, minimum=1)
    n_nets = parse_integer("--n-nets", args.n_nets, minimum=2)
    steps = parse_integer_list("--steps", args.steps, minimum=0)
    kw = {
        "orders": parse_integer_list("--orders", args.orders, minimum=0),
        "seed": parse_integer("--seed", args.seed, minimum=0),
        "optimizer": args.optimizer, "parametrisation": args.parametrisation,
        "momentum": parse_real("--momentum", args.momentum),
        "covariance": not args.no_covariance, "progress": not args.no_progress,
        "batch_size": None if args.batch_size is None else parse_integer(
            "--batch-size", args.batch_size, minimum=1),
        "shard_size": None if args.shard_size is None else parse_integer(
            "--shard-size", args.shard_size, minimum=1),
        "devices": None if args.devices is None else parse_integer("--devices", args.devices,
                                                              minimum=1),
        "dask": args.dask,
    }
    eta = parse_real("--learning-rate", args.learning_rate)
    out = output_file("-o/--output", args.output)
    checkpoint = Path(args.checkpoint) if args.checkpoint else out.with_name(
        out.name + ".partial")
    out.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as held:
        held.enter_context(exclusive_lock(out, option="-o/--output"))
        return _train(net, X, widths, n_nets, x_train, y_train, steps, eta, kw, out,
                      checkpoint, args.resume)


def _train(net, X, widths, n_nets, x_train, y_train, steps, eta, kw, out, checkpoint,
           resume) -> int:

    t0 = time.perf_counter()
    try:
        result = train_correlators(net, X, widths, n_nets, x_train, y_train, steps, eta,
                                   checkpoint=checkpoint, resume=resume, **kw)
    except KeyboardInterrupt:
        if checkpoint.is_dir():
            print(f"nngp-ppl train: finished shards are saved in {checkpoint}; rerun the "
                  "same command with --resume to continue", file=sys.stderr)
        raise
    result.to_netcdf(out)
    shutil.rmtree(checkpoint, ignore_errors=True)
    print(f"wrote {out}: {net.describe()}, {len(X)} inputs, widths "
          f"{','.join(map(str, widths))}, {n_nets} networks each, steps "
          f"{','.join(map(str, result.steps))}, {time.perf_counter() - t0:.1f} s")
    return 0


def is_trained_file(path) -> bool:
    """Whether ``path`` is a trained-correlators file (read its format attribute only)."""

    try:
        with h5netcdf.File(path, "r") as f:
            return f.attrs.get("nngp_ppl_format") == TRAINED_FORMAT
    except (OSError, ValueError):
        return False


def show_trained(path, out) -> int:
    """``nngp-ppl show`` of a trained file: per step and width, the normalised deviation
    of G_n from the infinite-width trained GP (μ_t, Σ_t; :mod:`nngp_ppl.theory.ntk`), with
    the statistical background, for every measured order."""

    run = TrainedCorrelators.from_netcdf(path)
    s, first = run.setup, run.at_step(run.steps[0])
    print(f"{path}: {first.net.describe()}, {first.k} inputs, seed {first.seed}, trained "
          f"with {s.optimizer} (learning rate {s.learning_rate:g}, {s.parametrisation} "
          f"parametrisation) on {s.n_train} points; steps {','.join(map(str, run.steps))}",
          file=out)
    if s.optimizer != "gd" or s.parametrisation != "ntk" or not first.net.zero_mean:
        print("the infinite-width oracle covers gradient descent in the NTK parametrisation "
              "of zero-mean ensembles only; nothing to compare", file=out)
        return 0
    mu, cov = training_oracle(first.net, first.X, np.asarray(s.x_train), s.y_train,
                              run.steps, s.learning_rate)
    print("m_n = <|G_n - G_n(oracle GP at step t)| / |G_n(oracle)|> over tuples; noise = "
          "<stderr / |G_n(oracle)|>", file=out)
    # Even orders only: an odd G_n of the oracle is zero at step 0, no scale to divide by
    # (`show --step` and the connected-function table judge the odd ones against zero).
    orders = [n for n in first.orders if n % 2 == 0]
    print(f"{'step':>7} {'width':>7}" + "".join(f" {f'm_{n}':>10} {'noise':>10}"
                                                 for n in orders), file=out)
    for i, step in enumerate(run.steps):
        st = run.at_step(step)
        ref = {n: gaussian_moment_tuples(mu[i], cov[i], n) for n in orders}
        for w in st.widths:
            cells = "".join(
                f" {normalised_deviation(st.correlator_tuples(n, w), ref[n]):>10.3e}"
                f" {normalised_deviation(ref[n] + st.stderr_tuples(n, w), ref[n]):>10.3e}"
                for n in orders)
            print(f"{step:>7} {w:>7}{cells}", file=out)
    return 0
