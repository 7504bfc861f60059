r"""Correlator statistics of a network ensemble: mergeable float64 sums and what follows.

The sampler (:mod:`nngp_ppl.sampling`) draws networks :math:`f_j`, :math:`j = 1..n`, and
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
"""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path

import numpy as np

from . import _checks
from . import tuples as _tuples
from ._checks import NNGPInputError
from ._io import atomic_path
from .ensembles import SingleLayerNet, ensemble_from_dict

#: Value of the ``nngp_ppl_format`` attribute that marks a correlator-statistics file.
FILE_FORMAT = "nngp_ppl.CorrelatorStats"
#: Layout version of that file; bump when the layout changes incompatibly.
FILE_VERSION = 1

#: Refuse runs whose monomial bookkeeping would exceed this many sums per width
#: (k = 6 at orders 2, 4, 6 with covariance needs 11 087).
MAX_MONOMIALS = 200_000


# ---------------------------------------------------------------------------------------------
# index bookkeeping
# ---------------------------------------------------------------------------------------------
def accumulated_orders(orders, covariance: bool = True) -> tuple[int, ...]:
    """Monomial orders whose sums a run keeps: the orders, plus all pairwise sums of them.

    With ``covariance=False`` only the orders themselves (squares are kept separately).
    """
    orders = _checks.orders("orders", orders)
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


def _codes(rows: np.ndarray, k: int) -> np.ndarray:
    """Injective integer code of sorted rows (base-k digits), increasing in lexicographic order."""
    weights = k ** np.arange(rows.shape[-1] - 1, -1, -1, dtype=np.int64)
    return rows @ weights


def rows_of(k: int, sorted_rows: np.ndarray) -> np.ndarray:
    """Row numbers of already sorted multisets in :func:`~nngp_ppl.tuples.distinct_tuples`."""
    m = sorted_rows.shape[-1]
    table = _codes(_tuples.distinct_tuples(k, m), k)
    return np.searchsorted(table, _codes(sorted_rows, k))


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


