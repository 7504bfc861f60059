r"""Correlator statistics of a network ensemble: mergeable float64 sums and what follows.

The sampler (:mod:`nngp_ppl.sampling.sampler`) draws networks :math:`f_j`, :math:`j = 1..n`, and
keeps, per width, only the float64 sums

.. math:: S_t = \sum_{j=1}^{n} \prod_{a \in t} f_j(x_a)

over the distinct tuples (multisets) :math:`t` of input indices,
:func:`nngp_ppl.tuples.distinct_tuples` order. Everything else is a function of these sums:

* the correlator estimate :math:`\hat G_t = S_t / n` (physics.md §3);
* the covariance of two such estimates. With :math:`s \cup t` the multiset union,
  :math:`\prod_{s} f \prod_{t} f = \prod_{s\cup t} f`, so the sample covariance of the
  observables :math:`\prod_s f` and :math:`\prod_t f` is

  .. math:: c_{st} = \frac{S_{s\cup t} - S_s S_t / n}{n - 1},
     \qquad \mathrm{Cov}(\hat G_s, \hat G_t) \approx c_{st} / n ,

  which needs the sums of every monomial of order :math:`|s| + |t|` but never the
  :math:`T \times T` outer product per network. For orders (2, 4, 6) and k = 6 inputs that is
  11 087 monomials of orders 2..12 instead of 609² products.

Sums add, so statistics from separate runs (disjoint network index ranges, same seed)
merge exactly; the network index ranges drawn are recorded so that merging can refuse to
count a network twice. Files are netCDF (xarray, h5netcdf engine) with provenance attributes.

A run made with ``covariance=False`` keeps only the orders themselves and the sums of
squares :math:`\sum_j (\prod_t f_j)^2`: enough for standard errors, not for the covariance.

Reliability of the standard errors (heavy tails)
------------------------------------------------
The sampler also keeps, per measured observable :math:`X_t = \prod_{a\in t} f(x_a)`, the
power sums :math:`\sum_j X_{t,j}^3` and :math:`\sum_j X_{t,j}^4` ("tail sums"), from which
the sample kurtosis :math:`\hat\kappa_t = \hat\mu_4 / \hat\mu_2^2` (central moments)
follows. The naive standard error :math:`\hat\sigma/\sqrt n` is itself an estimate; by the
delta method its relative spread is

.. math:: \varepsilon_t = \frac{\mathrm{sd}(\hat\sigma)}{\sigma}
    \approx \frac12 \sqrt{\frac{\kappa_t - 1}{n}}
    = \frac12 \sqrt{\frac{1}{n_{\mathrm{eff},t}} - \frac1n},
    \qquad n_{\mathrm{eff},t} = \frac{n}{\hat\kappa_t}
    = \frac{(\sum_j d_j^2)^2}{\sum_j d_j^4},\quad d_j = X_{t,j} - \bar X_t,

using :math:`\mathrm{Var}(\hat\sigma^2) \approx (\mu_4 - \sigma^4)/n`.
:math:`n_{\mathrm{eff}}` is the participation number of the squared deviations: the number
of networks that effectively carry the sample variance (1 when one network dominates, n
when all contribute equally). Log-normal Gauss-net products (physics.md §4) have so large a
kurtosis that :math:`n_{\mathrm{eff}}` stays at a few networks however many are drawn
(measured: Gauss-net σ_W = σ_b = 1, N = 2, one input, 4-pt: median n_eff ≈ 2 over
replicates of 2·10³ and of 2·10⁵ networks; at 2·10³ the median estimate sat 4 naive
standard errors below the exact value), whereas for a light-tailed ensemble it grows with
:math:`n`, towards :math:`n/\kappa_t` (Erf-net 6-pt at x = 1: ≈ 8 at 2·10³ networks,
≈ 110 at 2·10⁵). :func:`check_tails` warns (:class:`HeavyTailWarning`) when the worst
tuple has :math:`n_{\mathrm{eff}} <` :data:`MIN_EFFECTIVE_NETWORKS` = 10, i.e.
:math:`\varepsilon > 16\%`. The sample kurtosis underestimates a heavy tail (the rare draws
that make it are the ones missing), so passing the check does not prove the errors right;
failing it shows they are not.

Shifted sums (trained ensembles)
--------------------------------
A run may sum the products of the outputs shifted by a fixed reference
:math:`r(x_a)` per input and width, :math:`S^{(r)}_t = \sum_j \prod_{a\in t}
(f_j(x_a) - r(x_a))` (``shift=``; :mod:`nngp_ppl.training.trainer` does, with the mean of
a pilot block of trained networks, so that the float32 products are of small numbers).
Connected correlators and centred moments are invariant under the shift except
:math:`\kappa_1` (which gets r back), and their delta-method covariance is computed from the
shifted sums (:meth:`CorrelatorStats.connected`, :meth:`CorrelatorStats.shifted_covariance`),
where no digits cancel. The raw sums of f (:meth:`CorrelatorStats.moment_sums`, and all that
reads them: correlators, standard errors, covariance) are rebuilt in float64 by the binomial
expansion, one input at a time:

.. math:: S_t = \sum_{d=0}^{c_a(t)} \binom{c_a(t)}{d}\, r_a^{d}\;
    S_{t \setminus \{a\}^d}

(:math:`c_a(t)` copies of input a in t; :math:`t\setminus\{a\}^d` drops d of them;
:math:`S_\emptyset = n`), which needs the sums of every order 1..max: a shift is accepted
only for runs that measured orders 1..M with the covariance. The tail sums stay those of the
shifted products (:meth:`CorrelatorStats.effective_networks` describes
:math:`\prod_t (f - r)`).

Files
-----
:meth:`CorrelatorStats.to_netcdf` stores a SHA-256 checksum of every variable and every
provenance attribute (:func:`content_checksum`); :meth:`CorrelatorStats.from_netcdf`
recomputes it and refuses a file whose content was edited or damaged after writing.
"""

