r"""The pure shard kernel: float64 monomial sums over one index range of networks.

Two implementations compute the same sums. On CPU devices :func:`shard_job` uses the C
kernel of :mod:`nngp_ppl.sampling._native` (JAX draws and evaluates the networks, the host adds
their monomials, batch i while the device computes batch i + 1), which needs 2-4x less
CPU time per network (``benchmarks/sampler.py``); on GPUs, and on CPUs without a C
compiler, it uses the XLA kernel described below, which runs entirely on the device.

:func:`shard_sums` is the unit of work of a sampling run: the sums over networks
``start .. start+count-1`` at one width, computed from zero totals, a pure function of its
arguments (each network has its own PRNG key, :func:`nngp_ppl.ensembles.core.network_keys`).
It knows nothing of plans, ledgers, checkpoints or where it runs; the executors that call
it (:class:`nngp_ppl.sampling.sampler.LocalExecutor` on local JAX devices,
:class:`nngp_ppl.sampling.distributed.DaskExecutor` on Dask workers) are interchangeable, and
:class:`nngp_ppl.sampling.checkpoint.ShardLedger` adds their results in shard order.

The per-batch step is one jit-compiled pure function of ``(totals, X, seed, start,
n_valid)`` at a static (width, batch size); a short final batch reuses it with the unused
rows masked to zero (every monomial has order >= 1, so a zero row adds nothing). Within a
batch the monomials are accumulated over chunks of :data:`CHUNK` networks, small enough for
the products to stay in cache.

Monomial sums without outer products
------------------------------------
Within a chunk (columns b = networks; the network axis is the contiguous one):

* orders 2..max(orders) are *materialised* in float64: the pair products
  :math:`P_{(a,c)} = f_a f_c` (a <= c), then each m-tuple t = (t_1..t_m) as its
  (m-2)-tuple tail times its leading pair, :math:`M_m[t] = M_{m-2}[(t_3..t_m)]\,
  P[(t_1, t_2)]` (one row gather and one multiply per monomial), and summed in float64;
* an order m > max(orders) (only needed for the covariance) is never materialised. A
  sorted m-tuple splits uniquely into a p-prefix and a q-suffix (p = 2 floor(m/4),
  q = m - p) with last(prefix) <= first(suffix); grouping prefixes by their last index d,

  .. math:: \sum_b M_m[(s,t), b] = \sum_b M_p[s, b]\, M_q[t, b]
     = (M_p[\{s: \mathrm{last}(s) = d\}]\, M_q[\{t: \mathrm{first}(t) \ge d\}]^T)_{st},

  a matrix product per d with exactly one multiply-add per monomial and network
  (:func:`_dot_blocks` stacks the prefixes of every m with the same q, and merges
  neighbouring d where fewer, squarer products run faster; the wanted entries are picked
  out of the summed products once per shard, :func:`_assemble_moments`).

These products run in float32 with exact power-of-two scaling: per chunk and input a, the
outputs are divided by :math:`2^{e_a}` with :math:`e_a` the binary exponent of
:math:`\max_b |f_a|`, so every scaled factor is below 1 in magnitude and no product can
overflow (a float32 order-12 product of unscaled outputs overflows at
:math:`|f| \gtrsim 10^{3.2}` and underflows below :math:`10^{-3.2}`); the chunk's sum is
scaled back in float64 and added to the float64 running totals. The rounding error of
one chunk's sum of C terms is at most :math:`(C + 2)\,u \sum_b |\text{term}_b|` with
:math:`u = 2^{-24}` (one rounding of each operand, C of the summation; Higham,
*Accuracy and Stability of Numerical Algorithms*, §3.1), and typically
:math:`\sim\sqrt{C}\,u` (measured ~3e-7 of :math:`\sum|\text{term}|` at C = 128). That
is the size of the float32 round-off every network output already carries, and far below
the statistical error of a covariance estimated from any feasible number of networks
(relative :math:`\sqrt{2/n} > 10^{-4}` for n < 10^8); the estimates themselves (orders
<= max(orders)) stay float64 throughout. Measured on 2 CPU cores (k = 6, N = 10): the
float32 products halve the cost of the covariance orders against float64 ones, since
XLA:CPU's matrix library runs these thin products 2-3x faster in float32.

The tail sums :math:`\sum_b X^3, \sum_b X^4` of the measured observables, which only
judge the standard errors (:func:`nngp_ppl.sampling.stats.check_tails`), are summed per chunk in
float32 the same way (:data:`TAIL_DTYPE`).

Cost: for k = 6 inputs and orders (2, 4, 6) the monomials are 11 087 (609 materialised,
10 478 by products). On a 2-core CPU the accumulation is small next to the forward pass at
N = 1000, comparable to it at N = 100, and dominant at N <= 10 (``benchmarks/sampler.py``
measures it against the forward pass and against a floor: a plain square matrix product
with the same number of multiply-adds; docs/scaling.md); ``covariance=False`` keeps only the
609 observables and their squares. Both also keep the tail sums
:math:`\sum_j X^3, \sum_j X^4` of the 609 observables (the heavy-tail check of
:mod:`nngp_ppl.sampling.stats`).

Memory
------
:func:`batch_bytes` bounds the working memory of one compiled step (the forward pass of a
batch; an upper bound on XLA's own ``memory_analysis``, checked in
``tests/test_robustness_run.py``), and :func:`available_bytes` says
what a device has free, so that a run too wide for the machine is refused before it starts.
"""