# ---------------------------------------------------------------------------------------------
# the statistics object
# ---------------------------------------------------------------------------------------------
class CorrelatorStats:
    r"""Float64 monomial sums of one ensemble on fixed inputs, per width (module docstring).

    Build it with :func:`nngp_ppl.sample_correlators`, :meth:`merge` or :meth:`from_netcdf`;
    the constructor is for code that produces sums itself (shards, workers).

    Parameters
    ----------
    net : SingleLayerNet
        The ensemble the networks were drawn from.
    X : array (k, d_in)
        The inputs :math:`x_1..x_k`.
    orders : tuple of even ints <= 6
        The correlator orders measured.
    seed : int
        The seed the network keys derive from (:func:`nngp_ppl.ensembles.network_keys`).
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
    """

    def __init__(self, net, X, orders, seed, moments, ranges, *, squares=None,
                 covariance: bool = True):
        if not isinstance(net, SingleLayerNet):
            raise NNGPInputError(
                f"net must be an ensemble (ErfNet, ReLUNet, GaussNet), got {type(net).__name__}"
            )
        self._net = net
        X = _checks.inputs("X", X, net.d_in).copy()
        X.setflags(write=False)
        self._X = X
        self._orders = _checks.orders("orders", orders)
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
        self._moments = {w: self._check_sums("moments", moments[w], self._acc, k) for w in widths}
        self._squares = (
            None if squares is None
            else {w: self._check_sums("squares", squares[w], self._orders, k) for w in widths}
        )

    @staticmethod
    def _check_sums(name, sums, orders, k):
        out = {}
        for m in orders:
            if m not in sums:
                raise NNGPInputError(
                    f"{name} must hold the order-{m} sums, got orders {sorted(sums)}"
                )
            arr = np.array(sums[m], dtype=np.float64)
            want = (len(_tuples.distinct_tuples(k, m)),)
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
    def net(self) -> SingleLayerNet:
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
        orders = _checks.orders("orders", orders)
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

    def moment_sums(self, width) -> dict[int, np.ndarray]:
        """The raw sums {order: (T_order,)} (read-only arrays); see the module docstring."""
        return dict(self._moments[self._width(width)])

    def square_sums(self, width) -> dict[int, np.ndarray]:
        r""":math:`\sum_j (\prod_{a\in t} f_j(x_a))^2` per order, on the distinct tuples."""
        width = self._width(width)
        if self._squares is not None:
            return dict(self._squares[width])
        k = self.k
        return {n: self._moments[width][2 * n][square_index(k, n)] for n in self._orders}

    # --- estimates -------------------------------------------------------------------------
    def correlator_tuples(self, n, width) -> np.ndarray:
        """Estimate of G^(n) on ``distinct_tuples(k, n)``: the mean over networks, (T_n,)."""
        n, width = self._order(n), self._width(width)
        return self._moments[width][n] / self.n_nets(width)

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
        s = self._moments[width][n]
        q = self.square_sums(width)[n]
        var = np.clip((q - s * s / count) / (count - 1), 0.0, None)
        return np.sqrt(var / count)

    def stderr(self, n, width) -> np.ndarray:
        """Standard error of :meth:`correlator`, full (k,)*n array."""
        return _tuples.expand(self.stderr_tuples(n, width), self.k, n)

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
        if not self._covariance:
            raise NNGPInputError(
                "covariance is not available: this run was sampled with covariance=False "
                "(only standard errors); sample again with covariance=True"
            )
        orders = self._orders_arg(orders)
        width = self._width(width)
        count = self.n_nets(width)
        k = self.k
        sums = self._moments[width]
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
        ):
            if not same:
                mine_s = repr(mine.tolist()) if isinstance(mine, np.ndarray) else repr(mine)
                theirs_s = repr(theirs.tolist()) if isinstance(theirs, np.ndarray) else repr(theirs)
                raise NNGPInputError(
                    f"other: cannot merge statistics with different {what} ({mine_s} vs {theirs_s})"
                )
        moments, ranges = {}, {}
        squares = None if self._squares is None else {}
        for w in sorted(set(self._widths) | set(other._widths)):
            parts = [s for s in (self, other) if w in s._moments]
            try:
                ranges[w] = _normalise_ranges([r for s in parts for r in s._ranges[w]])
            except NNGPInputError as err:
                raise NNGPInputError(f"other: at width {w}, {err}") from None
            moments[w] = {m: sum(s._moments[w][m] for s in parts) for m in self._acc}
            if squares is not None:
                squares[w] = {n: sum(s._squares[w][n] for s in parts) for n in self._orders}
        return CorrelatorStats(self._net, self._X, self._orders, self._seed, moments, ranges,
                               squares=squares, covariance=self._covariance)

    # --- files -----------------------------------------------------------------------------
    def to_dataset(self):
        """The statistics as an :class:`xarray.Dataset` with provenance attributes."""
        import xarray as xr

        from . import __version__

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
                   "(nngp_ppl.ensembles.network_keys)",
            "conventions": "tuples are multisets i1 <= ... <= in in lexicographic order "
                           "(nngp_ppl.tuples.distinct_tuples); correlator = moment_sum / n_nets",
        }
        return xr.Dataset(data, coords={"width": ("width", widths)}, attrs=attrs)

    def to_netcdf(self, path) -> Path:
        """Write the statistics to a netCDF file, atomically (complete file or none)."""
        path = _file_path("path", path)
        if path.is_dir():
            raise NNGPInputError(f"path must be a file name, got the directory {path}")
        ds = self.to_dataset()
        with atomic_path(path) as tmp:
            ds.to_netcdf(tmp, engine="h5netcdf")
        return path

    @classmethod
    def from_netcdf(cls, path) -> CorrelatorStats:
        """Read statistics written by :meth:`to_netcdf`."""
        import xarray as xr

        path = _file_path("path", path)
        if path.is_dir():
            raise NNGPInputError(f"path: {path} is a directory, not a netCDF file")
        if not path.is_file():
            raise NNGPInputError(f"path: no such file: {path}")
        try:
            ds = xr.load_dataset(path, engine="h5netcdf")
        except Exception as err:  # h5py/xarray raise many types for foreign or broken files
            raise NNGPInputError(
                f"path: {path} is not a readable netCDF file ({type(err).__name__}: {err})"
            ) from None
        if ds.attrs.get("nngp_ppl_format") != FILE_FORMAT:
            raise NNGPInputError(
                f"path: {path} is not an nngp_ppl correlator-statistics file "
                f"(no nngp_ppl_format = {FILE_FORMAT!r} attribute)"
            )
        version = int(ds.attrs.get("nngp_ppl_format_version", -1))
        if version != FILE_VERSION:
            raise NNGPInputError(
                f"path: {path} has file layout version {version}; this nngp_ppl reads "
                f"version {FILE_VERSION}"
            )
        try:
            return cls._from_dataset(ds)
        except (KeyError, ValueError, TypeError) as err:
            raise NNGPInputError(f"path: {path} is damaged or incomplete ({err})") from None

    @classmethod
    def _from_dataset(cls, ds) -> CorrelatorStats:
        a = ds.attrs
        net = ensemble_from_dict(json.loads(a["ensemble"]))
        orders = tuple(int(v) for v in np.atleast_1d(a["orders"]))
        covariance = bool(int(a["covariance"]))
        widths = [int(w) for w in ds["width"].values]
        ranges = {int(w): [tuple(r) for r in v] for w, v in json.loads(a["network_ranges"]).items()}
        acc = accumulated_orders(orders, covariance)
        moments = {w: {m: ds[f"moment_sum_{m}"].values[i] for m in acc}
                   for i, w in enumerate(widths)}
        squares = None
        if not covariance:
            squares = {w: {n: ds[f"square_sum_{n}"].values[i] for n in orders}
                       for i, w in enumerate(widths)}
        stats = cls(net, ds["X"].values, orders, int(a["seed"]), moments, ranges,
                    squares=squares, covariance=covariance)
        stored = [int(v) for v in ds["n_nets"].values]
        if stored != [stats.n_nets(w) for w in widths]:
            raise ValueError("n_nets does not match the recorded network ranges")
        return stats

    def __repr__(self) -> str:
        counts = ", ".join(f"N={w}: {self.n_nets(w)}" for w in self._widths)
        return (f"CorrelatorStats({type(self._net).__name__}, k={self.k}, orders={self._orders}, "
                f"seed={self._seed}, {counts})")


def _file_path(name: str, path) -> Path:
    if not isinstance(path, (str, Path)) or str(path) == "":
        raise NNGPInputError(f"{name} must be a file path, got {path!r}")
    return Path(path)
