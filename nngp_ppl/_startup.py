"""Ctrl-C while the ``nngp-ppl`` command starts: one line and exit 130, no traceback.

Starting the command imports the package, JAX and SciPy, which takes seconds; a Ctrl-C
then lands inside some import and Python prints a long traceback before
:func:`nngp_ppl.cli.main` (which handles interrupts) has even begun. When, and only when,
this process is the command line (the ``nngp-ppl`` script or ``python -m nngp_ppl.cli.main``),
:func:`guard` is called first thing by the package's ``__init__`` and turns SIGINT into
that one line; :func:`release` hands SIGINT back to Python once ``main`` is ready for it.
A program that imports the package keeps Python's own handling: nothing is installed.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

#: What the command prints when interrupted before it has started any work.
MESSAGE = b"nngp-ppl: interrupted while starting; nothing was done\n"


def _command_line() -> bool:
    """Whether this process is the ``nngp-ppl`` command (not a program importing us)."""
    if sys.argv and os.path.basename(sys.argv[0]) == "nngp-ppl":
        return True
    orig = list(getattr(sys, "orig_argv", ()))
    return any(a == "-m" and b == "nngp_ppl.cli.main" for a, b in zip(orig, orig[1:], strict=False))


def _interrupted(signum, frame):
    # Nothing has been written yet, so there is nothing to clean up: leave at once.
    os.write(2, MESSAGE)
    os._exit(130)


def guard() -> None:
    """Install the start-up SIGINT handler when this process is the command line."""
    if (_command_line() and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
        signal.signal(signal.SIGINT, _interrupted)


def release() -> None:
    """Give SIGINT back to Python (KeyboardInterrupt), if :func:`guard` took it."""
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is _interrupted):
        signal.signal(signal.SIGINT, signal.default_int_handler)