from __future__ import annotations

import json
import math
import warnings
from functools import cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
import xarray as xr

from .. import _checks
from .. import tuples as _tuples
from .._checks import NNGPInputError
from .._io import (
    atomic_path,
    content_checksum,
    format_version,
    json_attr,
    load_netcdf,
    netcdf_bytes,
    output_file,
    verify_checksum,
    version_error,
    write_bytes,
)
from .._version import __version__
from ..ensembles.core import Ensemble, ensemble_from_dict

__all__ = [
    "FILE_FORMAT",
    "FILE_VERSION",
    "MAX_MONOMIALS",
    "MIN_EFFECTIVE_NETWORKS",
    "TAIL_POWERS",
    "HeavyTailWarning",
    "accumulated_orders",
    "monomial_count",
    "rows_of",
    "union_index",
    "unshifted_sums",
    "square_index",
    "observable_rows",
    "normalised_deviation",
    "ConnectedCorrelator",
    "cumulants_with_jacobian",
    "CorrelatorStats",
    "check_tails",
]

#: Value of the ``nngp_ppl_format`` attribute that marks a correlator-statistics file.
FILE_FORMAT = "nngp_ppl.CorrelatorStats"
#: Layout version of that file; bump when the layout changes incompatibly.
#: 2: a ``checksum`` attribute (required) and the ``tail_sum_n`` variables.
FILE_VERSION = 2

#: Refuse runs whose monomial bookkeeping would exceed this many sums per width
#: (k = 6 at orders 2, 4, 6 with covariance needs 11 087).
MAX_MONOMIALS = 200_000

#: :func:`check_tails` warns below this many effective networks (module docstring): the
#: naive standard error is then uncertain by more than ε = 1/(2 sqrt(10)) ≈ 16%.
MIN_EFFECTIVE_NETWORKS = 10

#: Attributes that hold lists (a one-element list reads back from netCDF as a scalar).
_LIST_ATTRS = ("orders", "accumulated_orders")

#: Powers p of the tail sums :math:`\sum_j X_{t,j}^p` (module docstring).
TAIL_POWERS = (3, 4)


class HeavyTailWarning(UserWarning):
    """Naive standard errors are unreliable: too few networks carry the sample variance.

    Raised by :func:`check_tails` (and so by :func:`nngp_ppl.sample_correlators`); see the
    module docstring of :mod:`nngp_ppl.sampling.stats` for the criterion. Silence it with
    ``warnings.filterwarnings("ignore", category=HeavyTailWarning)``.
    """


# ---------------------------------------------------------------------------------------------
# index bookkeeping
# ---------------------------------------------------------------------------------------------
def accumulated_orders(orders, covariance: bool = True) -> tuple[int, ...]:
    """Monomial orders whose sums a run keeps: the orders, plus all pairwise sums of them.

    With ``covariance=False`` only the orders themselves (squares are kept separately).
    """
    orders = _checks.orders("orders", orders, odd=True)
    if not covariance:
        return orders
    return tuple(sorted(set(orders) | {a + b for a in orders for b in orders}))


def monomial_count(k: int, orders, covariance: bool = True) -> int:
    """Number of float64 sums a run keeps per width (what bounds memory and time)."""
    acc = accumulated_orders(orders, covariance)
    total = sum(math.comb(k + m - 1, m) for m in acc)
    if not covariance:
        total += sum(math.comb(k + n - 1, n) for n in acc)
    return total


rows_of = _tuples.rows_of


@cache
def union_index(k: int, n: int, m: int) -> np.ndarray:
    """(T_n, T_m) array: row of the multiset union s ∪ t in ``distinct_tuples(k, n + m)``.

    Row i, column j: s = ``distinct_tuples(k, n)[i]``, t = ``distinct_tuples(k, m)[j]``.
    """
    a = _tuples.distinct_tuples(k, n)
    b = _tuples.distinct_tuples(k, m)
    joined = np.concatenate(
        [np.broadcast_to(a[:, None, :], (len(a), len(b), n)),
         np.broadcast_to(b[None, :, :], (len(a), len(b), m))],
        axis=-1,
    )
    out = rows_of(k, np.sort(joined, axis=-1))
    out.setflags(write=False)
    return out


@cache
def square_index(k: int, n: int) -> np.ndarray:
    """Row of t ∪ t in ``distinct_tuples(k, 2n)`` for each t in ``distinct_tuples(k, n)``."""
    rows = _tuples.distinct_tuples(k, n)
    out = rows_of(k, np.sort(np.concatenate([rows, rows], axis=1), axis=1))
    out.setflags(write=False)
    return out


def observable_rows(k: int, orders) -> list[tuple[int, tuple[int, ...]]]:
    """The observables of a covariance matrix, in row order: ``(order, tuple)`` pairs.

    Orders ascending, tuples in :func:`~nngp_ppl.tuples.distinct_tuples` order within each
    order; the layout of :meth:`CorrelatorStats.covariance` and
    :meth:`CorrelatorStats.mean_vector`.
    """
    out = []
    for n in orders:
        out.extend((n, tuple(int(i) for i in row)) for row in _tuples.distinct_tuples(k, n))
    return out


