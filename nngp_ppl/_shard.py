r"""The pure shard kernel: float64 monomial sums over one index range of networks.

:func:`shard_sums` is the unit of work of a sampling run: the sums over networks
``start .. start+count-1`` at one width, computed from zero totals, a pure function of its
arguments (each network has its own PRNG key, :func:`nngp_ppl.ensembles.network_keys`).
It knows nothing of plans, ledgers, checkpoints or where it runs; the executors that call
it (:class:`nngp_ppl.sampling.LocalExecutor` on local JAX devices,
:class:`nngp_ppl.distributed.DaskExecutor` on Dask workers) are interchangeable, and
:class:`nngp_ppl.checkpoint.ShardLedger` adds their results in shard order.

The per-batch step is one jit-compiled pure function of ``(totals, X, seed, start,
n_valid)`` at a static (width, batch size); a short final batch reuses it with the unused
rows masked to zero (all monomials have order >= 2, so a zero row adds nothing). Within a
batch the monomials are accumulated over chunks of :data:`CHUNK` networks, small enough for
the products to stay in cache.

Monomial sums without outer products
------------------------------------
Within a batch (rows b = networks, float64):

* orders 2..max(orders) are *materialised*: the pair products :math:`P_{(a,c)} = f_a f_c`
  (a <= c), then each m-tuple t = (t_1..t_m) as its (m-2)-tuple tail times its leading
  pair, :math:`M_m[:, t] = M_{m-2}[:, (t_3..t_m)]\, P[:, (t_1, t_2)]` (one gather and one
  multiply per monomial);
* an order m > max(orders) (only needed for the covariance) is never materialised. A
  sorted m-tuple splits uniquely into a p-prefix and a q-suffix (p + q = m) with
  last(prefix) <= first(suffix); grouping prefixes by their last index d,

  .. math:: \sum_b M_m[b, (s,t)] = \sum_b M_p[b, s]\, M_q[b, t]
     = (M_p[:, \{s: \mathrm{last}(s) = d\}]^T\, M_q[:, \{t: \mathrm{first}(t) \ge d\}])_{st},

  a matrix product per d with exactly one multiply-add per monomial and network.

Cost: for k = 6 inputs and orders (2, 4, 6) that is 11 087 float64 multiply-adds per
network. On a 2-core CPU this is small next to the forward pass at N = 1000, comparable to
it at N = 100, and dominant at N <= 10 (see ``benchmarks/sampler.py``); ``covariance=False``
keeps only the 609 observables and their squares. Both also keep the tail sums
:math:`\sum_j X^3, \sum_j X^4` of the 609 observables (the heavy-tail check of
:mod:`nngp_ppl.stats`); measured A/B at N = 100 on 2 loaded cores, they add about 10% to a
covariance run and 15-40% to a ``covariance=False`` run, and nothing visible at N = 1000.

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

from . import tuples as _tuples
from .checkpoint import ShardSums
from .ensembles import Ensemble, network_keys
from .stats import TAIL_POWERS, accumulated_orders, rows_of

#: Most networks per chunk of the monomial accumulation. With k = 6 inputs the products of
#: a 128-network chunk take 128 * 609 * 8 B = 0.6 MiB, so they stay in a 1 MiB L2 cache;
#: more inputs get smaller chunks (:func:`_chunk_size`).
CHUNK = 128

#: Bytes of materialised products a chunk aims at (a typical L2 cache).
CHUNK_BYTES = 2**20

# ---------------------------------------------------------------------------------------------
# static monomial plan
# ---------------------------------------------------------------------------------------------
def _first_index_starts(k: int, m: int) -> tuple[int, ...]:
    """starts[c] = first row of distinct_tuples(k, m) whose first index is >= c (c = 0..k)."""
    rows = _tuples.distinct_tuples(k, m)
    return tuple(int(np.searchsorted(rows[:, 0], c)) for c in range(k + 1))


@dataclass(frozen=True)
class _Split:
    """Order m = p + q via prefix/suffix matrix products (module docstring)."""

    m: int
    p: int
    q: int
    blocks: tuple[tuple[tuple[int, ...], int], ...]  # (prefix rows with last == d, suffix start)
    order: tuple[int, ...]  # concatenated block entries -> lexicographic row of the m-tuple


@cache
def _split(k: int, p: int, q: int) -> _Split:
    prefixes = _tuples.distinct_tuples(k, p)
    suffixes = _tuples.distinct_tuples(k, q)
    starts = _first_index_starts(k, q)
    blocks, joined = [], []
    for d in range(k):
        rows = np.flatnonzero(prefixes[:, -1] == d)
        if len(rows) == 0 or starts[d] == len(suffixes):
            continue
        blocks.append((tuple(int(r) for r in rows), starts[d]))
        tail = suffixes[starts[d]:]
        joined.append(np.concatenate(
            [np.repeat(prefixes[rows], len(tail), axis=0), np.tile(tail, (len(rows), 1))], axis=1
        ))
    position = rows_of(k, np.concatenate(joined))  # already sorted rows: prefix <= suffix
    order = np.empty_like(position)
    order[position] = np.arange(len(position))
    return _Split(p + q, p, q, tuple(blocks), tuple(int(i) for i in order))


@dataclass(frozen=True)
class _Plan:
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


@cache
def _parents(k: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the tail (m-2)-tuple and of the leading pair of each distinct m-tuple."""
    rows = _tuples.distinct_tuples(k, m)
    return rows_of(k, rows[:, 2:]), rows_of(k, rows[:, :2])


