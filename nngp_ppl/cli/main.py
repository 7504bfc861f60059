"""The ``nngp-ppl`` command line.

Each subcommand lives in ``nngp_ppl/commands/<name>.py`` and exposes
``register(subparsers)`` (adds its parser, sets ``func``) so that the stages of the
pipeline stay independent. Bad input exits with status 2 and one line on stderr, never a
traceback; an interrupt exits with status 130 (SIGTERM: 143) and leaves no half-written
file.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import signal
import sys
import threading

import jax

from .. import _startup
from .._checks import NNGPInputError
from .._version import __version__
from ..ensembles.core import allow_import
from . import commands

# every subcommand at import (build_parser registers them by name from COMMANDS)
from .commands import demo, fit, flow, infer, lattice, reproduce, sample, show, train  # noqa: F401

__all__ = [
    "COMMANDS",
    "OPTION_NAMES",
    "option_names",
    "build_parser",
    "cpu_devices_per_core",
    "main",
]

# Order here is the order in `nngp-ppl --help`.
COMMANDS = ["sample", "train", "show", "fit", "infer", "flow", "lattice", "reproduce", "demo"]

#: Library argument -> command-line option, for error messages that start with the argument
#: ("width must be one of ..." reads "--widths must be one of ..."). A command module may
#: override entries with its own ``OPTION_NAMES``.
OPTION_NAMES = {
    "ensemble": "--ensemble", "d_in": "--d-in", "sigma_w": "--sigma-w", "sigma_b": "--sigma-b",
    "X": "--inputs", "preset": "--preset", "widths": "--widths", "width": "--widths",
    "n_nets": "--n-nets", "orders": "--orders", "seed": "--seed", "batch_size": "--batch-size",
    "shard_size": "--shard-size", "devices": "--devices", "dask": "--dask",
    "checkpoint": "--checkpoint", "resume": "--resume", "cutoffs": "--cutoffs",
    "cutoff": "--cutoffs", "propagator": "--propagator", "couplings": "--couplings",
    "fit_from": "--fit-from", "num_chains": "--chains", "num_samples": "--samples",
    "num_warmup": "--warmup", "rcond": "--rcond", "reference_cutoff": "--reference-cutoff",
}

# A value that starts like a negative number ("-0.3,0.6", "-1e-3; 2") is an option's value,
# not an option: argparse's own pattern accepts only a single plain number.
_NEGATIVE_VALUE = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?([,;\s].*)?$", re.DOTALL)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_VALUE

    def error(self, message):  # argparse's own usage errors: same one-line style, exit 2
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


class _PipeSafeStdout:
    """stdout that survives a reader closing the pipe (``nngp-ppl fit ... | head``).

    The tables are a by-product; the files are the result. Without this, the first print
    after ``head`` exits raises BrokenPipeError, and the command dies with a traceback
    before writing its output file. After a broken pipe, further output goes to /dev/null.
    """

    def __init__(self, stream):
        self._stream = stream
        self._broken = False

    def _silence(self) -> None:
        self._broken = True
        try:  # the interpreter's own flush at exit must not hit the closed pipe either
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            pass

    def write(self, text):
        if self._broken:
            return len(text)
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._silence()
            return len(text)

    def flush(self):
        if self._broken:
            return
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._silence()

    def __getattr__(self, name):
        return getattr(self._stream, name)


class _Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a batch scheduler's time limit), handled like Ctrl-C."""


def _on_sigterm(signum, frame):
    raise _Terminated


def option_names(message: str, names: dict) -> str:
    """Name the command-line option instead of the library argument that starts ``message``."""
    head, sep, rest = message.partition(" ")
    key = head.rstrip(":")
    if key in names:
        return names[key] + head[len(key):] + sep + rest
    return message


def build_parser() -> argparse.ArgumentParser:

    parser = _Parser(prog="nngp-ppl", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"nngp-ppl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        getattr(commands, name).register(sub)
    return parser


def cpu_devices_per_core() -> int | None:
    """Give JAX one CPU device per available core, unless a count was chosen.

    The sampler runs whole shards on every local device at once
    (:class:`nngp_ppl.sampling.sampler.LocalExecutor`), and its sums do not depend on the device
    count, bit for bit (the shards are added in shard order). With a single CPU device the
    forward pass uses the cores through XLA's intra-op threads, which keep them only
    partly busy: one device per core gave 1.00x, 1.17x and 1.26x the networks
    per second on 2 cores at N = 10, 100 and 1000 (``benchmarks/devices.py``;
    docs/scaling.md). The other stages run on the default device as before. A count set
    by ``JAX_NUM_CPU_DEVICES`` or ``XLA_FLAGS=--xla_force_host_platform_device_count=n``
    is kept, and so is a backend that is already running. Returns the count set, or None.
    """
    if (os.environ.get("JAX_NUM_CPU_DEVICES")
            or "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")):
        return None
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    if cores < 2:
        return None

    try:
        jax.config.update("jax_num_cpu_devices", cores)
    except RuntimeError:  # JAX has computed something already: keep its devices
        return None
    return cores


def main(argv=None) -> int:
    """The ``nngp-ppl`` command: parse ``argv`` (default: the process's own arguments),
    run the subcommand, return its exit status. Run as the program itself (no ``argv``),
    it first gives JAX one CPU device per core (:func:`cpu_devices_per_core`); a call
    from Python with an explicit ``argv`` leaves the caller's JAX set-up alone."""

    if argv is None:
        cpu_devices_per_core()
    parser = build_parser()
    args = parser.parse_args(argv)
    _startup.release()  # from here on an interrupt is handled below (exit 130, one line)
    stdout, sys.stdout = sys.stdout, _PipeSafeStdout(sys.stdout)
    # Like Ctrl-C: temporary files removed, locks released, the resume hint printed.
    sigterm = None
    if threading.current_thread() is threading.main_thread():
        sigterm = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        if getattr(args, "trusted_ensembles", None):

            allow_import(*args.trusted_ensembles)
        return int(args.func(args) or 0)
    except NNGPInputError as err:
        module = sys.modules.get(getattr(args.func, "__module__", ""), None)
        names = {**OPTION_NAMES, **getattr(module, "OPTION_NAMES", {})}
        print(f"nngp-ppl {args.command}: error: {option_names(str(err), names)}",
              file=sys.stderr)
        return 2
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as err:
        print(f"nngp-ppl {args.command}: error: {err.strerror}: {err.filename}", file=sys.stderr)
        return 2
    except OSError as err:  # the machine, not the input: a full disk, an I/O error
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        print(f"nngp-ppl {args.command}: error: {err.strerror or err}{where}; no partial "
              "output written", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        print(f"nngp-ppl {args.command}: interrupted; no partial output written", file=sys.stderr)
        return 143 if isinstance(err, _Terminated) else 130
    finally:
        sys.stdout = stdout
        if sigterm is not None:
            signal.signal(signal.SIGTERM, sigterm)


if __name__ == "__main__":
    sys.exit(main())
