"""Argument validation shared by the whole package.

Every public entry point validates what it is given and raises :class:`NNGPInputError`
(a ``ValueError``) whose message names the argument and says what is allowed. The CLI
catches exactly this class and exits non-zero without a traceback.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable

import numpy as np


class NNGPInputError(ValueError):
    """Bad input to an nngp_ppl function: the message names the argument and what is allowed."""


def positive_int(name: str, value) -> int:
    """``value`` as an int >= 1, else a clear error naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise NNGPInputError(f"{name} must be a positive integer, got {value!r}")
    if value < 1:
        raise NNGPInputError(f"{name} must be a positive integer (>= 1), got {value}")
    return int(value)


def positive_ints(name: str, values) -> tuple[int, ...]:
    """A non-empty sequence of positive integers (e.g. widths), duplicates removed, order kept."""
    if isinstance(values, (int, np.integer)):
        values = [values]
    if values is None or isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise NNGPInputError(
            f"{name} must be a positive integer or a list of them, got {values!r}"
        )
    values = list(values)
    if not values:
        raise NNGPInputError(f"{name} must contain at least one positive integer, got none")
    out = [positive_int(name, v) for v in values]
    return tuple(dict.fromkeys(out))


def finite_float(name: str, value, *, minimum: float | None = None) -> float:
    """``value`` as a finite float, optionally >= ``minimum``."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise NNGPInputError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(value):
        raise NNGPInputError(f"{name} must be finite, got {value}")
    if minimum is not None and value < minimum:
        raise NNGPInputError(f"{name} must be >= {minimum}, got {value}")
    return value


#: Largest |coordinate| of a network input. The kernel σ_b² + σ_W² x·x'/d_in and the
#: products of kernels the theory multiplies (up to order 12) must stay finite in float64:
#: at |x| = 1e200 the Erf kernel is NaN and at 1e80 its normalisation overflows to a wrong
#: but finite value. 1e50 keeps every such product below 1e200 for σ's of order one.
MAX_ABS_INPUT = 1e50


def inputs(name: str, X, d_in: int | None = None) -> np.ndarray:
    """Network inputs as a float64 array of shape (n, d_in).

    A 1-d array is read as n scalar inputs when ``d_in == 1`` (or unknown), and as a
    single point otherwise. Empty, ragged, non-numeric or non-finite inputs are rejected,
    and so are coordinates beyond :data:`MAX_ABS_INPUT` and a second axis that does not
    match ``d_in``.
    """
    try:
        arr = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        raise NNGPInputError(
            f"{name} must be a rectangular array of real numbers of shape (n, d_in); "
            "got ragged or non-numeric data"
        ) from None
    if arr.ndim == 0:
        arr = arr.reshape(1, 1)
    elif arr.ndim == 1:
        arr = arr[:, None] if (d_in is None or d_in == 1) else arr[None, :]
    if arr.ndim != 2:
        raise NNGPInputError(f"{name} must have shape (n, d_in), got an array of shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise NNGPInputError(f"{name} must contain at least one input point, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise NNGPInputError(f"{name} must be finite (no NaN or inf)")
    big = float(np.max(np.abs(arr)))
    if big > MAX_ABS_INPUT:
        raise NNGPInputError(
            f"{name} must have coordinates of size at most {MAX_ABS_INPUT:g} (beyond that the "
            f"kernel and its products overflow float64), got {big:g}"
        )
    if d_in is not None and arr.shape[1] != d_in:
        raise NNGPInputError(
            f"{name} has input dimension {arr.shape[1]} but the ensemble has d_in={d_in}"
        )
    return arr


def orders(name: str, values: Iterable[int], *, max_order: int = 6,
           odd: bool = False) -> tuple[int, ...]:
    """Correlator orders, sorted and unique: even integers in 2..``max_order``, or with
    ``odd=True`` any integers in 1..``max_order`` (odd correlators, the 1-pt function;
    what the sampler and its statistics accept, while fits of the even effective action
    keep the default)."""
    if isinstance(values, (int, np.integer)):
        values = [values]
    allowed = (f"integers in 1..{max_order}" if odd else
               f"even integers in 2..{max_order}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise NNGPInputError(f"{name} must be {allowed}, got {v!r}")
        if v < 1 or v > max_order or (v % 2 and not odd):
            why = "" if odd else (" (odd correlators vanish for zero-mean weights; the "
                                  "sampler and its statistics measure them)")
            raise NNGPInputError(f"{name} must be {allowed}{why}, got {v}")
        out.append(int(v))
    if not out:
        raise NNGPInputError(f"{name} must name at least one order, got none")
    return tuple(sorted(set(out)))


def boolean(name: str, value) -> bool:
    """``value`` as a bool: True/False (or NumPy booleans) only, never a truthy string."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise NNGPInputError(f"{name} must be True or False, got {value!r}")


def seed(name: str, value) -> int:
    """A PRNG seed: an integer in 0 .. 2**63 - 1 (what ``jax.random.PRNGKey`` takes under x64)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise NNGPInputError(f"{name} must be a non-negative integer, got {value!r}")
    if not 0 <= value < 2**63:
        raise NNGPInputError(f"{name} must be an integer in 0..2**63-1, got {value}")
    return int(value)


def memory_bytes() -> int | None:
    """Memory this process may still use: ``MemAvailable`` (Linux), else physical memory."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def fits_in_memory(name: str, nbytes: float, what: str, *, fraction: float = 0.5,
                   advice: str = "") -> None:
    """Refuse work whose arrays (``nbytes``) would take more than ``fraction`` of the memory
    available, before allocating them: an out-of-memory kill or allocator traceback after
    minutes of work tells the user less than one line naming the argument up front."""
    avail = memory_bytes()
    if avail is None or nbytes <= fraction * avail:
        return
    raise NNGPInputError(
        f"{name}: {what} would need about {_bytes(nbytes)}, more than {fraction:.0%} of the "
        f"{_bytes(avail)} of memory available" + (f"; {advice}" if advice else "")
    )


def _bytes(n: float) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n / 1024:.3g} KiB"