def _materialise(f, k: int, max_order: int) -> dict[int, jnp.ndarray]:
    """{m: (B, T_m)} products over the distinct m-tuples, m = 2, 4, .., max_order."""
    pairs = _tuples.distinct_tuples(k, 2)
    P = f[:, pairs[:, 0]] * f[:, pairs[:, 1]]
    out = {2: P}
    for m in range(4, max_order + 1, 2):
        tail, lead = _parents(k, m)
        # One gather each (cheap to compile, unlike a concatenation of per-pair slices).
        out[m] = jnp.take(out[m - 2], tail, axis=1) * jnp.take(P, lead, axis=1)
    return out


def _monomial_sums(f, plan: _Plan):
    """Batch sums (over axis 0 of ``f``, shape (B, k) float64) of the plan's monomials.

    Returns (moments, squares, tails): tuples of (T_m,) arrays for ``plan.accumulated``;
    with ``covariance=False`` the squares of each order (else an empty tuple); and the
    (2, T_n) power sums p = 3, 4 of each measured order (:mod:`nngp_ppl.stats`, heavy tails).
    """
    mats = _materialise(f, plan.k, plan.max_order)
    moments = []
    for m in plan.accumulated:
        if m in mats:
            moments.append(jnp.sum(mats[m], axis=0))
            continue
        p = 2 * (m // 4)  # balanced split with p, q even and <= max_order
        sp = _split(plan.k, p, m - p)
        parts = [
            jnp.dot(jnp.take(mats[sp.p], np.asarray(rows), axis=1).T, mats[sp.q][:, start:],
                    precision=jax.lax.Precision.HIGHEST).ravel()
            for rows, start in sp.blocks
        ]
        moments.append(jnp.concatenate(parts)[np.asarray(sp.order)])
    squares = () if plan.covariance else tuple(
        jnp.sum(mats[n] * mats[n], axis=0) for n in plan.orders
    )
    tails = []
    for n in plan.orders:
        sq = mats[n] * mats[n]
        tails.append(jnp.stack([jnp.sum(sq * mats[n], axis=0), jnp.sum(sq * sq, axis=0)]))
    return tuple(moments), squares, tuple(tails)


@lru_cache(maxsize=32)
def _compiled_step(net: Ensemble, width: int, batch: int, chunk: int, plan: _Plan):
    """jit-compiled ``step(totals, X, seed, start, n_valid) -> totals + batch sums``.

    The forward pass runs on the whole batch; the monomial sums run over chunks of
    ``chunk`` networks in a ``lax.scan``, so that the materialised products and the
    matrix-product operands stay in cache. (Measured on 2 CPU cores, Erf-net N = 100, six
    inputs: the full-covariance accumulation cost fell from ~+85% of the forward pass
    with one pass over an 896-network batch to ~+20% with 128-network chunks.)
    """

    def step(totals, X, seed, start, n_valid):
        keys = network_keys(seed, width, start, batch)
        f = net.network_outputs(keys, X, width, jnp.float32).astype(jnp.float64)
        f = jnp.where((jnp.arange(batch) < n_valid)[:, None], f, 0.0)

        def add_chunk(carry, fc):
            return jax.tree.map(jnp.add, carry, _monomial_sums(fc, plan)), None

        totals, _ = jax.lax.scan(add_chunk, totals, f.reshape(batch // chunk, chunk, plan.k))
        return totals

    return jax.jit(step)


def _chunk_size(k: int, max_order: int) -> int:
    """Networks per accumulation chunk: the materialised products in about CHUNK_BYTES."""
    materialised = sum(math.comb(k + m - 1, m) for m in range(2, max_order + 1, 2))
    return int(min(CHUNK, max(8, CHUNK_BYTES // (8 * materialised) // 8 * 8)))


def _zero_totals(plan: _Plan):
    k = plan.k

    def size(m):
        return len(_tuples.distinct_tuples(k, m))

    return (
        tuple(jnp.zeros(size(m)) for m in plan.accumulated),
        () if plan.covariance else tuple(jnp.zeros(size(n)) for n in plan.orders),
        tuple(jnp.zeros((len(TAIL_POWERS), size(n))) for n in plan.orders),
    )


class _ShardJob:
    """One shard's batches on one device: dispatch asynchronously, at most two in flight.

    All arguments are committed to ``device`` (``None``: JAX's default placement), so the
    same compiled step runs there; XLA produces the same executable for every device of a
    kind, which makes a shard's sums bitwise independent of the device it ran on.
    """

    def __init__(self, net, X, width, seed, start, count, plan: _Plan, batch, chunk,
                 device=None):
        self.count = count
        self._batch, self._start = batch, start
        self._plan = plan
        self._step = _compiled_step(net, width, batch, chunk, plan)
        if device is None:
            self._put = lambda a: a
        else:
            self._put = lambda a: jax.device_put(a, device)
        self._totals = self._put(_zero_totals(plan))
        self._X = self._put(jnp.asarray(X))
        self._seed = self._put(jnp.asarray(seed, dtype=jnp.int64))
        self._offsets = iter(range(0, count, batch))
        self._inflight: deque = deque()

    def dispatch(self) -> bool:
        """Queue the next batch on the device; False once every batch is queued."""
        offset = next(self._offsets, None)
        if offset is None:
            return False
        n_valid = min(self._batch, self.count - offset)
        self._totals = self._step(self._totals, self._X, self._seed,
                                  self._put(jnp.asarray(self._start + offset, jnp.uint32)),
                                  self._put(jnp.asarray(n_valid, jnp.int32)))
        self._inflight.append((self._totals, n_valid))
        return True

    def retire(self, keep: int) -> int:
        """Wait until at most ``keep`` batches are in flight; return the networks finished."""
        done = 0
        while len(self._inflight) > keep:
            totals, n_valid = self._inflight.popleft()
            jax.block_until_ready(totals)
            done += n_valid
        return done

    def result(self) -> ShardSums:
        self.retire(0)
        moments, squares, tails = self._totals
        p = self._plan
        return ShardSums(
            moments={m: np.asarray(v, np.float64) for m, v in zip(p.accumulated, moments,
                                                                  strict=True)},
            squares=None if p.covariance else {
                n: np.asarray(v, np.float64) for n, v in zip(p.orders, squares, strict=True)},
            tails={n: np.asarray(v, np.float64) for n, v in zip(p.orders, tails, strict=True)},
        )


def shard_sums(net: Ensemble, X, width: int, seed: int, start: int, count: int, *,
               orders, covariance: bool, batch: int, progress=None, device=None) -> ShardSums:
    """Sums over networks ``start .. start+count-1`` at a resolved batch size (no checks).

    The unit of work of :func:`sample_correlators`' shards and of a Dask task; ``batch``
    must come from a :class:`~nngp_ppl.checkpoint.RunPlan` (a multiple of the chunk size).
    """
    orders = tuple(orders)
    plan = _Plan(len(X), orders, bool(covariance))
    chunk = min(_chunk_size(len(X), max(orders)), batch)
    job = _ShardJob(net, X, width, seed, start, count, plan, batch, chunk, device)
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

    Per network and neuron: 5 float32 words per random parameter (d_in + 2 of them: the
    normals, their random bits and the generator's intermediates) and 2 per input (the
    pre-activations and activations). Fitted as a bound on XLA's own buffer assignment on
    CPU (``memory_analysis``), which it exceeds by 1.1-1.45x for d_in = 1..3, k = 1..6 and
    all three activations (``tests/test_robustness_run.py``). The monomial products live
    per chunk and are small next to it (:data:`CHUNK_BYTES`).
    """
    return int(batch) * (4 * int(width) * (5 * (int(d_in) + 2) + 2 * int(k)) + 8 * int(k))


def widest_fitting(memory: int, batch: int, k: int, d_in: int) -> int:
    """The largest width whose step (:func:`batch_bytes`) fits in ``memory`` bytes."""
    per_width = 4 * batch * (5 * (d_in + 2) + 2 * k)
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