from __future__ import annotations

import math
import os
from collections import deque
from dataclasses import dataclass
from functools import cache, lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from .. import tuples as _tuples
from .._checks import NNGPInputError
from ..ensembles.core import Ensemble, network_keys
from . import _native
from .checkpoint import ShardSums
from .stats import TAIL_POWERS, accumulated_orders, rows_of

#: Most networks per chunk of the monomial accumulation. With k = 6 inputs the products of
#: a 128-network chunk take 128 * 609 * 8 B = 0.6 MiB, so they stay in a 1 MiB L2 cache;
#: more inputs get smaller chunks (:func:`chunk_size`). (Measured, k = 6, 2 CPU cores:
#: 64 and 128 are equally fast, 256 and 512 about 40% slower.)
CHUNK = 128

#: Bytes of materialised products a chunk aims at (a typical L2 cache).
CHUNK_BYTES = 2**20

# ---------------------------------------------------------------------------------------------
# static monomial plan
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StepPlan:
    """What one batch step computes: hashable, so it can key the compiled-step cache."""

    k: int
    orders: tuple[int, ...]
    covariance: bool

    @property
    def max_order(self) -> int:
        return max(self.orders)

    @property
    def accumulated(self) -> tuple[int, ...]:
        return accumulated_orders(self.orders, self.covariance)

    @property
    def odd(self) -> bool:
        """Whether an odd order is measured: then every order 1..max(orders) is built."""
        return _tuples.has_odd(self.orders)

    @property
    def materialised(self) -> tuple[int, ...]:
        """Orders built product by product: 2, 4, .., max(orders), or 1, 2, .., max(orders)
        with an odd order (:func:`nngp_ppl.tuples.materialised_orders`)."""
        return _tuples.materialised_orders(self.orders)

    def split_orders(self, m: int) -> tuple[int, int]:
        """(p, q) of the prefix-suffix split of order m for this plan."""
        return _tuples.prefix_suffix_orders(m, self.odd)

    @property
    def split(self) -> tuple[int, ...]:
        """Accumulated orders above max(orders): sums of prefix-suffix matrix products."""
        return tuple(m for m in self.accumulated if m > self.max_order)


