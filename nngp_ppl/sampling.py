r"""Streaming network sampler: draw networks in batches, keep float64 monomial sums.

For each width N the sampler draws networks :math:`j = 0, 1, \dots` with the key
:func:`nngp_ppl.ensembles.network_keys` ``(seed, N, j)`` (``fold_in`` on the width, then on
the network index), evaluates them on the k inputs in float32, and adds to float64 running
totals the sums :math:`S_t = \sum_j \prod_{a\in t} f_j(x_a)` of every monomial the
statistics need (:mod:`nngp_ppl.stats`): the distinct tuples of each requested order and,
for the estimator covariance, of every pairwise sum of orders. Since each network has its own
key, the sums do not depend on the batch size, nor on how a later caller splits the index
range into shards, up to round-off: float64 in the sums, and float32 in a network's outputs
(XLA may add a network's N neurons in another order for another batch shape).

Shards, devices, workers
------------------------
:func:`sample_correlators` cuts each width's index range into shards of whole batches
(:func:`plan_run`, :class:`nngp_ppl.checkpoint.RunPlan`). Each shard is summed on its own
from zero totals (:func:`shard_sums`), on one local JAX device (all of them share the
work: :func:`_run_local` keeps one shard per device and queues their batches
asynchronously) or on a Dask worker (:mod:`nngp_ppl.distributed`); the shard sums are then
added in shard order (:class:`nngp_ppl.checkpoint.ShardLedger`). The summation order thus
depends only on the plan, so one device, two devices, Dask workers and an interrupted and
resumed run give bitwise the same sums on the same platform (``tests/test_distributed.py``,
``tests/test_resume.py``). Devices run whole shards rather than slices of one batch:
every device then executes the identical single-device program (a batch split over
devices would be a different XLA program, bitwise equal only by luck), and no
cross-device reduction is needed.

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
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from . import _checks
from . import tuples as _tuples
from ._checks import NNGPInputError
from .checkpoint import RunPlan, ShardLedger, ShardSums, remove_stale_temporaries
from .ensembles import SingleLayerNet, network_keys
from .stats import (
    MAX_MONOMIALS,
    TAIL_POWERS,
    CorrelatorStats,
    accumulated_orders,
    check_tails,
    monomial_count,
    rows_of,
)

#: Network indices are uint32 in :func:`nngp_ppl.ensembles.network_keys`.
MAX_NETWORK_INDEX = 2**32

#: Bytes of forward-pass working memory the default batch size aims at.
BATCH_BYTES = 16 * 2**20

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
def _compiled_step(net: SingleLayerNet, width: int, batch: int, chunk: int, plan: _Plan):
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


def default_batch_size(width: int, k: int, d_in: int = 1) -> int:
    """Networks per batch: about :data:`BATCH_BYTES` of forward-pass memory, 8..4096.

    Per network the forward pass holds width·(d_in + 2) float32 normals and about three
    (width, k) float32 arrays. The monomial products live per chunk of at most
    :data:`CHUNK` networks and do not count here.
    """
    width = _checks.positive_int("width", width)
    per_net = 4 * width * (_checks.positive_int("d_in", d_in) + 2 + 3 * k) + 8 * k
    batch = BATCH_BYTES // per_net
    if batch >= CHUNK:
        return int(min(4096, batch // CHUNK * CHUNK))
    return int(max(8, batch // 8 * 8))  # very wide networks: few per batch


def _resolve_batch(batch: int, count: int, k: int, max_order: int) -> tuple[int, int]:
    """(batch, chunk) compiled for a range of ``count`` networks at a requested batch size.

    Never a batch much larger than the whole range (small runs, tests); then rounded up to
    whole chunks (the extra rows are masked like a short last batch).
    """
    batch = min(batch, -(-count // 8) * 8)
    chunk = min(_chunk_size(k, max_order), batch)
    return -(-batch // chunk) * chunk, chunk


#: The default shard size aims at this many shards per width, so that up to this many
#: devices or workers can share one width.
MIN_SHARDS = 8

#: At most this many batches per shard by default: bounds the work lost to a crash and
#: the time between checkpoints (about 10 s on a 2-core CPU at N = 1000 or N = 10).
MAX_SHARD_BATCHES = 256


def default_shard_size(n_nets: int, batch: int) -> int:
    """Networks per shard: whole batches, about n_nets / :data:`MIN_SHARDS`, at most
    :data:`MAX_SHARD_BATCHES` batches. Independent of the device and worker count, so
    that the summation order (and so the result, bit for bit) is too."""
    n_nets = _checks.positive_int("n_nets", n_nets)
    batch = _checks.positive_int("batch", batch)
    batches = -(-n_nets // batch)
    return min(MAX_SHARD_BATCHES, max(1, -(-batches // MIN_SHARDS))) * batch


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


def shard_sums(net: SingleLayerNet, X, width: int, seed: int, start: int, count: int, *,
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


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------
def network_sums(net: SingleLayerNet, X, width: int, seed: int, start: int, count: int, *,
                 orders=(2, 4, 6), covariance: bool = True, batch_size: int | None = None,
                 progress=None):
    """Float64 monomial sums over networks ``start .. start+count-1`` at one width.

    A pure function of its arguments, additive over disjoint index ranges: the unit of
    work a shard or worker computes. Returns ``(moments, squares)``: ``{order: (T,)}``
    for :func:`nngp_ppl.stats.accumulated_orders` ``(orders, covariance)``, and the
    ``{order: (T,)}`` sums of squares when ``covariance=False`` (else ``None``).
    ``progress``, if given, is called with the number of networks after each batch.
    """
    if not isinstance(net, SingleLayerNet):
        raise NNGPInputError(
            f"net must be an ensemble (ErfNet, ReLUNet, GaussNet), got {type(net).__name__}"
        )
    X = _checks.inputs("X", X, net.d_in)
    width = _checks.positive_int("width", width)
    seed = _checks.seed("seed", seed)
    start = _nonnegative_int("start", start)
    count = _checks.positive_int("count", count)
    orders = _checks.orders("orders", orders)
    if start + count > MAX_NETWORK_INDEX:
        raise NNGPInputError(
            f"start + count must be <= 2**32 (network indices are uint32), got {start + count}"
        )
    _check_monomials(len(X), orders, covariance)
    if batch_size is None:
        batch = default_batch_size(width, len(X), net.d_in)
    else:
        batch = _checks.positive_int("batch_size", batch_size)
    batch, _ = _resolve_batch(batch, count, len(X), max(orders))
    sums = shard_sums(net, X, width, seed, start, count, orders=orders,
                      covariance=bool(covariance), batch=batch, progress=progress)
    return sums.moments, sums.squares


def plan_run(net: SingleLayerNet, X, widths, n_nets: int, *, orders=(2, 4, 6), seed: int = 0,
             start: int = 0, covariance: bool = True, batch_size: int | None = None,
             shard_size: int | None = None) -> RunPlan:
    """The shard layout :func:`sample_correlators` uses for these arguments (validated).

    Per width: the batch size (default :func:`default_batch_size`, never much more than
    the shard or the run) and the shard size (default :func:`default_shard_size`; a given
    ``shard_size`` is rounded up to whole batches).
    """
    if not isinstance(net, SingleLayerNet):
        raise NNGPInputError(
            f"net must be an ensemble (ErfNet, ReLUNet, GaussNet), got {type(net).__name__}"
        )
    X = _checks.inputs("X", X, net.d_in)
    widths = _checks.positive_ints("widths", widths)
    n_nets = _checks.positive_int("n_nets", n_nets)
    orders = _checks.orders("orders", orders)
    seed = _checks.seed("seed", seed)
    start = _nonnegative_int("start", start)
    if batch_size is not None:
        batch_size = _checks.positive_int("batch_size", batch_size)
    if shard_size is not None:
        shard_size = _checks.positive_int("shard_size", shard_size)
    if not isinstance(covariance, (bool, np.bool_)):
        raise NNGPInputError(f"covariance must be True or False, got {covariance!r}")
    if start + n_nets > MAX_NETWORK_INDEX:
        raise NNGPInputError(
            f"start + n_nets must be <= 2**32 (network indices are uint32), got {start + n_nets}"
        )
    _check_monomials(len(X), orders, covariance)
    k = len(X)
    batches, shards = [], []
    for width in widths:
        want = default_batch_size(width, k, net.d_in) if batch_size is None else batch_size
        batch, _ = _resolve_batch(want, min(n_nets, shard_size or n_nets), k, max(orders))
        shard = (default_shard_size(n_nets, batch) if shard_size is None
                 else -(-shard_size // batch) * batch)
        batches.append(batch)
        shards.append(shard)
    return RunPlan(net=net, X=tuple(tuple(float(v) for v in p) for p in X), widths=widths,
                   n_nets=n_nets, orders=orders, seed=seed, start=start,
                   covariance=bool(covariance), batch=tuple(batches), shard=tuple(shards))


def local_devices(devices=None) -> list:
    """The JAX devices a local run shards over: all local devices of the default backend
    (``None``), the first ``n`` of them (an int), or the given list of ``jax.Device``."""
    avail = jax.local_devices()
    if devices is None:
        return list(avail)
    if isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        n = _checks.positive_int("devices", devices)
        if n > len(avail):
            raise NNGPInputError(
                f"devices: {n} requested but this process sees {len(avail)} local "
                f"{avail[0].platform} device(s); for more CPU devices set XLA_FLAGS="
                f"--xla_force_host_platform_device_count={n} before JAX is imported"
            )
        return list(avail[:n])
    try:
        out = list(devices)
    except TypeError:
        out = None
    if not out or not all(isinstance(d, jax.Device) for d in out):
        raise NNGPInputError(
            f"devices must be None, a positive int or a non-empty list of jax.Device, "
            f"got {devices!r}"
        )
    return out


def _run_local(plan: RunPlan, ledger: ShardLedger, devices, on_networks, on_shard) -> None:
    """Compute the ledger's missing shards, one shard per device at a time.

    Each device runs whole shards; the host round-robins over the devices, queueing one
    batch on each before waiting for the previous one, so the devices work concurrently.
    """
    splan = _Plan(plan.k, plan.orders, plan.covariance)
    X = plan.inputs
    queue = deque(ledger.todo())
    active: list = [None] * len(devices)
    while queue or any(a is not None for a in active):
        for slot, device in enumerate(devices):
            if active[slot] is None and queue:
                width, index = queue.popleft()
                start, count = plan.shards(width)[index]
                batch = plan.batch_size(width)
                chunk = min(_chunk_size(plan.k, splan.max_order), batch)
                job = _ShardJob(plan.net, X, width, plan.seed, start, count, splan, batch,
                                chunk, device)
                active[slot] = ((width, index), job)
        for slot, entry in enumerate(active):
            if entry is None:
                continue
            key, job = entry
            more = job.dispatch()
            done = job.retire(1 if more else 0)
            if done:
                on_networks(done)
            if not more:
                on_shard(key, job.result())
                active[slot] = None


def sample_correlators(net: SingleLayerNet, X, widths, n_nets: int, orders=(2, 4, 6),
                       seed: int = 0, batch_size: int | None = None, progress: bool = True,
                       *, start: int = 0, covariance: bool = True,
                       shard_size: int | None = None, devices=None, dask=None,
                       checkpoint=None, resume: bool = False) -> CorrelatorStats:
    r"""Draw ``n_nets`` networks at each width and return their correlator statistics.

    Parameters
    ----------
    net : ErfNet, ReLUNet or GaussNet
        The ensemble (hyperparameters σ_W, σ_b, μ_W, μ_b, d_in).
    X : array (k, d_in)
        Inputs; a 1-d array is k scalar inputs when d_in = 1.
    widths : int or sequence of int
        Hidden widths N.
    n_nets : int
        Networks per width.
    orders : even ints <= 6
        Correlator orders :math:`G^{(n)}` to measure.
    seed : int
        Network j at width N uses ``network_keys(seed, N, j)``; results do not depend on
        ``batch_size`` (beyond round-off).
    batch_size : int, optional
        Networks per compiled step; default from the width and the number of inputs
        (:func:`default_batch_size`, about 16 MiB of working memory).
    progress : bool
        Show a tqdm progress bar.
    start : int, keyword-only
        First network index (default 0). Runs over disjoint index ranges with the same
        seed :meth:`~nngp_ppl.CorrelatorStats.merge` into exactly the statistics of one run.
    covariance : bool, keyword-only
        Also accumulate the monomials of all pairwise sums of orders (default), so that
        :meth:`~nngp_ppl.CorrelatorStats.covariance` is available. ``False`` keeps only the
        orders and their squares (standard errors), which is much cheaper for many inputs.
    shard_size : int, keyword-only, optional
        Networks per shard, the unit of parallel work and of checkpointing (default
        :func:`default_shard_size`; rounded up to whole batches).
    devices : None, int or list of jax.Device, keyword-only
        Local devices to run shards on concurrently (default: all local devices of JAX's
        default backend; :func:`local_devices`). Ignored with ``dask``.
    dask : None, str or distributed.Client, keyword-only
        Fan the shards out to Dask workers instead: a ``Client``, a scheduler address
        ``"tcp://host:port"``, or ``"local"`` / ``"local:N"`` for a local cluster of N
        worker processes (:mod:`nngp_ppl.distributed`; needs the ``distributed`` extra).
    checkpoint : path, keyword-only, optional
        Save the finished shards there (atomically) after each shard. The file is left in
        place when the run completes; delete it once the result is saved.
    resume : bool, keyword-only
        Continue from ``checkpoint`` if it exists (it must describe the same run); start
        afresh if it does not. Without ``resume`` an existing checkpoint is an error.

    The statistics are sums over shards added in shard order (:mod:`nngp_ppl.checkpoint`):
    for the same arguments the result is bitwise the same whatever the number of devices or
    workers and however often the run was interrupted and resumed (on the same platform;
    across machines, to float32 round-off). Memory does not grow with ``n_nets``. A
    :class:`~nngp_ppl.stats.HeavyTailWarning` is emitted when the naive standard errors
    are unreliable (:func:`nngp_ppl.stats.check_tails`).
    """
    requested = plan_run(net, X, widths, n_nets, orders=orders, seed=seed, start=start,
                         covariance=covariance, batch_size=batch_size, shard_size=shard_size)
    if not isinstance(resume, (bool, np.bool_)):
        raise NNGPInputError(f"resume must be True or False, got {resume!r}")
    ledger = None
    if checkpoint is not None:
        checkpoint = _checkpoint_path(checkpoint)
        if checkpoint.exists():
            if not resume:
                raise NNGPInputError(
                    f"checkpoint: {checkpoint} exists (an interrupted or unsaved run); pass "
                    "resume=True (CLI: --resume) to continue it, or delete it to start over"
                )
            remove_stale_temporaries(checkpoint)
            ledger = ShardLedger.load(checkpoint)
            _check_resumable(ledger.plan, requested, checkpoint, batch_size, shard_size)
    elif resume:
        raise NNGPInputError("resume=True needs a checkpoint path to resume from")
    if ledger is None:
        ledger = ShardLedger(requested)
    plan = ledger.plan
    if dask is None:
        devs = local_devices(devices)

    def on_shard(key, sums):
        ledger.add(*key, sums)
        if checkpoint is not None:
            ledger.save(checkpoint)

    from tqdm.auto import tqdm

    with tqdm(total=plan.n_nets * len(plan.widths), initial=ledger.networks_done(),
              unit="net", unit_scale=True, disable=not progress, dynamic_ncols=True,
              desc=f"{plan.net.name}-net") as bar:
        if dask is None:
            _run_local(plan, ledger, devs, bar.update, on_shard)
        else:
            from .distributed import run_dask

            run_dask(plan, ledger, dask, bar.update, on_shard)
    stats = ledger.stats()
    check_tails(stats, stacklevel=3)  # point the warning at the caller
    return stats


def _checkpoint_path(path) -> Path:
    if not isinstance(path, (str, Path)) or str(path) == "":
        raise NNGPInputError(f"checkpoint must be a file path, got {path!r}")
    path = Path(path)
    if path.is_dir():
        raise NNGPInputError(f"checkpoint must be a file name, got the directory {path}")
    return path


def _check_resumable(saved: RunPlan, requested: RunPlan, path, batch_size, shard_size) -> None:
    """A checkpoint continues only the run it was made for; sizes follow the checkpoint
    unless the caller asked for other ones explicitly."""
    diff = saved.differences(requested, sizes=False)
    if diff:
        raise NNGPInputError(
            f"checkpoint: {path} belongs to a different run (it differs in "
            f"{', '.join(diff)}); rerun with the original arguments, or delete it to start over"
        )
    for name, asked, mine, theirs in (("batch_size", batch_size, requested.batch, saved.batch),
                                      ("shard_size", shard_size, requested.shard, saved.shard)):
        if asked is not None and mine != theirs:
            raise NNGPInputError(
                f"{name}: the checkpoint {path} was made with {name} {list(theirs)} per width, "
                f"not {list(mine)}; omit {name} to continue with the checkpoint's"
            )


def _check_monomials(k: int, orders, covariance) -> None:
    n_mono = monomial_count(k, orders, covariance)
    if n_mono > MAX_MONOMIALS:
        raise NNGPInputError(
            f"X: {k} inputs at orders {orders} need {n_mono} monomial sums per width "
            f"(limit {MAX_MONOMIALS}); use fewer inputs or orders, or covariance=False"
        )


def _nonnegative_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise NNGPInputError(f"{name} must be a non-negative integer, got {value!r}")
    if value < 0:
        raise NNGPInputError(f"{name} must be a non-negative integer, got {value}")
    return int(value)
