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


#: Largest cutoff Λ: the kernel is evaluated on the edge of the box [-Λ, Λ]^d_in, where
#: beyond this size σ_W² y·y/d_in and its products overflow float64 (the inputs' bound).
MAX_CUTOFF = MAX_ABS_INPUT


def extent(X) -> float:
    """max |x_i| over the inputs: the smallest cutoff whose box [-Λ, Λ]^d_in holds them all."""
    return float(np.max(np.abs(np.asarray(X, dtype=np.float64))))


def cutoffs(name: str, values, extent: float = 0.0, *, inputs_of: str = "") -> np.ndarray:
    """Cutoffs as a float64 array (any shape): finite, > 0, at most :data:`MAX_CUTOFF` and
    at least the inputs' ``extent`` (:func:`extent`), so that the vertex box
    :math:`[-\\Lambda, \\Lambda]^{d_{in}}` contains every input: the first-order diagrams
    integrate the vertex over the box, and an input outside it sees no interaction.
    ``inputs_of`` names whose inputs they are in the message (e.g. ``"run 'erf'"``)."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise NNGPInputError(f"{name} must be a positive real number or array of them, "
                             f"got {values!r}") from None
    if arr.size == 0:
        raise NNGPInputError(f"{name} must contain at least one cutoff, got none")
    if not np.all(np.isfinite(arr)):
        raise NNGPInputError(f"{name} must be finite, got {arr.ravel().tolist()}")
    if np.any(arr <= 0):
        raise NNGPInputError(f"{name} must be > 0, got {arr.ravel().tolist()}")
    if np.any(arr > MAX_CUTOFF):
        raise NNGPInputError(
            f"{name} must be at most {MAX_CUTOFF:g} (the kernel on the box's edge overflows "
            f"float64 beyond), got {arr.ravel().tolist()}"
        )
    if np.any(arr < extent * (1 - 1e-12)):
        whose = f" of {inputs_of}" if inputs_of else ""
        raise NNGPInputError(
            f"{name} must be at least the inputs' extent max|x_i| = {extent:g}{whose} so that "
            f"the box [-Λ, Λ]^d_in contains every input; got {arr.ravel().tolist()}"
        )
    return arr


def sampled_at(stats, net=None, X=None, *, same_net: bool = True):
    """``(net, X)`` of correlator statistics ``stats``: its own ensemble and inputs, or those
    given after checking that they are the ones the correlators were sampled from (the
    theory at other inputs would be compared with these correlators and read as a
    coupling). ``same_net=False`` lets another description of the ensemble supply the
    theory (e.g. a Monte Carlo kernel of another size, for the point fits).
    ``X`` is returned validated, of shape (k, d_in)."""
    stats_net = getattr(stats, "net", None)
    net = stats_net if net is None else net
    if net is None:
        raise NNGPInputError("net must be given: the statistics name no ensemble")
    if same_net and stats_net is not None and net != stats_net \
            and _description(net) != _description(stats_net):
        raise NNGPInputError(
            f"net {_description(net)} differs from the ensemble the correlators were "
            f"sampled from ({_description(stats_net)}); omit net to use theirs"
        )
    own = inputs("stats.X", stats.X, net.d_in)
    if X is None:
        return net, own
    X = inputs("X", X, net.d_in)
    if X.shape != own.shape or not np.allclose(X, own, rtol=1e-6, atol=1e-12):
        raise NNGPInputError(
            f"X must be the inputs the correlators were sampled at ({own.tolist()}), got "
            f"{X.tolist()}; omit X to use theirs"
        )
    return net, X


def _description(net):
    """An ensemble's saved description, or its repr where it cannot be saved."""
    try:
        return net.to_dict()
    except (NNGPInputError, AttributeError, TypeError):
        return repr(net)


def sampled_orders(name: str, available, needed, why: str) -> None:
    """Refuse statistics ``name`` that lack correlator orders ``needed`` (``why`` says what
    needs them), naming the orders they hold and how to get the rest: the message is about
    the data, not about an option the user never gave."""
    have = tuple(int(n) for n in np.atleast_1d(available))
    missing = [int(n) for n in needed if int(n) not in have]
    if missing:
        want = sorted(set(have) | set(int(n) for n in needed) | {2})
        raise NNGPInputError(
            f"{name} holds the correlator orders {list(have)} only; {why} needs the "
            f"{' and '.join(f'{n}-pt' for n in missing)} function{'s' * (len(missing) > 1)}: "
            f"sample with orders {','.join(map(str, want))}"
        )