@cache
def _parents(k: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the tail (m-2)-tuple and of the leading pair of each distinct m-tuple."""
    rows = _tuples.distinct_tuples(k, m)
    return rows_of(k, rows[:, 2:]), rows_of(k, rows[:, :2])


#: Cost model of one matrix product in :func:`_dot_blocks`, in multiply-adds per network:
#: a fixed cost per product (one library call per chunk, ~1-2 us on a 2-core CPU, i.e.
#: about this many multiply-adds of a 128-network chunk) ...
DOT_OVERHEAD = 100
#: ... and a product whose shorter side has fewer rows than this runs below the library's
#: full rate, in proportion (a matrix-vector product is memory-bound). Both were read off
#: measured XLA:CPU (YNNPACK) rates for the shapes that occur here, and checked in place
#: (k = 6, 2 CPU cores): the 6 products they choose beat the 12 one-d-each products by
#: 10-25% and 3-5 squarer ones (2-4x the multiply-adds) by 25-60%. They only choose how
#: the blocks are grouped, never what is computed.
DOT_FULL_RATE_SIDE = 16


def _dot_cost(rows: int, cols: int) -> float:
    return DOT_OVERHEAD + rows * cols * max(1.0, DOT_FULL_RATE_SIDE / max(1, min(rows, cols)))


@dataclass(frozen=True)
class _Dots:
    """The prefix-suffix matrix products of a plan's split orders (module docstring).

    ``stack``: rows of the concatenated materialised products ``[M_2; M_4; ..]`` that form
    the prefix stack, grouped so that each product's prefix rows are one contiguous slice;
    ``blocks``: per product ``(q, row_lo, row_hi, col_start)``: it is
    ``stack[row_lo:row_hi] @ M_q[col_start:].T``; ``extract``: per split order, per
    product, ``(flat positions in the product, rows of the m-tuples they are)`` -- the
    entries with last(prefix) <= first(suffix), each m-tuple exactly once.
    """

    stack: np.ndarray
    blocks: tuple[tuple[int, int, int, int], ...]
    extract: dict


def _groupings(k: int):
    """Every split of the indices 0..k-1 into runs of consecutive values."""
    for cuts in range(2 ** (k - 1)):
        groups, lo = [], 0
        for d in range(1, k):
            if cuts >> (d - 1) & 1:
                groups.append((lo, d - 1))
                lo = d
        groups.append((lo, k - 1))
        yield groups


@cache
def _dot_blocks(plan: StepPlan) -> _Dots:
    r"""Plan the products of :func:`monomial_sums` for ``plan.split``.

    For a suffix order q the prefixes of every split order m = p + q are stacked; the
    prefixes whose last index lies in a run [d1, d2] of consecutive values are multiplied
    by the suffixes whose first index is >= d1. A run of one value computes exactly the
    wanted sums; a longer run computes some products twice (a tuple whose last prefix index
    exceeds its first suffix index) in exchange for fewer, squarer products, which the
    matrix library runs faster. The runs are chosen by the cost model :func:`_dot_cost`.
    """
    k = plan.k
    mats = plan.materialised
    offset = dict(zip(mats, np.cumsum([0] + [len(_tuples.distinct_tuples(k, m))
                                             for m in mats]).tolist(), strict=False))
    by_q: dict[int, list[int]] = {}
    for m in plan.split:
        by_q.setdefault(plan.split_orders(m)[1], []).append(m)
    stack, blocks, extract = [], [], {m: [] for m in plan.split}
    for q, ms in sorted(by_q.items()):
        suffixes = _tuples.distinct_tuples(k, q)
        first_start = _tuples.first_index_starts(k, q)
        prefixes = {m: _tuples.distinct_tuples(k, plan.split_orders(m)[0]) for m in ms}

        last = np.concatenate([prefixes[m][:, -1] for m in ms])
        shapes = {(d1, d2): (int(np.sum((last >= d1) & (last <= d2))),
                             len(suffixes) - first_start[d1])
                  for d1 in range(k) for d2 in range(d1, k)}
        best = min(_groupings(k), key=lambda gs: sum(_dot_cost(*shapes[g]) for g in gs))
        for d1, d2 in best:
            row_lo = len(stack)
            t = suffixes[first_start[d1]:]
            for m in ms:
                p = plan.split_orders(m)[0]
                pre = prefixes[m]
                rows = np.flatnonzero((pre[:, -1] >= d1) & (pre[:, -1] <= d2))
                s = pre[rows]
                ii, jj = np.nonzero(s[:, -1][:, None] <= t[:, 0][None, :])
                flat = (len(stack) - row_lo + ii) * len(t) + jj
                joined = np.concatenate([s[ii], t[jj]], axis=1)  # already sorted
                extract[m].append((len(blocks), flat, rows_of(k, joined)))
                stack.extend((offset[p] + rows).tolist())
            blocks.append((q, row_lo, len(stack), first_start[d1]))
    for m in plan.split:  # every m-tuple exactly once
        got = np.sort(np.concatenate([dest for _, _, dest in extract[m]]))
        assert np.array_equal(got, np.arange(len(_tuples.distinct_tuples(k, m))))
    return _Dots(np.asarray(stack, np.int64), tuple(blocks), extract)


#: Operand and accumulation type of the prefix-suffix products within a chunk (module
#: docstring: float32 with exact power-of-two scaling; the running totals are float64).
DOT_DTYPE = jnp.float32

#: Type of the per-chunk tail sums (X^3, X^4 of the measured observables, a diagnostic of
#: the standard errors only): float32 of the scaled products, error at most
#: (C + 4) u sum|term| per chunk; measured 15-20% off the full-covariance accumulation at
#: k = 6 against float64 ones.
TAIL_DTYPE = jnp.float32


def _materialise(F, k: int, max_order: int, odd: bool = False) -> dict[int, jnp.ndarray]:
    """{m: (T_m, C)} products over the distinct m-tuples, m = 2, 4, .., max_order (and with
    ``odd`` also m = 1, 3, ..: the odd chain grows from the outputs, M_1 = F, as the even
    one from the pairs).

    ``F`` is (k, C): networks along the last (contiguous) axis, so that every gather below
    copies whole rows and the matrix products contract the contiguous axis of both
    operands (the layout XLA:CPU's matrix library runs fastest: measured 2-3x over
    contracting the leading axis).
    """
    pairs = _tuples.distinct_tuples(k, 2)
    P = jnp.take(F, pairs[:, 0], axis=0) * jnp.take(F, pairs[:, 1], axis=0)
    out = {2: P}
    if odd:
        out[1] = F
    for m in range(3 if odd else 4, max_order + 1, 1 if odd else 2):
        tail, lead = _parents(k, m)
        out[m] = jnp.take(out[m - 2], tail, axis=0) * jnp.take(P, lead, axis=0)
    return out


def monomial_sums(F, plan: StepPlan):
    """Chunk sums (over axis 1 of ``F``, shape (k, C) float64) of the plan's monomials.

    Returns (moments, products, squares, tails): (T_m,) sums of each materialised order;
    the raw prefix-suffix products of :func:`_dot_blocks` (their wanted entries are picked
    out once per shard, :func:`_assemble_moments`); with ``covariance=False`` the squares
    of each measured order (else an empty tuple); and the (2, T_n) power sums p = 3, 4 of
    each measured order (:mod:`nngp_ppl.sampling.stats`, heavy tails).
    """
    # Power-of-two scales per input (exact): scaled outputs are below 1 in magnitude, so no
    # float32 product of them can overflow. Scaling commutes with rounding, so the float64
    # sums below equal unscaled ones bit for bit (short of float64 under- or overflow).
    _, e = jnp.frexp(jnp.max(jnp.abs(F), axis=1))
    e = e.astype(jnp.float64)
    mats = _materialise(F * jnp.exp2(-e)[:, None], plan.k, plan.max_order, plan.odd)
    exps = {m: jnp.asarray(_tuples.index_counts(plan.k, m), jnp.float64) @ e
            for m in plan.materialised}

    scale = {m: jnp.exp2(exps[m]) for m in plan.materialised}  # exact powers of two

    def unscaled(sums, m, power=1):
        return sums * scale[m] ** power

    moments = tuple(unscaled(jnp.sum(mats[m], axis=1), m) for m in plan.materialised)
    products = ()
    if plan.split:
        dots = _dot_blocks(plan)
        narrow = {m: mats[m].astype(DOT_DTYPE) for m in plan.materialised}
        stack = jnp.take(jnp.concatenate([narrow[m] for m in plan.materialised]), dots.stack,
                         axis=0)
        stack_scale = jnp.take(jnp.concatenate([scale[m] for m in plan.materialised]),
                               dots.stack)
        products = tuple(
            jnp.dot(stack[lo:hi], narrow[q][start:].T,
                    precision=jax.lax.Precision.HIGHEST,
                    preferred_element_type=DOT_DTYPE).astype(jnp.float64)
            * (stack_scale[lo:hi, None] * scale[q][None, start:])
            for q, lo, hi, start in dots.blocks
        )
    squares = () if plan.covariance else tuple(
        unscaled(jnp.sum(mats[n] * mats[n], axis=1), n, 2) for n in plan.orders
    )
    tails = []
    for n in plan.orders:
        x = mats[n].astype(TAIL_DTYPE)
        sq = x * x
        tails.append(jnp.stack([unscaled(jnp.sum(sq * x, axis=1).astype(jnp.float64), n, 3),
                                unscaled(jnp.sum(sq * sq, axis=1).astype(jnp.float64), n, 4)]))
    return moments, products, squares, tuple(tails)


def _assemble_moments(plan: StepPlan, moments, products) -> dict[int, np.ndarray]:
    """{m: (T_m,) float64} for ``plan.accumulated`` from a step's running totals."""
    out = {m: np.asarray(v, np.float64) for m, v in zip(plan.materialised, moments,
                                                        strict=True)}
    if plan.split:
        flat = [np.asarray(p, np.float64).ravel() for p in products]
        for m, parts in _dot_blocks(plan).extract.items():
            v = np.empty(len(_tuples.distinct_tuples(plan.k, m)))
            for block, positions, rows in parts:
                v[rows] = flat[block][positions]
            out[m] = v
    return {m: out[m] for m in plan.accumulated}


def _masked_outputs(net: Ensemble, width: int, batch: int, X, seed, start, n_valid):
    """(batch, k) float32 outputs of networks ``start ..``, rows past ``n_valid`` zero
    (every monomial has order >= 1, so a zero row adds nothing).

    The shape is checked when the step is traced: both kernels read the outputs as a
    (batch, k) array, so a user's ``network_outputs`` returning, say, (batch, k + 1) would
    otherwise be read with the wrong stride (the C kernel) and give plausible garbage.
    """
    f = net.network_outputs(network_keys(seed, width, start, batch), X, width, jnp.float32)
    check_output_shape(net, f, batch, len(X), width)
    f = jnp.asarray(f, jnp.float32)
    return jnp.where((jnp.arange(batch) < n_valid)[:, None], f, 0.0)


def check_output_shape(net, f, batch: int, k: int, width: int) -> None:
    """Refuse outputs of ``net.network_outputs`` that are not ``(batch, k)`` real numbers."""
    shape = getattr(f, "shape", None)
    dtype = getattr(f, "dtype", None)
    if shape != (batch, k) or dtype is None or not (jnp.issubdtype(dtype, jnp.floating)
                                                    or jnp.issubdtype(dtype, jnp.integer)):
        got = (f"an array of shape {tuple(shape)} and dtype {dtype}" if shape is not None
               else f"a {type(f).__name__}")
        raise NNGPInputError(
            f"net: {net.describe()}: network_outputs(keys, X, width={width}) must return "
            f"one real output per network and input, shape (len(keys), len(X)) = "
            f"({batch}, {k}), but returned {got}"
        )


def refuse_nonfinite(net, width: int, first: int, count: int, bad: int) -> None:
    """One error naming the width and the batch whose outputs were NaN or infinite."""
    raise NNGPInputError(
        f"net: {net.describe()}: {bad} of the outputs of networks {first}..{first + count - 1}"
        f" at width {width} are NaN or infinite (a network that overflows or divides by "
        "zero, e.g. for these inputs or sigmas); they are not summed into the statistics. "
        "Check network_outputs for these hyperparameters, or use smaller inputs or sigmas"
    )


@lru_cache(maxsize=32)
def compiled_step(net: Ensemble, width: int, batch: int, chunk: int, plan: StepPlan):
    """jit-compiled ``step(totals, X, seed, start, n_valid) -> (totals + batch sums, number
    of non-finite outputs in the batch)``.

    The forward pass runs on the whole batch; the monomial sums run over chunks of
    ``chunk`` networks in a ``lax.scan``, so that the materialised products and the
    matrix-product operands stay in cache. (Measured on 2 CPU cores, Erf-net N = 100, six
    inputs: the full-covariance accumulation cost fell from ~+85% of the forward pass
    with one pass over an 896-network batch to ~+20% with 128-network chunks.)
    """

    def step(totals, X, seed, start, n_valid):
        f = _masked_outputs(net, width, batch, X, seed, start, n_valid)
        # Counted on the device, judged on the host when the batch retires (one reduction
        # over the outputs, no transfer); masked rows are zero and so finite.
        bad = jnp.sum(~jnp.isfinite(f))
        chunks = f.astype(jnp.float64).reshape(batch // chunk, chunk, plan.k).transpose(0, 2, 1)

        def add_chunk(carry, F):
            return jax.tree.map(jnp.add, carry, monomial_sums(F, plan)), None

        totals, _ = jax.lax.scan(add_chunk, totals, chunks)
        return totals, bad

    return jax.jit(step)


def chunk_size(k: int, max_order: int) -> int:
    """Networks per accumulation chunk: the materialised products in about CHUNK_BYTES."""
    materialised = sum(math.comb(k + m - 1, m) for m in range(2, max_order + 1, 2))
    # (plans with odd orders materialise the odd orders too, under 2x these bytes)
    return int(min(CHUNK, max(8, CHUNK_BYTES // (8 * materialised) // 8 * 8)))


def zero_totals(plan: StepPlan):
    k = plan.k

    def size(m):
        return len(_tuples.distinct_tuples(k, m))

    blocks = _dot_blocks(plan).blocks if plan.split else ()
    return (
        tuple(jnp.zeros(size(m)) for m in plan.materialised),
        tuple(jnp.zeros((hi - lo, size(q) - start)) for q, lo, hi, start in blocks),
        () if plan.covariance else tuple(jnp.zeros(size(n)) for n in plan.orders),
        tuple(jnp.zeros((len(TAIL_POWERS), size(n))) for n in plan.orders),
    )


class _Job:
    """One shard's batches on one device: dispatch asynchronously, at most two in flight.

    All arguments are committed to ``device`` (``None``: JAX's default placement), so the
    same compiled step runs there; XLA produces the same executable for every device of a
    kind, which makes a shard's sums bitwise independent of the device it ran on.
    """

    def __init__(self, net, X, width, seed, start, count, plan: StepPlan, batch, device=None):
        self.count = count
        self._net, self._width = net, width
        self._batch, self._start = batch, start
        self._plan = plan
        self._put = (lambda a: a) if device is None else (lambda a: jax.device_put(a, device))
        self._X = self._put(jnp.asarray(X))
        self._seed = self._put(jnp.asarray(seed, dtype=jnp.int64))
        self._offsets = iter(range(0, count, batch))
        self._inflight: deque = deque()

    def _next_batch(self):
        """((first network, valid rows) on the device, valid rows) of the next batch, or
        None once every batch is queued."""
        offset = next(self._offsets, None)
        if offset is None:
            return None
        n_valid = min(self._batch, self.count - offset)
        return (self._put(jnp.asarray(self._start + offset, jnp.uint32)),
                self._put(jnp.asarray(n_valid, jnp.int32))), (self._start + offset, n_valid)

    def _finish(self, value, first: int, n_valid: int) -> None:
        """Wait for one dispatched batch (networks ``first ..``; on the host, add it)."""
        raise NotImplementedError

    def retire(self, keep: int) -> int:
        """Wait until at most ``keep`` batches are in flight; return the networks finished."""
        done = 0
        while len(self._inflight) > keep:
            value, (first, n_valid) = self._inflight.popleft()
            self._finish(value, first, n_valid)
            done += n_valid
        return done


class ShardJob(_Job):
    """A shard summed by the XLA kernel on its device (:func:`compiled_step`)."""

    def __init__(self, net, X, width, seed, start, count, plan: StepPlan, batch, chunk,
                 device=None):
        super().__init__(net, X, width, seed, start, count, plan, batch, device)
        self._step = compiled_step(net, width, batch, chunk, plan)
        self._totals = self._put(zero_totals(plan))

    def dispatch(self) -> bool:
        """Queue the next batch on the device; False once every batch is queued."""
        nxt = self._next_batch()
        if nxt is None:
            return False
        args, which = nxt
        self._totals, bad = self._step(self._totals, self._X, self._seed, *args)
        self._inflight.append((bad, which))
        return True

    def _finish(self, value, first: int, n_valid: int) -> None:
        bad = int(value)  # waits for the batch
        if bad:
            refuse_nonfinite(self._net, self._width, first, n_valid, bad)

    def result(self) -> ShardSums:
        self.retire(0)
        return xla_shard_sums(self._plan, self._totals)


def xla_shard_sums(p: StepPlan, totals) -> ShardSums:
    """The :class:`ShardSums` of the XLA kernel's running ``totals`` (moments, dot-product
    blocks, squares, tail sums) under plan ``p``."""
    moments, products, squares, tails = totals
    return ShardSums(
        moments=_assemble_moments(p, moments, products),
        squares=None if p.covariance else {
            n: np.asarray(v, np.float64) for n, v in zip(p.orders, squares, strict=True)},
        tails={n: np.asarray(v, np.float64) for n, v in zip(p.orders, tails, strict=True)},
    )


@lru_cache(maxsize=32)
def compiled_outputs(net: Ensemble, width: int, batch: int):
    """jit-compiled ``outputs(X, seed, start, n_valid) -> (batch, k)`` float32 network
    outputs, rows past ``n_valid`` zero (for the host kernel, :mod:`nngp_ppl.sampling._native`)."""

    def outputs(X, seed, start, n_valid):
        return _masked_outputs(net, width, batch, X, seed, start, n_valid)

    return jax.jit(outputs)


class _HostShardJob(_Job):
    """A shard on a CPU device: JAX draws and evaluates, :mod:`nngp_ppl.sampling._native` sums.

    The host adds batch i while the device computes batch i + 1 (at most two in flight),
    so the forward pass and the accumulation run on different cores.
    """

    def __init__(self, net, X, width, seed, start, count, plan: StepPlan, batch, lib,
                 device=None):
        super().__init__(net, X, width, seed, start, count, plan, batch, device)
        self._step = compiled_outputs(net, width, batch)
        self._sums = _native.HostSums(lib, plan.k, plan.orders, plan.split, plan.covariance)

    def dispatch(self) -> bool:
        nxt = self._next_batch()
        if nxt is None:
            return False
        args, which = nxt
        self._inflight.append((self._step(self._X, self._seed, *args), which))
        return True

    def _finish(self, value, first: int, n_valid: int) -> None:
        f = np.asarray(value)[:n_valid]
        # The shape was fixed when the step was traced (_masked_outputs); what the C kernel
        # is handed must still be exactly (n, k) float32 in row order, or it reads past rows.
        if f.shape != (n_valid, self._plan.k) or f.dtype != np.float32:
            raise NNGPInputError(
                f"net: outputs of shape {f.shape} and dtype {f.dtype} where ({n_valid}, "
                f"{self._plan.k}) float32 was expected")
        if not np.isfinite(f).all():
            refuse_nonfinite(self._net, self._width, first, n_valid,
                              int(np.count_nonzero(~np.isfinite(f))))
        self._sums.add(f)

    def result(self) -> ShardSums:
        self.retire(0)
        return self._sums.result()


def shard_job(net, X, width, seed, start, count, plan: StepPlan, batch, chunk, device=None):
    """The job that sums one shard on ``device``: the C kernel on a CPU device where it
    builds (:mod:`nngp_ppl.sampling._native`), else the XLA kernel."""
    where = device if device is not None else (jax.config.jax_default_device
                                               or jax.devices()[0])
    lib = _native.library() if getattr(where, "platform", where) == "cpu" else None
    if lib is not None:
        return _HostShardJob(net, X, width, seed, start, count, plan, batch, lib, device)
    return ShardJob(net, X, width, seed, start, count, plan, batch, chunk, device)


def shard_sums(net: Ensemble, X, width: int, seed: int, start: int, count: int, *,
               orders, covariance: bool, batch: int, progress=None, device=None) -> ShardSums:
    """Sums over networks ``start .. start+count-1`` at a resolved batch size (no checks).

    The unit of work of :func:`sample_correlators`' shards and of a Dask task; ``batch``
    must come from a :class:`~nngp_ppl.sampling.checkpoint.RunPlan` (a multiple of the chunk size).
    """
    orders = tuple(orders)
    plan = StepPlan(len(X), orders, bool(covariance))
    chunk = min(chunk_size(len(X), max(orders)), batch)
    job = shard_job(net, X, width, seed, start, count, plan, batch, chunk, device)
    while job.dispatch():
        done = job.retire(1)
        if progress is not None and done:
            progress(done)
    done = job.retire(0)
    if progress is not None and done:
        progress(done)
    return job.result()



def batch_bytes(width: int, batch: int, k: int, d_in: int) -> int:
    """Bytes one compiled step needs for the forward pass of ``batch`` networks (an upper
    bound).

    Per network and neuron: 8 float32 words per random parameter (d_in + 2 of them: the
    normals, their random bits and the generator's intermediates) and 2 per input (the
    pre-activations and activations). Fitted as a bound on XLA's own buffer assignment on
    CPU (``memory_analysis``): with jax 0.12.1 it exceeds it by 1.13-1.40x for d_in = 1..3,
    k = 1..6 and all three activations (``tests/test_robustness_run.py``; jax 0.12.0 assigned
    up to 1.4x less, so the words per parameter were raised from 5 when 0.12.1 came). The
    monomial products live per chunk and are small next to it (:data:`CHUNK_BYTES`).
    """
    return int(batch) * (4 * int(width) * (8 * (int(d_in) + 2) + 2 * int(k)) + 8 * int(k))


def widest_fitting(memory: int, batch: int, k: int, d_in: int) -> int:
    """The largest width whose step (:func:`batch_bytes`) fits in ``memory`` bytes."""
    per_width = 4 * batch * (8 * (d_in + 2) + 2 * k)
    return max(0, (int(memory) - 8 * k * batch) // per_width)


def available_bytes(device) -> int | None:
    """Free memory of a JAX device in bytes, or ``None`` when it cannot be known.

    Accelerators report their allocator's limit and use; CPU devices share the host's
    memory, of which the kernel's ``MemAvailable`` estimate is what can be allocated without
    swapping.
    """
    if device.platform != "cpu":
        try:
            stats = device.memory_stats() or {}
        except Exception:  # backends without allocator statistics
            stats = {}
        if "bytes_limit" in stats:
            return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
        return None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
