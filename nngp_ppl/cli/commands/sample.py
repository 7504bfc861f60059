"""``nngp-ppl sample``: draw networks and write their correlator statistics to netCDF.

Example::

    nngp-ppl sample --ensemble erf --preset paper --widths 2,10,100 --n-nets 1e5 -o erf.nc

The file holds float64 monomial sums per width with provenance (see
:class:`nngp_ppl.CorrelatorStats`); ``nngp-ppl show erf.nc`` summarises it. The file is
written only when sampling has finished, under a temporary name renamed at the end, so
an interrupted run never leaves a partial output.

Long runs: the work is cut into shards (``--shard-size``) that run concurrently on all
local JAX devices (``--devices``) or on Dask workers (``--dask tcp://HOST:PORT`` or
``--dask local:N``). After each shard the finished sums are saved atomically to a
checkpoint, ``erf.nc.partial`` by default (``--checkpoint``); after a crash or kill,
rerunning the same command with ``--resume`` continues from it, neither losing nor
double-counting a network, and produces the same file as an uninterrupted run. The
checkpoint is deleted once the output is written. See docs/scaling.md.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import re
import sys
import time
import warnings

import numpy as np

from ... import _checks
from ..._checks import NNGPInputError
from ..._io import output_file
from ..._lock import exclusive_lock
from ...ensembles.core import make_ensemble
from ...sampling.checkpoint import ShardLedger, remove_stale_temporaries
from ...sampling.sampler import check_resumable, plan_run, sample_correlators
from ...sampling.stats import HeavyTailWarning
from ...study.presets import PAPER_WIDTHS, paper_inputs
from ...theory.exact import limit_kernel

__all__ = [
    "add_ensemble_arguments",
    "add_trusted_ensemble_argument",
    "register",
    "parse_integer",
    "parse_real",
    "parse_integer_list",
    "parse_inputs",
    "import_from_command_line",
    "ensemble_and_inputs",
    "check_kernel",
    "run",
]

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def add_ensemble_arguments(p) -> None:
    """The options that :func:`ensemble_and_inputs` reads: ensemble, σ's, inputs or preset."""
    p.add_argument("--ensemble", required=True, metavar="NAME",
                   help="network ensemble: erf, relu, gauss, an activation (tanh, gelu, "
                        "sin, softplus: ActivationNet), mlp (with --depth, --activation), "
                        "a registered one, or your own as package.module:obj (an "
                        "nngp_ppl.Ensemble class or a function returning an ensemble, e.g. "
                        "a JaxNetwork; called with d_in and the options given)")
    p.add_argument("--d-in", default="1", metavar="D", help="input dimension (default 1)")
    p.add_argument("--depth", default=None, metavar="L",
                   help="hidden layers of an mlp (default 2)")
    p.add_argument("--activation", default=None, metavar="NAME",
                   help="activation of an mlp: erf, relu, tanh, gelu, sin, softplus or a "
                        "registered one (default erf)")
    p.add_argument("--sigma-w", default=None, metavar="S",
                   help="weight scale sigma_W in 0..1e10 (default 1)")
    p.add_argument("--sigma-b", default=None, metavar="S",
                   help="bias scale sigma_b in 0..1e10 (default 1; 0 for relu, as the paper); "
                        "not both sigmas 0")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--inputs", metavar="POINTS",
                     help='inputs: "-1,-0.2,0.2,1" for d_in = 1; points separated by ";" '
                          'otherwise, e.g. "0.5,0.5; 1,0.5"')
    src.add_argument("--preset", metavar="NAME",
                     help="named input set: paper (the authors' inputs for this ensemble and d_in)")