def symmetric_matrix(name: str, K, *, rtol: float = 1e-10) -> np.ndarray:
    """A finite, non-empty, square and symmetric float64 matrix (a kernel on the inputs):
    ``|K - Kᵀ| <= rtol max|K|`` elementwise, else a clear error naming the largest
    asymmetry (a kernel is a covariance, symmetric by definition)."""
    try:
        K = np.asarray(K, dtype=np.float64)
    except (TypeError, ValueError):
        raise NNGPInputError(f"{name} must be a square (k, k) matrix of real numbers") from None
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] == 0:
        raise NNGPInputError(f"{name} must be a non-empty square (k, k) kernel matrix, got "
                             f"shape {K.shape}")
    if not np.all(np.isfinite(K)):
        raise NNGPInputError(f"{name} must be finite")
    gap = np.abs(K - K.T)
    worst = float(gap.max())
    if worst > rtol * float(np.max(np.abs(K))):
        i, j = np.unravel_index(int(np.argmax(gap)), gap.shape)
        raise NNGPInputError(
            f"{name} must be symmetric (a kernel is a covariance), got {name}[{i},{j}] = "
            f"{K[i, j]:g} but {name}[{j},{i}] = {K[j, i]:g}"
        )
    return K


#: Largest σ_W or σ_b, and the largest output size sqrt(K(x, x)) (:func:`kernel_scale`).
#: The sampler's tail check holds 4th powers of 6-pt products, the 24th power of the
#: outputs, which overflows float64 beyond about 1e12 (measured: at σ_W = 1e15 on Erf-net
#: the sums stay finite but the tail check overflows; at 1e30 the sums are inf; at 1e155
#: σ² overflows a Python float); 1e10 leaves the tails of the outputs room.
MAX_SIGMA = 1e10


def sigma(name: str, value) -> float:
    """A weight or bias scale σ: finite, in 0 .. :data:`MAX_SIGMA`."""
    value = finite_float(name, value, minimum=0.0)
    if value > MAX_SIGMA:
        raise NNGPInputError(
            f"{name} must be at most {MAX_SIGMA:g} (outputs scale like {name}, and the "
            f"sampler's high powers of them overflow float64 beyond), got {value:g}"
        )
    return value


def nonzero_scales(names: str, *values) -> None:
    """Refuse an ensemble whose scales ``values`` are all zero: every network's output is
    then the same constant, the kernel is zero, and every normalised quantity is 0/0."""
    if all(v == 0 for v in values):
        raise NNGPInputError(
            f"zero kernel: {names} all 0 make every network the same constant function "
            "(nothing to measure); give at least one of them a positive value"
        )


def kernel_scale(name: str, K, what: str) -> None:
    """Refuse inputs ``name`` on which the kernel ``K`` of ``what`` (an ensemble's
    description) makes the outputs vanish identically (K(x, x) = 0: every normalised
    quantity there is 0/0) or too large for float64 (K(x, x) > MAX_SIGMA², the bound of
    :func:`sigma` on the outputs' size)."""
    diag = np.diag(np.asarray(K, dtype=np.float64))
    if np.any(diag <= 0):
        i = int(np.argmin(diag))
        raise NNGPInputError(
            f"{name}: the {what} kernel K(x, x) is {diag[i]:g} at input {i}: every network's "
            "output there is identically 0 (nothing to measure); move that input or give the "
            "ensemble a bias (sigma_b > 0)"
        )
    if float(diag.max()) > MAX_SIGMA**2:
        raise NNGPInputError(
            f"{name}: the {what} kernel reaches K(x, x) = {float(diag.max()):.3g} on these "
            f"inputs; the sampler's high powers of outputs of that size overflow float64 "
            f"beyond K = {MAX_SIGMA**2:g}: use smaller inputs or sigma's"
        )


def text(name: str, value, *, max_length: int) -> str:
    """A non-empty label of at most ``max_length`` characters (stripped)."""
    if not isinstance(value, str) or not value.strip():
        raise NNGPInputError(f"{name} must be a non-empty string, got {value!r}")
    value = value.strip()
    if len(value) > max_length:
        raise NNGPInputError(f"{name} must be at most {max_length} characters, got "
                             f"{len(value):,}")
    return value


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
