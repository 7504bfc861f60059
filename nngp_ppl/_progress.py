"""Progress bars for long stages, shown on a terminal only.

A bar is drawn when progress is asked for *and* standard error is a terminal: in a log
file, a pipe or a CI job (environment variable ``CI`` set, or ``TERM=dumb``) a bar's
carriage-return redraws would fill the log with partial lines, so there it stays silent
and the stage's one-line messages (``done in 12.3 s``) are the record.
``NNGP_PPL_PROGRESS=1`` forces bars on, ``=0`` off.
"""

from __future__ import annotations

import math
import os
import sys

import jax
import numpy as np
from tqdm.auto import tqdm


def on_terminal(progress: bool = True, stream=None) -> bool:
    """Whether a progress bar should be drawn: ``progress`` asked for and ``stream``
    (default standard error) a terminal outside CI, unless ``NNGP_PPL_PROGRESS`` says."""
    if not progress:
        return False
    forced = os.environ.get("NNGP_PPL_PROGRESS", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    if os.environ.get("CI") or os.environ.get("TERM") == "dumb":
        return False
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def bar(total: int, desc: str, progress: bool = True, **kwargs):
    """A tqdm bar on standard error, disabled off a terminal (:func:`on_terminal`)."""

    return tqdm(total=total, desc=desc, disable=not on_terminal(progress),
                dynamic_ncols=True, leave=False, **kwargs)


#: About this many progress-bar updates per NUTS run (each a return to Python between
#: compiled pieces of the scan).
PIECES = 30

#: Without a bar, at most this many pieces of the greatest common divisor of the warm-up
#: and draw counts; beyond it (coprime counts, say 997 and 1000) one scan each.
QUIET_PIECES = 64


def pieces(num_warmup: int, num_samples: int, progress: bool) -> tuple[list, list]:
    """Lengths of the compiled scans for warm-up and draws, chosen so that one compilation
    serves both phases where it can (a scan's length is part of its program, and compiling
    a NUTS scan costs seconds, its pieces' returns to Python microseconds). Without a bar:
    pieces of g = gcd(warm-up, draws), unless that makes more than :data:`QUIET_PIECES`;
    with one, pieces of a common length near 1/PIECES of the run (a divisor of both counts
    where one is near)."""
    g = math.gcd(num_warmup, num_samples)
    if not progress:
        if (num_warmup + num_samples) // g > QUIET_PIECES:
            return [num_warmup] if num_warmup else [], [num_samples]
        piece = g
    else:
        target = max(1, (num_warmup + num_samples) // PIECES)
        piece = max(d for d in range(1, min(g, target) + 1) if g % d == 0)
        if piece < target // 2:
            piece = target

    def split(n):
        return [piece] * (n // piece) + ([n % piece] if n % piece else [])

    return split(num_warmup), split(num_samples)


def run_nuts(state, advance, num_warmup: int, num_samples: int, progress: bool, desc="NUTS",
             draw_axis: int = 2):
    """Warm-up, then draws, by ``advance(state, length) -> (state, out)`` (a compiled scan
    of ``length`` NUTS steps whose state carries the key and the adaptation, so the pieces
    make the same chain as one scan), with a bar of steps on a terminal. ``out`` is a tuple
    of arrays with the draw axis at ``draw_axis`` ((problem, chain, draw, ...) by default);
    the warm-up pieces' outputs are dropped (they are computed all the same, so that warm-up
    and draws run one program: :func:`pieces`). Returns the draw pieces' outputs joined
    along the draw axis."""

    shown = on_terminal(progress)
    warm, draw = pieces(num_warmup, num_samples, shown)
    outs = []
    with bar(num_warmup + num_samples, desc, shown, unit="step") as b:
        for n in warm:
            state, _ = advance(state, n)
            jax.block_until_ready(state)
            b.update(n)
        for n in draw:
            state, out = advance(state, n)
            outs.append(jax.device_get(out))
            b.update(n)
    return jax.tree_util.tree_map(lambda *a: np.concatenate(a, axis=draw_axis), *outs)