def normalised_deviation(values, reference) -> float:
    r"""The paper's :math:`m_n`: mean over tuples of :math:`|G - G_{ref}| / |G_{ref}|`.

    physics.md §3 (with :math:`G_{ref} = G_{GP}`); the absolute value in the denominator
    keeps the measure positive where a kernel with :math:`\sigma_b = 0` makes
    :math:`G_{GP} < 0`. Pass the standard error as ``values - reference`` to get the
    statistical background: :math:`\langle \delta G / |G_{ref}| \rangle`.
    """
    values = np.asarray(values, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    return float(np.mean(np.abs(values - reference) / np.abs(reference)))


def _normalise_ranges(ranges) -> tuple[tuple[int, int], ...]:
    """Sorted, coalesced half-open [start, stop) ranges; overlapping ranges are an error."""
    spans = sorted((int(a), int(b)) for a, b in ranges)
    out: list[list[int]] = []
    for a, b in spans:
        if not 0 <= a < b:
            raise NNGPInputError(f"network index ranges must be 0 <= start < stop, got [{a}, {b})")
        if out and a < out[-1][1]:
            raise NNGPInputError(
                f"network index ranges overlap ([{out[-1][0]}, {out[-1][1]}) and [{a}, {b})): "
                "those networks would be counted twice"
            )
        if out and a == out[-1][1]:
            out[-1][1] = b
        else:
            out.append([a, b])
    return tuple((a, b) for a, b in out)


class ConnectedCorrelator(NamedTuple):
    """A sampled connected n-point function (joint cumulant) with propagated errors.

    ``values``, ``stderr``: (T_n,) on :func:`~nngp_ppl.tuples.distinct_tuples` ``(k, n)``;
    ``covariance``: (T_n, T_n); ``orders``: the moment orders it was built from (orders
    taken as zero are not among them: ``assumed_zero``).
    """

    order: int
    values: np.ndarray
    stderr: np.ndarray
    covariance: np.ndarray
    orders: tuple[int, ...]
    assumed_zero: tuple[int, ...]


@cache
def _partition_terms(k: int, n: int, present: tuple[int, ...]):
    """Per set partition of n points whose block sizes are all in ``present``: its
    coefficient (-1)^(r-1) (r-1)! and, per block, (block size, (T_n,) rows of the block's
    sub-multiset of each n-tuple in ``distinct_tuples(k, size)``)."""
    rows = _tuples.distinct_tuples(k, n)
    out = []
    for part in _tuples.set_partitions(n):
        if any(len(b) not in present for b in part):
            continue
        r = len(part)
        blocks = tuple((len(b), _tuples.rows_of(k, np.sort(rows[:, list(b)], axis=1)))
                       for b in part)
        out.append((math.factorial(r - 1) * (-1.0) ** (r - 1), blocks))
    return tuple(out)


def cumulants_with_jacobian(moments: dict, k: int, n: int):
    r"""Joint cumulants :math:`\kappa_n` from moments, and their Jacobian.

    .. math:: \kappa_n(t) = \sum_\pi (-1)^{|\pi|-1} (|\pi|-1)! \prod_{B\in\pi} G_{t_B},
        \qquad \frac{\partial \kappa_n(t)}{\partial G_s} = \sum_\pi (-1)^{|\pi|-1}
        (|\pi|-1)! \sum_{B\in\pi:\, t_B = s} \prod_{B'\ne B} G_{t_{B'}}

    over the set partitions π of the n positions of the tuple t (Leonov & Shiryaev;
    physics.md §4); :math:`t_B` is the sub-multiset of t on block B. ``moments``:
    {order: (T_order,)} on distinct tuples; orders absent are zero (partitions with such
    a block drop out). Returns (κ (T_n,), J (T_n, Σ_m T_m)) with the columns of J in the
    order of ``sorted(moments)`` (:func:`observable_rows`).
    """
    present = tuple(sorted(moments))
    size = {m: len(_tuples.distinct_tuples(k, m)) for m in present}
    offset = dict(zip(present, np.cumsum([0] + [size[m] for m in present]).tolist(),
                      strict=False))
    T = len(_tuples.distinct_tuples(k, n))
    kappa = np.zeros(T)
    jac = np.zeros((T, sum(size.values())))
    idx = np.arange(T)
    for coeff, blocks in _partition_terms(k, n, present):
        vals = [np.asarray(moments[m], np.float64)[r] for m, r in blocks]
        kappa += coeff * np.prod(vals, axis=0)
        for j, (m, r) in enumerate(blocks):
            others = np.prod([v for i, v in enumerate(vals) if i != j], axis=0) \
                if len(vals) > 1 else np.ones(T)
            np.add.at(jac, (idx, offset[m] + r), coeff * others)
    return kappa, jac


@cache
def _removed_rows(k: int, m: int, a: int, d: int):
    """(rows of ``distinct_tuples(k, m)`` holding input ``a`` at least ``d`` times, their
    multiplicities of a, the row of each with d copies of a removed in
    ``distinct_tuples(k, m - d)``)."""
    counts = _tuples.index_counts(k, m).astype(np.int64)
    rows = np.flatnonzero(counts[:, a] >= d)
    c = counts[rows].copy()
    c[:, a] -= d
    cum = np.cumsum(c, axis=1)
    kept = (cum[:, :, None] <= np.arange(m - d)[None, None, :]).sum(axis=1)
    out = (rows, counts[rows, a], rows_of(k, kept))
    for arr in out:
        arr.setflags(write=False)
    return out


def unshifted_sums(sums: dict, count: int, shift, k: int) -> dict[int, np.ndarray]:
    r"""Raw sums :math:`S_t = \sum_j \prod_{a\in t} f_j(x_a)` of every order in ``sums``
    from the sums of the shifted products :math:`\prod_{a\in t}(f_j(x_a) - r_a)` (module
    docstring, "Shifted sums"): the binomial expansion one input at a time, in float64.
    ``sums``: {order: (T_order,)} for every order 1..max; ``count``: the number of networks
    (the order-0 sum); ``shift``: r, (k,)."""
    top = max(sums)
    S = {0: np.array([float(count)])}
    S.update({m: np.asarray(sums[m], np.float64) for m in range(1, top + 1)})
    for a, r in enumerate(np.asarray(shift, np.float64)):
        if r == 0.0:
            continue
        new = {}
        for m in range(1, top + 1):
            out = S[m].copy()
            for d in range(1, m + 1):
                rows, c, target = _removed_rows(k, m, a, d)
                if not len(rows):
                    break
                coeff = np.array([math.comb(int(v), d) for v in c], np.float64)
                out[rows] += coeff * r**d * S[m - d][target]
            new[m] = out
        S.update(new)
    return {m: S[m] for m in sums}


# ---------------------------------------------------------------------------------------------
# the statistics object
# ---------------------------------------------------------------------------------------------
class CorrelatorStats:
    r"""Float64 monomial sums of one ensemble on fixed inputs, per width (module docstring).

    Build it with :func:`nngp_ppl.sample_correlators`, :meth:`merge` or :meth:`from_netcdf`;
    the constructor is for code that produces sums itself (shards, workers).

    Parameters
    ----------
    net : Ensemble
        The ensemble the networks were drawn from.
    X : array (k, d_in)
        The inputs :math:`x_1..x_k`.
    orders : tuple of ints in 1..6
        The correlator orders measured (odd ones: the 1-pt function and odd correlators).
    seed : int
        The seed the network keys derive from (:func:`nngp_ppl.ensembles.core.network_keys`).
    moments : {width: {order: (T_order,) float64}}
        Sums :math:`S_t` for every order in :func:`accumulated_orders` ``(orders,
        covariance)``, on ``distinct_tuples(k, order)``.
    ranges : {width: [(start, stop), ...]}
        Network index ranges drawn at each width (half-open, disjoint); n_nets is their
        total length.
    squares : {width: {order: (T_order,) float64}}, only with ``covariance=False``
        Sums of squares :math:`\sum_j (\prod_t f_j)^2` per order.
    covariance : bool
        Whether the pairwise-sum orders were accumulated (full estimator covariance).
    tails : {width: {order: (2, T_order) float64}}, optional
        Tail sums :math:`\sum_j (\prod_t f_j)^p` for p = 3, 4 (rows), per measured order;
        they feed :meth:`effective_networks` and :func:`check_tails`.
    shift : {width: (k,) float64}, optional
        The reference r the summed products were shifted by (module docstring, "Shifted
        sums"): ``moments`` and ``tails`` are then sums of :math:`\prod_t (f - r)`. Absent
        or zero: the plain sums. Non-zero needs ``covariance`` and orders 1..max(orders).
    """

    def __init__(self, net, X, orders, seed, moments, ranges, *, squares=None,
                 covariance: bool = True, tails=None, shift=None):
        if not isinstance(net, Ensemble):
            raise NNGPInputError(
                f"net must be an ensemble (an nngp_ppl.Ensemble such as ErfNet, "
                f"ActivationNet, MLP), got {type(net).__name__}"
            )
        self._net = net
        X = _checks.inputs("X", X, net.d_in).copy()
        X.setflags(write=False)
        self._X = X
        self._orders = _checks.orders("orders", orders, odd=True)
        self._seed = _checks.seed("seed", seed)
        self._covariance = bool(covariance)
        self._acc = accumulated_orders(self._orders, self._covariance)
        k = len(X)
        widths = sorted(_checks.positive_ints("widths", list(moments)))
        if set(ranges) != set(widths):
            raise NNGPInputError(
                f"ranges must list the network index ranges of every width in moments "
                f"({widths}), got widths {sorted(ranges)}"
            )
        if self._covariance != (squares is None):
            raise NNGPInputError(
                "squares must be given exactly when covariance=False (a covariance run "
                "derives them from the order-2n sums)"
            )
        self._widths = tuple(widths)
        self._ranges = {w: _normalise_ranges(ranges[w]) for w in widths}
        empty = [w for w in widths if not self._ranges[w]]
        if empty:
            raise NNGPInputError(
                f"ranges must give every width at least one network, got none at width(s) "
                f"{empty}: statistics of zero networks are 0/0"
            )
        self._moments = {w: self._check_sums("moments", moments[w], self._acc, k) for w in widths}
        self._squares = (
            None if squares is None
            else {w: self._check_sums("squares", squares[w], self._orders, k) for w in widths}
        )
        self._tails = None if tails is None else {
            w: self._check_sums("tails", tails[w], self._orders, k, rows=len(TAIL_POWERS))
            for w in widths
        }
        self._shift = self._check_shift(shift, widths, k)
        self._raw: dict[int, dict[int, np.ndarray]] = {}

    def _check_shift(self, shift, widths, k):
        """{width: (k,) read-only float64} of the non-zero shifts (module docstring)."""
        if shift is None:
            return {}
        if set(shift) - set(widths):
            raise NNGPInputError(f"shift must be given per sampled width ({widths}), got "
                                 f"widths {sorted(shift)}")
        out = {}
        for w in widths:
            r = np.array(shift.get(w, np.zeros(k)), dtype=np.float64)
            if r.shape != (k,) or not np.all(np.isfinite(r)):
                raise NNGPInputError(f"shift[{w}] must hold {k} finite numbers (one per "
                                     f"input), got {r!r}")
            if np.any(r != 0.0):
                r.setflags(write=False)
                out[w] = r
        if out and (not self._covariance
                    or self._orders != tuple(range(1, max(self._orders) + 1))):
            raise NNGPInputError(
                "shift: shifted sums can be undone only with the sums of every order 1..max "
                f"and the covariance orders (measured orders {self._orders}, covariance="
                f"{self._covariance})")
        return out

    @staticmethod
    def _check_sums(name, sums, orders, k, rows=None):
        out = {}
        for m in orders:
            if m not in sums:
                raise NNGPInputError(
                    f"{name} must hold the order-{m} sums, got orders {sorted(sums)}"
                )
            arr = np.array(sums[m], dtype=np.float64)
            want = (len(_tuples.distinct_tuples(k, m)),)
            if rows is not None:
                want = (rows,) + want
            if arr.shape != want:
                raise NNGPInputError(
                    f"{name}[{m}] must have shape {want} (distinct tuples of {k} inputs), "
                    f"got {arr.shape}"
                )
            arr.setflags(write=False)
            out[m] = arr
        return out

    # --- description -----------------------------------------------------------------------
    @property
    def net(self) -> Ensemble:
        return self._net

    @property
    def X(self) -> np.ndarray:
        """The inputs, (k, d_in) float64 (read-only)."""
        return self._X

    @property
    def k(self) -> int:
        """Number of inputs."""
        return len(self._X)

    @property
    def orders(self) -> tuple[int, ...]:
        return self._orders

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def widths(self) -> tuple[int, ...]:
        """Widths with statistics, ascending."""
        return self._widths

    @property
    def has_covariance(self) -> bool:
        """Whether :meth:`covariance` is available (the run kept the pairwise-sum orders)."""
        return self._covariance

    @property
    def accumulated_orders(self) -> tuple[int, ...]:
        return self._acc

    @property
    def has_tails(self) -> bool:
        """Whether the tail sums (and so :meth:`effective_networks`) are available."""
        return self._tails is not None

    def _width(self, width) -> int:
        width = _checks.positive_int("width", width)
        if width not in self._moments:
            raise NNGPInputError(
                f"width must be one of the sampled widths {self._widths}, got {width}"
            )
        return width

    def _order(self, n) -> int:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n not in self._orders:
            raise NNGPInputError(f"n must be one of the measured orders {self._orders}, got {n!r}")
        return int(n)

    def _orders_arg(self, orders) -> tuple[int, ...]:
        if orders is None:
            return self._orders
        orders = _checks.orders("orders", orders, odd=True)
        missing = [n for n in orders if n not in self._orders]
        if missing:
            raise NNGPInputError(
                f"orders must be among the measured orders {self._orders}, got {orders}"
            )
        return orders

    def n_nets(self, width) -> int:
        """Number of networks summed at this width."""
        return sum(b - a for a, b in self._ranges[self._width(width)])

    def network_ranges(self, width) -> tuple[tuple[int, int], ...]:
        """Half-open network index ranges [start, stop) drawn at this width."""
        return self._ranges[self._width(width)]

    def _raw_sums(self, width: int) -> dict[int, np.ndarray]:
        """The raw sums of f at a checked width (rebuilt once where the sums are shifted)."""
        if width not in self._shift:
            return self._moments[width]
        if width not in self._raw:
            raw = unshifted_sums(self._moments[width], self.n_nets(width),
                                 self._shift[width], self.k)
            for arr in raw.values():
                arr.setflags(write=False)
            self._raw[width] = raw
        return self._raw[width]

    def moment_sums(self, width) -> dict[int, np.ndarray]:
        """The raw sums {order: (T_order,)} of f (read-only arrays; module docstring),
        rebuilt in float64 where the stored sums are shifted (:meth:`shift`)."""
        return dict(self._raw_sums(self._width(width)))

    def shift(self, width) -> np.ndarray:
        """The reference r (k,) the stored sums were shifted by at this width (zeros:
        unshifted; module docstring, "Shifted sums")."""
        width = self._width(width)
        return self._shift.get(width, np.zeros(self.k))

    @property
    def is_shifted(self) -> bool:
        """Whether some width's sums are shifted (:meth:`shift` not zero)."""
        return bool(self._shift)

    def shifted_moment_sums(self, width) -> dict[int, np.ndarray]:
        r"""The stored sums :math:`\sum_j \prod_{a\in t}(f_j(x_a) - r_a)`, r = :meth:`shift`
        (the raw sums of :meth:`moment_sums` where r = 0); read-only arrays."""
        return dict(self._moments[self._width(width)])

    def square_sums(self, width) -> dict[int, np.ndarray]:
        r""":math:`\sum_j (\prod_{a\in t} f_j(x_a))^2` per order, on the distinct tuples."""
        width = self._width(width)
        if self._squares is not None:
            return dict(self._squares[width])
        return self._squares_of(self._raw_sums(width))

    def _squares_of(self, sums):
        return {n: sums[2 * n][square_index(self.k, n)] for n in self._orders}

    def tail_sums(self, width) -> dict[int, np.ndarray]:
        r""":math:`\sum_j (\prod_{a\in t} f_j(x_a))^p`, p = 3, 4 (rows), per order: (2, T_n);
        of the shifted products :math:`\prod_t (f - r)` where the sums are shifted."""
        width = self._width(width)
        if self._tails is None:
            raise NNGPInputError(
                "tail sums are not available: these statistics were built without them "
                "(an older file, or a merge with such statistics)"
            )
        return dict(self._tails[width])

    # --- estimates -------------------------------------------------------------------------
    def correlator_tuples(self, n, width) -> np.ndarray:
        """Estimate of G^(n) on ``distinct_tuples(k, n)``: the mean over networks, (T_n,)."""
        n, width = self._order(n), self._width(width)
        return self._raw_sums(width)[n] / self.n_nets(width)

    def correlator(self, n, width) -> np.ndarray:
        """Estimate of G^(n) as the full symmetric (k,)*n array."""
        return _tuples.expand(self.correlator_tuples(n, width), self.k, n)

    def stderr_tuples(self, n, width) -> np.ndarray:
        r"""Standard error of :meth:`correlator_tuples`: :math:`\sqrt{c_{tt}/n}`.

        :math:`c_{tt}` is the Bessel-corrected sample variance of :math:`\prod_t f`; NaN
        with fewer than two networks. For heavy-tailed ensembles (Gauss-net at σ ≈ 1, see
        physics.md §4) this naive error understates the real spread.
        """
        n, width = self._order(n), self._width(width)
        count = self.n_nets(width)
        if count < 2:
            return np.full(len(_tuples.distinct_tuples(self.k, n)), np.nan)
        s = self._raw_sums(width)[n]
        q = self.square_sums(width)[n]
        var = np.clip((q - s * s / count) / (count - 1), 0.0, None)
        return np.sqrt(var / count)

    def stderr(self, n, width) -> np.ndarray:
        """Standard error of :meth:`correlator`, full (k,)*n array."""
        return _tuples.expand(self.stderr_tuples(n, width), self.k, n)

    def effective_networks(self, n, width) -> np.ndarray:
        r"""Networks that effectively carry the sample variance of :math:`\prod_t f`, (T_n,).

        .. math:: n_{\mathrm{eff},t} = \frac{(\sum_j d_j^2)^2}{\sum_j d_j^4} = n/\hat\kappa_t,
            \qquad d_j = \prod_{a\in t} f_j(x_a) - \hat G_t,

        from raw power sums 1..4 (central moments by the binomial expansion, float64). The
        naive standard error is uncertain by about :math:`\tfrac12 n_{\mathrm{eff}}^{-1/2}`
        (module docstring). NaN where the sample variance vanishes or n < 2. Where the
        sums are shifted (:meth:`shift`) it is that of :math:`\prod_t (f - r)`.
        """
        n, width = self._order(n), self._width(width)
        count = self.n_nets(width)
        size = len(_tuples.distinct_tuples(self.k, n))
        if count < 2:
            return np.full(size, np.nan)
        # The stored sums throughout: where they are shifted, the n_eff of prod_t (f - r).
        s1 = self._moments[width][n] / count
        s2 = (self._squares[width] if self._squares is not None
              else self._squares_of(self._moments[width]))[n] / count
        s3, s4 = self.tail_sums(width)[n] / count
        m2 = s2 - s1 * s1
        m4 = s4 - 4 * s1 * s3 + 6 * s1 * s1 * s2 - 3 * s1**4
        with np.errstate(divide="ignore", invalid="ignore"):
            # Round-off can push a tiny m4 below m2^2 (kurtosis < 1 is impossible).
            kurt = np.maximum(m4 / (m2 * m2), 1.0)
            out = count / kurt
        return np.where(m2 > 0, out, np.nan)

    def observables(self, orders=None) -> list[tuple[int, tuple[int, ...]]]:
        """``(order, tuple)`` of each row of :meth:`covariance` / :meth:`mean_vector`."""
        return observable_rows(self.k, self._orders_arg(orders))

    def mean_vector(self, width, orders=None) -> np.ndarray:
        """Concatenated :meth:`correlator_tuples` of ``orders``, aligned with :meth:`covariance`."""
        orders = self._orders_arg(orders)
        return np.concatenate([self.correlator_tuples(n, width) for n in orders])

    def covariance(self, width, orders=None) -> np.ndarray:
        r"""Covariance of the estimators :meth:`mean_vector`, a (T, T) array.

        .. math:: \mathrm{Cov}(\hat G_s, \hat G_t) = \frac{1}{n}\,
            \frac{S_{s\cup t} - S_s S_t/n}{n-1}

        (module docstring). Rows: :meth:`observables` ``(orders)``, orders ascending. Its
        diagonal is :meth:`stderr_tuples` squared. NaN with fewer than two networks.
        """
        return self._covariance_of(width, orders, shifted=False)

    def shifted_covariance(self, width, orders=None) -> np.ndarray:
        r""":meth:`covariance` of the moment estimators of the shifted outputs f - r
        (:meth:`shift`), from the stored sums: the same formula, without the cancellation
        of the raw sums where the outputs' spread is far below their mean. Equal to
        :meth:`covariance` where r = 0. A connected function's delta-method covariance
        from these and the shifted moments is that of f (module docstring)."""
        return self._covariance_of(width, orders, shifted=True)

    def _covariance_of(self, width, orders, shifted: bool) -> np.ndarray:
        if not self._covariance:
            raise NNGPInputError(
                "covariance is not available: this run was sampled with covariance=False "
                "(only standard errors); sample again with covariance=True"
            )
        orders = self._orders_arg(orders)
        width = self._width(width)
        count = self.n_nets(width)
        k = self.k
        sums = self._moments[width] if shifted else self._raw_sums(width)
        blocks = []
        for a in orders:
            row = []
            for b in orders:
                cross = sums[a + b][union_index(k, a, b)]
                row.append(cross - np.outer(sums[a], sums[b]) / count)
            blocks.append(row)
        c = np.block(blocks)
        if count < 2:
            return np.full_like(c, np.nan)
        return c / ((count - 1) * count)

    def connected(self, n, width) -> ConnectedCorrelator:
        r"""The sampled connected n-point function (joint cumulant), with errors.

        .. math:: \hat\kappa_n = \kappa_n(\hat G_1, .., \hat G_n),\qquad
            \mathrm{Cov}(\hat\kappa_n) \approx J\,\Sigma\,J^T

        (delta method): :math:`\kappa_n` the set-partition polynomial of the moments
        (:func:`cumulants_with_jacobian`), J its Jacobian at the estimates and
        :math:`\Sigma` :meth:`covariance` of the moment estimates it uses. The plug-in
        estimate carries an O(1/n_nets) bias (the k-statistics would remove it), far below
        its O(n_nets^-1/2) standard error at the sample sizes where the delta method holds.
        Every order 1..n must have been measured, except that odd orders not measured are
        taken as exactly zero (the f -> -f symmetry of zero-mean ensembles, which
        :func:`nngp_ppl.inference.symmetry.parity_test` checks from data) and listed in
        ``assumed_zero``. Needs a run with ``covariance=True``.
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= 6:
            raise NNGPInputError(f"n must be a connected-correlator order in 1..6, got {n!r}")
        n, width = int(n), self._width(width)
        missing = [m for m in range(1, n + 1) if m not in self._orders]
        even_missing = [m for m in missing if m % 2 == 0]
        if even_missing:
            raise NNGPInputError(
                f"n: the connected {n}-point function needs the moments of every order "
                f"1..{n} (odd ones may be left out and taken as zero), but orders "
                f"{even_missing} were not measured (measured: {self._orders})")
        used = tuple(m for m in range(1, n + 1) if m in self._orders)
        count = self.n_nets(width)
        # From the stored (shifted) sums: kappa_n >= 2 and its delta-method covariance are
        # invariant under f -> f - r, and there nothing cancels (module docstring).
        moments = {m: self._moments[width][m] / count for m in used}
        kappa, jac = cumulants_with_jacobian(moments, self.k, n)
        if n == 1:
            kappa = kappa + self.shift(width)
        cov = jac @ self.shifted_covariance(width, used) @ jac.T
        return ConnectedCorrelator(n, kappa, np.sqrt(np.clip(np.diag(cov), 0.0, None)), cov,
                                   used, tuple(missing))

    # --- combining -------------------------------------------------------------------------
    def merge(self, other: CorrelatorStats) -> CorrelatorStats:
        """Statistics of both runs together: sums add, widths unite.

        Both runs must share the ensemble, inputs, orders, seed and covariance setting; at
        a width both sampled, their network index ranges must be disjoint (the same seed
        and index draw the same network, which must not be counted twice).
        """
        if not isinstance(other, CorrelatorStats):
            raise NNGPInputError(f"other must be a CorrelatorStats, got {type(other).__name__}")
        for what, mine, theirs, same in (
            ("ensemble", self._net, other._net, self._net == other._net),
            ("inputs X", self._X, other._X,
             self._X.shape == other._X.shape and np.array_equal(self._X, other._X)),
            ("orders", self._orders, other._orders, self._orders == other._orders),
            ("seed", self._seed, other._seed, self._seed == other._seed),
            ("covariance setting", self._covariance, other._covariance,
             self._covariance == other._covariance),
            ("shift", self._shift, other._shift,
             all(np.array_equal(self.shift(w), other.shift(w))
                 for w in set(self._widths) & set(other._widths))),
        ):
            if not same:
                mine_s = repr(mine.tolist()) if isinstance(mine, np.ndarray) else repr(mine)
                theirs_s = repr(theirs.tolist()) if isinstance(theirs, np.ndarray) else repr(theirs)
                raise NNGPInputError(
                    f"other: cannot merge statistics with different {what} ({mine_s} vs {theirs_s})"
                )
        moments, ranges = {}, {}
        squares = None if self._squares is None else {}
        # Tail sums survive a merge only if both sides have them.
        tails = {} if self._tails is not None and other._tails is not None else None
        for w in sorted(set(self._widths) | set(other._widths)):
            parts = [s for s in (self, other) if w in s._moments]
            try:
                ranges[w] = _normalise_ranges([r for s in parts for r in s._ranges[w]])
            except NNGPInputError as err:
                raise NNGPInputError(f"other: at width {w}, {err}") from None
            moments[w] = {m: sum(s._moments[w][m] for s in parts) for m in self._acc}
            if squares is not None:
                squares[w] = {n: sum(s._squares[w][n] for s in parts) for n in self._orders}
            if tails is not None:
                tails[w] = {n: sum(s._tails[w][n] for s in parts) for n in self._orders}
        shift = {**other._shift, **self._shift}
        return CorrelatorStats(self._net, self._X, self._orders, self._seed, moments, ranges,
                               squares=squares, covariance=self._covariance, tails=tails,
                               shift=shift or None)

    # --- files -----------------------------------------------------------------------------
    def to_dataset(self):
        """The statistics as an :class:`xarray.Dataset` with provenance attributes."""

        k = self.k
        widths = np.asarray(self._widths, dtype=np.int64)
        data = {
            "X": (("input", "input_dim"), self._X,
                  {"long_name": "network inputs x_1..x_k"}),
            "n_nets": (("width",), np.asarray([self.n_nets(w) for w in widths], np.int64),
                       {"long_name": "networks summed per width"}),
        }
        for m in self._acc:
            data[f"moment_sum_{m}"] = (
                ("width", f"tuple_{m}"),
                np.stack([self._moments[w][m] for w in widths]),
                {"long_name": f"sum over networks of prod_(a in t) f(x_a), |t| = {m}"},
            )
        if self._squares is not None:
            for n in self._orders:
                data[f"square_sum_{n}"] = (
                    ("width", f"tuple_{n}"),
                    np.stack([self._squares[w][n] for w in widths]),
                    {"long_name": f"sum over networks of (prod_(a in t) f(x_a))^2, |t| = {n}"},
                )
        if self._tails is not None:
            for n in self._orders:
                data[f"tail_sum_{n}"] = (
                    ("width", "tail_power", f"tuple_{n}"),
                    np.stack([self._tails[w][n] for w in widths]),
                    {"long_name": f"sum over networks of (prod_(a in t) f(x_a))^p, |t| = {n}"},
                )
        if self._shift:
            data["moment_shift"] = (
                ("width", "input"), np.stack([self.shift(w) for w in widths]),
                {"long_name": "reference r(x_a) the summed products were shifted by: "
                              "moment_sum_m = sum over networks of prod_(a in t) "
                              "(f(x_a) - r(x_a)) (tail sums likewise)"})
        for n in self._orders:
            data[f"tuples_{n}"] = ((f"tuple_{n}", f"position_{n}"),
                                   np.asarray(_tuples.distinct_tuples(k, n)),
                                   {"long_name": f"input indices of the order-{n} tuples"})
        attrs = {
            "nngp_ppl_format": FILE_FORMAT,
            "nngp_ppl_format_version": FILE_VERSION,
            "nngp_ppl_version": __version__,
            "ensemble": json.dumps(self._net.to_dict()),
            "inputs": json.dumps(self._X.tolist()),
            "orders": np.asarray(self._orders, np.int64),
            "accumulated_orders": np.asarray(self._acc, np.int64),
            "seed": np.int64(self._seed),
            "covariance": int(self._covariance),
            "n_nets_per_width": json.dumps({str(w): self.n_nets(w) for w in widths}),
            "network_ranges": json.dumps({str(w): [list(r) for r in self._ranges[w]]
                                          for w in widths}),
            "rng": "network j at width N: key fold_in(fold_in(PRNGKey(seed), N), j) "
                   "(nngp_ppl.ensembles.core.network_keys)",
            "conventions": "tuples are multisets i1 <= ... <= in in lexicographic order "
                           "(nngp_ppl.tuples.distinct_tuples); correlator = moment_sum / n_nets",
        }
        coords = {"width": ("width", widths)}
        if self._tails is not None:
            coords["tail_power"] = ("tail_power", np.asarray(TAIL_POWERS, np.int64))
        ds = xr.Dataset(data, coords=coords, attrs=attrs)
        ds.attrs["checksum"] = content_checksum(ds)
        return ds

    def to_netcdf(self, path) -> Path:
        """Write the statistics to a netCDF file, atomically (complete file or none)."""
        path = output_file("path", _file_path("path", path))
        data = netcdf_bytes(self.to_dataset())  # in memory: a full disk is one OSError
        with atomic_path(path) as tmp:
            write_bytes(tmp, data, target=path)
        return path

    @classmethod
    def from_netcdf(cls, path) -> CorrelatorStats:
        """Read statistics written by :meth:`to_netcdf`."""
        path = _file_path("path", path)
        ds = load_netcdf(path, name="path", what="netCDF file")
        kind = ds.attrs.get("nngp_ppl_format")
        if kind != FILE_FORMAT:
            found = (f"it is an nngp_ppl file of format {kind!r}" if kind else
                     f"no nngp_ppl_format = {FILE_FORMAT!r} attribute")
            raise NNGPInputError(
                f"path: {path} is not an nngp_ppl correlator-statistics file ({found})"
            )
        version = format_version(ds.attrs)
        if version != FILE_VERSION:
            raise version_error("path", path, version, FILE_VERSION, "run file")
        # Files written before the one-element rule of _io.canonical_attr hashed a
        # single order as the list [n]; they are still accepted.
        verify_checksum(ds, name="path", path=path, what="run file",
                        keep_lists=_LIST_ATTRS)
        try:
            return cls._from_dataset(ds)
        except (KeyError, ValueError, TypeError) as err:
            raise NNGPInputError(f"path: {path} is damaged or incomplete ({err})") from None
        except NNGPInputError as err:  # e.g. an ensemble the session was not told to trust
            raise NNGPInputError(f"path: {path}: {err}") from None

    @classmethod
    def _from_dataset(cls, ds) -> CorrelatorStats:
        a = ds.attrs
        net = ensemble_from_dict(json_attr(a["ensemble"], "ensemble"))
        orders = tuple(int(v) for v in np.atleast_1d(a["orders"]))
        covariance = bool(int(a["covariance"]))
        widths = [int(w) for w in ds["width"].values]
        ranges = {int(w): [tuple(r) for r in v] for w, v in json_attr(a["network_ranges"],
                                                                   "network_ranges").items()}
        acc = accumulated_orders(orders, covariance)
        moments = {w: {m: ds[f"moment_sum_{m}"].values[i] for m in acc}
                   for i, w in enumerate(widths)}
        squares = None
        if not covariance:
            squares = {w: {n: ds[f"square_sum_{n}"].values[i] for n in orders}
                       for i, w in enumerate(widths)}
        tails = None
        if all(f"tail_sum_{n}" in ds for n in orders):
            tails = {w: {n: ds[f"tail_sum_{n}"].values[i] for n in orders}
                     for i, w in enumerate(widths)}
        shift = None
        if "moment_shift" in ds:
            shift = {w: ds["moment_shift"].values[i] for i, w in enumerate(widths)}
        stats = cls(net, ds["X"].values, orders, int(a["seed"]), moments, ranges,
                    squares=squares, covariance=covariance, tails=tails, shift=shift)
        stored = [int(v) for v in ds["n_nets"].values]
        if stored != [stats.n_nets(w) for w in widths]:
            raise ValueError("n_nets does not match the recorded network ranges")
        return stats

    def __repr__(self) -> str:
        counts = ", ".join(f"N={w}: {self.n_nets(w)}" for w in self._widths)
        return (f"CorrelatorStats({type(self._net).__name__}, k={self.k}, orders={self._orders}, "
                f"seed={self._seed}, {counts})")


def check_tails(stats: CorrelatorStats, *, min_effective: float = MIN_EFFECTIVE_NETWORKS,
                warn: bool = True, stacklevel: int = 2) -> dict[tuple[int, int], float]:
    """Widths and orders whose naive standard errors are unreliable (module docstring).

    Returns ``{(width, order): n_eff}`` with the smallest :meth:`CorrelatorStats.effective_networks`
    over the tuples of that order, for every (width, order) below ``min_effective``, and
    with ``warn`` emits one :class:`HeavyTailWarning` listing them. Statistics without tail
    sums return ``{}``.
    """
    if not isinstance(stats, CorrelatorStats):
        raise NNGPInputError(f"stats must be a CorrelatorStats, got {type(stats).__name__}")
    min_effective = _checks.finite_float("min_effective", min_effective, minimum=1.0)
    if not stats.has_tails:
        return {}
    bad = {}
    for w in stats.widths:
        for n in stats.orders:
            neff = stats.effective_networks(n, w)
            if np.all(np.isnan(neff)):
                continue
            worst = float(np.nanmin(neff))
            if worst < min_effective:
                bad[w, n] = worst
    if bad and warn:
        where = "; ".join(f"N={w} G{n}: {v:.1f}" for (w, n), v in sorted(bad.items()))
        eps = max(0.5 / math.sqrt(v) for v in bad.values())
        warnings.warn(
            f"naive standard errors are unreliable: the sample variance of the worst tuple "
            f"rests on fewer than {min_effective:g} effective networks ({where}), so the error "
            f"bars themselves are uncertain by up to {eps:.0%} and typically too small "
            "(heavy-tailed products, physics.md §4, or too few networks for this order); "
            "sample more networks or use tamer sigma_w, sigma_b, and prefer comparisons "
            "with exact values to z-scores here",
            HeavyTailWarning, stacklevel=stacklevel,
        )
    return bad


def _file_path(name: str, path) -> Path:
    if not isinstance(path, (str, Path)) or str(path) == "":
        raise NNGPInputError(f"{name} must be a file path, got {path!r}")
    return Path(path)