def add_trusted_ensemble_argument(p) -> None:
    """``--ensemble PATH`` on a command that reads files: the user's own ensemble module,
    which the file may name (:func:`nngp_ppl.allow_import`; ``nngp_ppl.cli.main`` applies
    it). Without it a file naming an unregistered class is refused: reading never imports."""
    p.add_argument("--ensemble", dest="trusted_ensembles", action="append", default=None,
                   metavar="MODULE:CLASS",
                   help="your own ensemble (package.module:Class or :factory) that the file "
                        "names; reading a file never imports code you did not name "
                        "(repeatable)")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sample",
        help="draw networks, measure 2-, 4-, 6-point correlators, write a netCDF file",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
    )
    add_ensemble_arguments(p)
    for name, what in (("w", "weights"), ("b", "biases")):
        p.add_argument(f"--mu-{name}", default=None, metavar="M",
                       help=f"mean of the {what} (default 0); non-zero means break f -> -f, "
                            "are fitted centred and need the odd orders, e.g. --orders "
                            "1,2,3,4")
    p.add_argument("--widths", required=True, metavar="N,N,...",
                   help='hidden widths, e.g. "2,10,100", or "paper" for the paper\'s ten')
    p.add_argument("--n-nets", required=True, metavar="COUNT",
                   help="networks per width, e.g. 100000 or 1e5")
    p.add_argument("--orders", default="2,4,6", metavar="n,n,...",
                   help="correlator orders in 1..6; odd ones measure the 1-pt function and "
                        "odd correlators (default 2,4,6)")
    p.add_argument("--seed", default="0", metavar="SEED", help="random seed (default 0)")
    p.add_argument("--batch-size", default=None, metavar="B",
                   help="networks per compiled step (default: from width and inputs)")
    p.add_argument("--no-covariance", action="store_true",
                   help="keep only standard errors, not the full estimator covariance "
                        "(much cheaper for many inputs)")
    p.add_argument("--shard-size", default=None, metavar="S",
                   help="networks per shard, the unit of parallel work and checkpointing "
                        "(default: about n_nets/8, at most 256 batches)")
    p.add_argument("--devices", default=None, metavar="D",
                   help="use the first D local JAX devices (default: all)")
    p.add_argument("--dask", default=None, metavar="ADDRESS",
                   help="run the shards on Dask workers: a scheduler address tcp://HOST:PORT, "
                        "or local[:N] for N local worker processes (needs nngp_ppl[distributed])")
    p.add_argument("--checkpoint", default=None, metavar="FILE",
                   help="checkpoint file saved after each shard (default: RUN.nc.partial)")
    p.add_argument("--no-checkpoint", action="store_true", help="do not checkpoint")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its checkpoint (same arguments); "
                        "starts afresh if there is none")
    p.add_argument("-o", "--output", required=True, metavar="RUN.nc", help="output netCDF file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def parse_integer(option: str, text: str, *, minimum: int) -> int:
    """An integer option; accepts exact float notation such as 1e5."""
    text = text.strip()
    try:
        value = int(text)
    except ValueError:
        try:
            f = float(text)
        except ValueError:
            raise NNGPInputError(f"{option} must be an integer, got {text!r}") from None
        if not f.is_integer():
            raise NNGPInputError(f"{option} must be an integer, got {text!r}") from None
        value = int(f)
    if value < minimum:
        raise NNGPInputError(f"{option} must be an integer >= {minimum}, got {value}")
    return value


def parse_real(option: str, text: str) -> float:
    """A finite real option (no option of this CLI means anything by nan or inf)."""
    try:
        value = float(text)
    except ValueError:
        raise NNGPInputError(f"{option} must be a real number, got {text!r}") from None
    if not math.isfinite(value):
        raise NNGPInputError(f"{option} must be a finite real number, got {text!r}")
    return value


def parse_integer_list(option: str, text: str, *, minimum: int) -> list[int]:
    parts = [t for t in re.split(r"[,\s]+", text.strip()) if t]
    if not parts:
        raise NNGPInputError(f"{option} must list at least one integer, got {text!r}")
    return [parse_integer(option, t, minimum=minimum) for t in parts]


def parse_inputs(text: str, d_in: int) -> list[list[float]]:
    """Points from ``--inputs``: numbers separated by commas or spaces, points by ``;``.

    Without ``;`` and with d_in = 1 every number is one input point.
    """
    text = text.strip()
    if not text:
        raise NNGPInputError("--inputs must list at least one input point, got an empty string")
    chunks = [c for c in text.split(";")] if ";" in text else None
    if chunks is None:
        if d_in != 1:
            raise NNGPInputError(
                f'--inputs: with --d-in {d_in} separate the points by ";", e.g. "0.5,0.5; 1,0.5"'
            )
        chunks = [c for c in re.split(r"[,\s]+", text) if c]
    points = []
    for chunk in chunks:
        coords = [c for c in re.split(r"[,\s]+", chunk.strip()) if c]
        if not coords:
            raise NNGPInputError(f"--inputs has an empty point in {text!r}")
        for c in coords:
            if not re.fullmatch(_NUMBER, c):
                raise NNGPInputError(f"--inputs must be real numbers, got {c!r}")
        points.append([float(c) for c in coords])
    if len({len(p) for p in points}) != 1:
        raise NNGPInputError(f"--inputs is ragged: points of different lengths in {text!r}")
    if len(points[0]) != d_in:
        raise NNGPInputError(
            f"--inputs has points of dimension {len(points[0])} but --d-in is {d_in}"
        )
    return points


def import_from_command_line(name: str) -> None:
    """Import the module of ``--ensemble module:obj`` the way ``python -m`` finds a module:
    the current working directory first, then the Python path.

    The console script ``nngp-ppl`` runs with its own directory, not the working one, on
    ``sys.path``, so ``--ensemble mymod:MyNet`` beside the user's files would not be found
    without ``PYTHONPATH=.``. Only a name the user types is looked up here; the working
    directory is on the path only during this import (a module named inside a file, a run
    file's ``ensemble`` attribute or a study's, is never looked for there). Already
    imported modules are left alone; a module that fails while importing is named with
    its error.
    """

    module = str(name).partition(":")[0].strip()
    if ":" not in str(name) or not module or module in sys.modules:
        return
    cwd = os.getcwd()
    added = not any(os.path.abspath(p or os.curdir) == cwd for p in sys.path)
    if added:
        sys.path.insert(0, cwd)
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name is not None and (module == err.name or module.startswith(err.name + ".")):
            raise NNGPInputError(
                f"--ensemble {name}: module {module!r} cannot be imported: it is neither in "
                f"the working directory ({cwd}) nor on the Python path; run from the "
                "directory that holds it, or put its directory on PYTHONPATH") from None
        raise NNGPInputError(f"--ensemble {name}: importing {module} failed: {err}") from None
    except Exception as err:  # the user's module raised while importing
        raise NNGPInputError(
            f"--ensemble {name}: importing {module} failed: {type(err).__name__}: {err}"
        ) from None
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def ensemble_and_inputs(args):
    """The ensemble and the inputs named by --ensemble, --d-in, --sigma-*, --preset/--inputs
    (a module named by --ensemble is looked for in the working directory first:
    :func:`import_from_command_line`)."""

    d_in = parse_integer("--d-in", args.d_in, minimum=1)
    hyper = {"d_in": d_in}
    if args.sigma_w is not None:
        hyper["sigma_w"] = parse_real("--sigma-w", args.sigma_w)
    if args.sigma_b is not None:
        hyper["sigma_b"] = parse_real("--sigma-b", args.sigma_b)
    for name in ("mu_w", "mu_b"):  # only `sample` has these options
        if getattr(args, name, None) is not None:
            hyper[name] = parse_real(f"--{name.replace('_', '-')}", getattr(args, name))
    if getattr(args, "depth", None) is not None:
        hyper["depth"] = parse_integer("--depth", args.depth, minimum=1)
    if getattr(args, "activation", None) is not None:
        hyper["activation"] = args.activation.strip()
    import_from_command_line(args.ensemble)
    try:
        net = make_ensemble(args.ensemble, **hyper)
    except NNGPInputError as err:
        raise NNGPInputError(_option_names(str(err))) from None
    except TypeError as err:
        # A class without one of the options given (e.g. --depth for erf).
        raise NNGPInputError(f"--ensemble {args.ensemble}: {err}") from None
    # Every later stage reads the ensemble back from the run file: refuse now, before
    # sampling, one that could not be saved (e.g. a JaxNetwork of closures).
    try:
        net.to_dict()
    except NNGPInputError as err:
        raise NNGPInputError(f"--ensemble: {err}") from None
    if args.preset is not None:
        if args.preset.strip().lower() != "paper":
            raise NNGPInputError(f"--preset must be 'paper', got {args.preset!r}")
        X = paper_inputs(args.ensemble, d_in)
    else:
        X = parse_inputs(args.inputs, d_in)
    check_kernel(net, X)
    return net, X


def check_kernel(net, X) -> None:
    """Refuse inputs on which the ensemble's GP kernel is not finite, before any work.

    Every later stage (standard errors, GP references, fits) divides by or factorises the
    kernel, so a NaN there would surface as nonsense far downstream.
    """
    X = _checks.inputs("--inputs", X, net.d_in)
    # A net with non-zero means has no zero-mean closed form: its limit covariance instead.
    K = np.asarray(net.kernel(X) if getattr(net, "zero_mean", True) else limit_kernel(net, X),
                   dtype=np.float64)
    if not np.all(np.isfinite(K)):
        raise NNGPInputError(
            f"--inputs: the {net.describe()} kernel is not finite on these inputs "
            f"(largest |x| = {np.max(np.abs(X)):g}); use inputs of moderate size"
        )
    _checks.kernel_scale("--inputs", K, net.describe())


def run(args) -> int:

    net, X = ensemble_and_inputs(args)
    if args.widths.strip().lower() == "paper":
        widths = list(PAPER_WIDTHS)
    else:
        widths = parse_integer_list("--widths", args.widths, minimum=1)
    n_nets = parse_integer("--n-nets", args.n_nets, minimum=1)
    if n_nets < 2:
        raise NNGPInputError(
            f"--n-nets must be at least 2: standard errors and the estimator covariance need "
            f"two networks, got {n_nets}"
        )
    orders = parse_integer_list("--orders", args.orders, minimum=0)
    seed = parse_integer("--seed", args.seed, minimum=0)
    batch = None if args.batch_size is None else parse_integer("--batch-size", args.batch_size,
                                                          minimum=1)
    shard = None if args.shard_size is None else parse_integer("--shard-size", args.shard_size,
                                                          minimum=1)
    devices = None if args.devices is None else parse_integer("--devices", args.devices, minimum=1)
    out = output_file("-o/--output", args.output)
    if args.no_checkpoint and (args.resume or args.checkpoint):
        raise NNGPInputError("--no-checkpoint cannot be combined with --resume or --checkpoint")
    checkpoint = None
    if not args.no_checkpoint:
        checkpoint = (output_file("--checkpoint", args.checkpoint) if args.checkpoint
                      else out.with_name(out.name + ".partial"))
        if checkpoint.resolve() == out.resolve():
            raise NNGPInputError("--checkpoint must differ from --output")
    # The output directory must exist for the lock file; atomic_path would create it anyway.
    out.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as held:
        # Two runs with one -o would share the checkpoint and the last writer would win.
        held.enter_context(exclusive_lock(out, option="-o/--output"))
        if checkpoint is not None:
            # Locked whatever its name: `-o b.nc --checkpoint a.nc.partial` beside a running
            # `-o a.nc` would otherwise delete the checkpoint that run is writing.
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            held.enter_context(exclusive_lock(
                checkpoint, option="--checkpoint" if args.checkpoint else
                "-o/--output (its checkpoint)"))
        return _sample(args, net, X, widths, n_nets, orders, seed, batch, shard, devices,
                       out, checkpoint)


def _sample(args, net, X, widths, n_nets, orders, seed, batch, shard, devices, out,
            checkpoint) -> int:

    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", HeavyTailWarning)
        try:
            if checkpoint is not None and args.resume and checkpoint.is_file():
                _say_resuming(net, X, widths, n_nets, orders, seed, batch, shard, args,
                              checkpoint)
            stats = sample_correlators(net, X, widths, n_nets, orders=orders, seed=seed,
                                       batch_size=batch, progress=not args.no_progress,
                                       covariance=not args.no_covariance, shard_size=shard,
                                       devices=devices, dask=args.dask, checkpoint=checkpoint,
                                       resume=args.resume)
        except NNGPInputError as err:
            raise NNGPInputError(_option_names(str(err))) from None
        except KeyboardInterrupt:
            if checkpoint is not None and checkpoint.is_file():
                print(f"nngp-ppl sample: finished shards are saved in {checkpoint}; rerun "
                      "the same command with --resume to continue", file=sys.stderr)
            raise
    for w in caught:
        if issubclass(w.category, HeavyTailWarning):
            print(f"nngp-ppl sample: warning: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    stats.to_netcdf(out)
    if checkpoint is not None:
        # Only now is the checkpoint redundant: the output holds everything it did.
        checkpoint.unlink(missing_ok=True)
        remove_stale_temporaries(checkpoint)
    dt = time.perf_counter() - t0
    print(
        f"wrote {out}: {net.describe()}, {stats.k} inputs, widths "
        f"{','.join(map(str, stats.widths))}, {n_nets} networks each, seed {seed}, "
        f"{dt:.1f} s",
        file=sys.stdout,
    )
    return 0


def _say_resuming(net, X, widths, n_nets, orders, seed, batch, shard, args,
                  checkpoint) -> None:
    """Print what a resume continues, once the checkpoint is known to belong to this run
    (a refused resume must not first announce itself)."""

    ledger = ShardLedger.load(checkpoint)
    requested = plan_run(net, X, widths, n_nets, orders=orders, seed=seed,
                         covariance=not args.no_covariance, batch_size=batch,
                         shard_size=shard)
    check_resumable(ledger.plan, requested, checkpoint, batch, shard)
    print(f"resuming from {checkpoint}: {ledger.shards_done()} of "
          f"{len(ledger.plan.tasks())} shards ({ledger.networks_done()} networks) "
          "already done", file=sys.stderr)


_OPTIONS = {"ensemble": "--ensemble", "d_in": "--d-in", "sigma_w": "--sigma-w",
            "sigma_b": "--sigma-b", "batch_size": "--batch-size", "n_nets": "--n-nets",
            "widths": "--widths", "orders": "--orders", "seed": "--seed", "X": "--inputs",
            "shard_size": "--shard-size", "devices": "--devices", "dask": "--dask",
            "checkpoint": "--checkpoint", "resume": "--resume", "depth": "--depth",
            "activation": "--activation"}


def _option_names(message: str) -> str:
    """Name this command's option instead of the library's argument in an error message."""
    head, sep, rest = message.partition(" ")
    key = head.rstrip(":")
    if key in _OPTIONS:
        return _OPTIONS[key] + head[len(key):] + sep + rest
    return message
