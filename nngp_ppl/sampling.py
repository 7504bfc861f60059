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
keeps only the 609 observables and their squares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache, lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from . import _checks
from . import tuples as _tuples
from ._checks import NNGPInputError
from .ensembles import SingleLayerNet, network_keys
from .stats import MAX_MONOMIALS, CorrelatorStats, accumulated_orders, monomial_count, rows_of

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

    Returns (moments, squares): tuples of (T_m,) arrays for ``plan.accumulated`` and, with
    ``covariance=False``, the squares of each order (else an empty tuple).
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
    return tuple(moments), squares


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
    k = len(X)
    n_mono = monomial_count(k, orders, covariance)
    if n_mono > MAX_MONOMIALS:
        raise NNGPInputError(
            f"X: {k} inputs at orders {orders} need {n_mono} monomial sums per width "
            f"(limit {MAX_MONOMIALS}); use fewer inputs or orders, or covariance=False"
        )
    if batch_size is None:
        batch = default_batch_size(width, k, net.d_in)
    else:
        batch = _checks.positive_int("batch_size", batch_size)
    # Never compile a batch much larger than the whole range (small runs, tests); then
    # round it up to whole chunks (the extra rows are masked like a short last batch).
    batch = min(batch, -(-count // 8) * 8)
    chunk = min(_chunk_size(k, max(orders)), batch)
    batch = -(-batch // chunk) * chunk
    plan = _Plan(k, orders, bool(covariance))
    step = _compiled_step(net, width, batch, chunk, plan)

    acc = plan.accumulated
    totals = (
        tuple(jnp.zeros(len(_tuples.distinct_tuples(k, m))) for m in acc),
        () if covariance else tuple(jnp.zeros(len(_tuples.distinct_tuples(k, n)))
                                    for n in orders),
    )
    Xj = jnp.asarray(X)
    seed_j = jnp.asarray(seed, dtype=jnp.int64)
    pending = None
    for offset in range(0, count, batch):
        n_valid = min(batch, count - offset)
        totals = step(totals, Xj, seed_j, jnp.asarray(start + offset, jnp.uint32),
                      jnp.asarray(n_valid, jnp.int32))
        # Keep one batch in flight: dispatch overlaps compute, and the progress bar
        # reports networks actually done.
        if pending is not None:
            jax.block_until_ready(pending[0])
            if progress is not None:
                progress(pending[1])
        pending = (totals, n_valid)
    jax.block_until_ready(pending[0])
    if progress is not None:
        progress(pending[1])
    moments = {m: np.asarray(v, dtype=np.float64) for m, v in zip(acc, totals[0], strict=True)}
    squares = None if covariance else {
        n: np.asarray(v, dtype=np.float64) for n, v in zip(orders, totals[1], strict=True)
    }
    return moments, squares


def sample_correlators(net: SingleLayerNet, X, widths, n_nets: int, orders=(2, 4, 6),
                       seed: int = 0, batch_size: int | None = None, progress: bool = True,
                       *, start: int = 0, covariance: bool = True) -> CorrelatorStats:
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
        ``batch_size``.
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

    Memory does not grow with ``n_nets``: only the float64 sums persist between batches.
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
    if not isinstance(covariance, (bool, np.bool_)):
        raise NNGPInputError(f"covariance must be True or False, got {covariance!r}")
    n_mono = monomial_count(len(X), orders, covariance)
    if n_mono > MAX_MONOMIALS:
        raise NNGPInputError(
            f"X: {len(X)} inputs at orders {orders} need {n_mono} monomial sums per width "
            f"(limit {MAX_MONOMIALS}); use fewer inputs or orders, or covariance=False"
        )

    from tqdm.auto import tqdm

    moments, squares, ranges = {}, ({} if not covariance else None), {}
    with tqdm(total=n_nets * len(widths), unit="net", unit_scale=True,
              disable=not progress, dynamic_ncols=True) as bar:
        for width in widths:
            bar.set_description(f"{net.name}-net N={width}")
            m, s = network_sums(net, X, width, seed, start, n_nets, orders=orders,
                                covariance=covariance, batch_size=batch_size,
                                progress=bar.update)
            moments[width] = m
            if squares is not None:
                squares[width] = s
            ranges[width] = [(start, start + n_nets)]
    return CorrelatorStats(net, X, orders, seed, moments, ranges, squares=squares,
                           covariance=bool(covariance))


def _nonnegative_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise NNGPInputError(f"{name} must be a non-negative integer, got {value!r}")
    if value < 0:
        raise NNGPInputError(f"{name} must be a non-negative integer, got {value}")
    return int(value)
