"""Robustness: property-based tests (hypothesis), damaged files, float32 accuracy, heavy tails.

Property tests draw random inputs and hyperparameters and check laws that hold for all of
them: kernels give symmetric positive semi-definite Gram matrices, the Wick sum equals its
recursive definition (Isserlis), tuple bookkeeping round-trips, and merging statistics is
associative and order-independent. Example counts are kept small (the suite runs on a
2-core machine); failures are shrunk and reported by hypothesis with the offending example.
"""

from __future__ import annotations

import io
import itertools
import math
import os
import tempfile
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.special import erf

import nngp_ppl
from nngp_ppl import CorrelatorStats, NNGPInputError, _io
from nngp_ppl._memo import BytesLRU
from nngp_ppl.ensembles.core import network_keys
from nngp_ppl.sampling.sampler import network_sums
from nngp_ppl.sampling.stats import HeavyTailWarning, accumulated_orders, check_tails
from nngp_ppl.theory.wick import gp_correlator, gp_correlator_tuples
from nngp_ppl.tuples import compress, distinct_tuples, expand, full_index, tuple_row

FEW = settings(max_examples=30, deadline=None)
real = st.floats(-3.0, 3.0, allow_nan=False, allow_infinity=False)
scale = st.floats(0.0, 3.0, allow_nan=False, allow_infinity=False)


# ---------------------------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------------------------
@st.composite
def ensembles_and_inputs(draw):
    cls = draw(st.sampled_from([nngp_ppl.ErfNet, nngp_ppl.ReLUNet, nngp_ppl.GaussNet]))
    d_in = draw(st.integers(1, 3))
    k = draw(st.integers(1, 7))
    X = draw(arrays(np.float64, (k, d_in), elements=real))
    if draw(st.booleans()) and k > 1:
        X[-1] = X[0]  # coincident inputs: a singular Gram matrix, PSD only to round-off
    sigma_w = draw(scale)
    # sigma_w = sigma_b = 0 is refused (a zero kernel: every network the same constant)
    sigma_b = draw(scale.filter(lambda s: s > 0) if sigma_w == 0 else scale)
    return cls(d_in=d_in, sigma_w=sigma_w, sigma_b=sigma_b), X


@FEW
@given(ensembles_and_inputs())
def test_kernel_gram_matrices_are_symmetric_and_positive_semidefinite(case):
    net, X = case
    K = np.asarray(net.kernel(X))
    assert K.shape == (len(X), len(X)) and np.all(np.isfinite(K))
    top = max(np.abs(K).max(), 1e-300)
    np.testing.assert_allclose(K, K.T, rtol=0, atol=1e-13 * top)
    eig = np.linalg.eigvalsh((K + K.T) / 2)
    # Round-off in the eigenvalues of a k x k matrix is ~ k eps |K|: allow 1e-12 |K|.
    assert eig.min() >= -1e-12 * max(eig.max(), top), (eig, net)
    # K(x, x) is the variance of f(x): non-negative, and the Cauchy-Schwarz bound holds.
    d = np.diag(K)
    assert np.all(d >= 0)
    assert np.all(K**2 <= np.outer(d, d) * (1 + 1e-12) + 1e-12 * top**2)


# ---------------------------------------------------------------------------------------------
# Wick sums
# ---------------------------------------------------------------------------------------------
def wick_recursive(K, idx):
    """Isserlis by recursion: E[x_i1 ... x_in] = sum_j K[i1, ij] E[rest without i1, ij]."""
    if not idx:
        return 1.0
    first, rest = idx[0], idx[1:]
    return sum(K[first, rest[j]] * wick_recursive(K, rest[:j] + rest[j + 1:])
               for j in range(len(rest)))


@st.composite
def symmetric_matrices(draw):
    k = draw(st.integers(1, 4))
    A = draw(arrays(np.float64, (k, k), elements=real))
    return (A + A.T) / 2


@FEW
@given(symmetric_matrices(), st.sampled_from([2, 4, 6]), st.randoms(use_true_random=False))
def test_wick_sum_equals_its_recursive_definition_and_is_symmetric(K, n, rnd):
    k = len(K)
    G = gp_correlator(K, n)
    assert G.shape == (k,) * n
    for _ in range(5):
        idx = tuple(rnd.randrange(k) for _ in range(n))
        expect = wick_recursive(K, idx)
        assert math.isclose(G[idx], expect, rel_tol=1e-12, abs_tol=1e-12 * (1 + abs(K).max())**n)
        perm = list(idx)
        rnd.shuffle(perm)
        assert G[tuple(perm)] == G[idx]
    axes = list(range(n))
    rnd.shuffle(axes)
    assert np.array_equal(np.transpose(G, axes), G)
    # (n-1)!! pairings: with K = all ones every term is 1.
    ones = gp_correlator_tuples(np.ones((k, k)), n)
    assert np.all(ones == math.prod(range(n - 1, 0, -2)))


# ---------------------------------------------------------------------------------------------
# tuple bookkeeping
# ---------------------------------------------------------------------------------------------
@FEW
@given(st.integers(1, 5), st.integers(1, 5), st.randoms(use_true_random=False))
def test_tuple_indexing_round_trips(k, n, rnd):
    rows = distinct_tuples(k, n)
    assert len(rows) == math.comb(k + n - 1, n)
    assert np.all(np.diff(rows, axis=1) >= 0)
    values = np.array([rnd.random() for _ in range(len(rows))])
    full = expand(values, k, n)
    assert np.array_equal(compress(full, k, n), values)
    for _ in range(5):
        t = [rnd.randrange(k) for _ in range(n)]
        row = tuple_row(k, t)
        assert tuple(rows[row]) == tuple(sorted(t))
        assert full_index(k, n)[tuple(t)] == row
        rnd.shuffle(t)
        assert full[tuple(t)] == values[row]


# ---------------------------------------------------------------------------------------------
# merging statistics
# ---------------------------------------------------------------------------------------------
MERGE_NET, MERGE_X, MERGE_ORDERS = nngp_ppl.ErfNet(), np.array([[0.1], [0.7]]), (2, 4)


def piece(rng, ranges_by_width, covariance):
    """Statistics with integer-valued random sums: float64 addition of them is exact, so
    every merge order must give identical bits."""
    acc = accumulated_orders(MERGE_ORDERS, covariance)
    k = len(MERGE_X)

    def sums(orders, shape=()):
        return {m: rng.integers(-1000, 1000, size=shape + (len(distinct_tuples(k, m)),))
                .astype(float) for m in orders}

    widths = list(ranges_by_width)
    return CorrelatorStats(
        MERGE_NET, MERGE_X, MERGE_ORDERS, 0, {w: sums(acc) for w in widths}, ranges_by_width,
        squares=None if covariance else {w: sums(MERGE_ORDERS) for w in widths},
        covariance=covariance, tails={w: sums(MERGE_ORDERS, (2,)) for w in widths})


@st.composite
def disjoint_pieces(draw):
    """Three statistics over disjoint index ranges (with gaps), widths 2 and/or 5 each."""
    cuts = sorted(draw(st.lists(st.integers(0, 10_000), min_size=6, max_size=6, unique=True)))
    spans = [(cuts[2 * i], cuts[2 * i + 1]) for i in range(3)]
    widths = [draw(st.sampled_from([(2,), (5,), (2, 5)])) for _ in range(3)]
    covariance = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return [piece(rng, {w: [span] for w in ws}, covariance)
            for span, ws in zip(spans, widths, strict=True)]


def same(a, b):
    assert a.widths == b.widths
    for w in a.widths:
        assert a.network_ranges(w) == b.network_ranges(w)
        for get in (CorrelatorStats.moment_sums, CorrelatorStats.square_sums,
                    CorrelatorStats.tail_sums):
            x, y = get(a, w), get(b, w)
            assert x.keys() == y.keys() and all(np.array_equal(x[m], y[m]) for m in x)


@FEW
@given(disjoint_pieces())
def test_merge_is_associative_and_order_independent(pieces):
    a, b, c = pieces
    reference = a.merge(b).merge(c)
    same(reference, a.merge(b.merge(c)))
    for p, q, r in itertools.permutations(pieces):
        same(reference, p.merge(q).merge(r))
    # The sums are those of the pieces added per width.
    for w in reference.widths:
        parts = [s for s in pieces if w in s.widths]
        assert reference.n_nets(w) == sum(s.n_nets(w) for s in parts)
        for m, total in reference.moment_sums(w).items():
            assert np.array_equal(total, sum(s.moment_sums(w)[m] for s in parts))


@FEW
@given(disjoint_pieces(), st.integers(1, 50))
def test_overlapping_ranges_are_refused_in_every_order(pieces, overlap):
    a, b, _ = pieces
    w = a.widths[0]
    lo, hi = a.network_ranges(w)[0]
    shift = min(overlap, hi - lo)
    clash = piece(np.random.default_rng(0), {w: [(hi - shift, hi - shift + 7)]},
                  a.has_covariance)
    for x, y in [(a, clash), (clash, a), (a.merge(b), clash), (clash, b.merge(a))]:
        with pytest.raises(NNGPInputError, match="counted twice"):
            x.merge(y)


# ---------------------------------------------------------------------------------------------
# damaged and edited files
# ---------------------------------------------------------------------------------------------
def small_stats():
    rng = np.random.default_rng(3)
    return piece(rng, {2: [(0, 100)], 5: [(0, 100)]}, True)


def _bump_sum(ds):
    ds["moment_sum_4"].values[0, 1] *= 1 + 1e-15  # one ulp-scale change of one sum


def _zero_tail(ds):
    ds["tail_sum_2"].values[1, 0, 0] = 0.0


def _more_networks(ds):
    ds.attrs["network_ranges"] = '{"2": [[0, 200]], "5": [[0, 100]]}'
    ds["n_nets"].values[0] = 200


EDITS = [
    (_bump_sum, "damaged or edited"),
    (_zero_tail, "damaged or edited"),
    (lambda ds: ds.attrs.__setitem__("seed", 7), "damaged or edited"),
    (_more_networks, "damaged or edited"),
    (lambda ds: ds.attrs.pop("checksum"), "no checksum"),
]


@pytest.mark.parametrize("edit, match", EDITS)
def test_edited_files_are_detected(tmp_path, edit, match):
    good = tmp_path / "good.nc"
    small_stats().to_netcdf(good)
    same(small_stats(), CorrelatorStats.from_netcdf(good))
    ds = xr.load_dataset(good, engine="h5netcdf")
    edit(ds)
    ds.to_netcdf(tmp_path / "edited.nc", engine="h5netcdf")
    with pytest.raises(NNGPInputError, match=match):
        CorrelatorStats.from_netcdf(tmp_path / "edited.nc")


def _nodes(obj):
    return list(obj.subtree) if isinstance(obj, xr.DataTree) else [obj]


@pytest.mark.parametrize("tree", [False, True])
def test_a_file_is_parsed_once_per_content_and_read_as_written(tmp_path, tree):
    """The reader's parse cache (_io._load_bytes): what write_netcdf enters for a file is
    what a fresh parse of its bytes gives, attribute order and checksum included; every
    reader gets its own copy; a file rewritten under the same name and time stamp is
    parsed anew, and so refused when edited."""
    good = tmp_path / "good.nc"
    small_stats().to_netcdf(good)
    obj = _io.load_netcdf(good, name="path", what="file")
    if tree:
        sums = [k for k in obj.data_vars if k.startswith("moment_sum")]
        obj = xr.DataTree.from_dict({"/": obj.drop_vars(sums), "/sums": obj[sums]})
        _io.write_netcdf(obj, good, file_format="test", version=1)
    data = good.read_bytes()
    fresh = _io._load(io.BytesIO(data), tree)
    first = _io.load_netcdf(good, name="path", what="file", tree=tree)
    assert first.identical(fresh)
    assert [list(n.attrs) for n in _nodes(first)] == [list(n.attrs) for n in _nodes(fresh)]
    assert first.attrs[_io.CHECKSUM_ATTR] == fresh.attrs[_io.CHECKSUM_ATTR]
    # Each reader's own copy: editing one changes nothing another reads.
    name = next(k for k, v in _nodes(first)[-1].data_vars.items() if v.dtype.kind == "f")
    _nodes(first)[-1][name].values[...] = np.nan
    first.attrs["title"] = "edited in memory"
    assert _io.load_netcdf(good, name="path", what="file", tree=tree).identical(fresh)
    # The same file name, size and time stamps, one value one ulp up: parsed anew.
    value = _nodes(fresh)[-1][name].values.flat[0]
    assert data.count(value.tobytes()) == 1
    stamp = os.stat(good)
    good.write_bytes(data.replace(value.tobytes(), np.nextafter(value, np.inf).tobytes()))
    os.utime(good, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert os.stat(good).st_size == stamp.st_size
    with pytest.raises(NNGPInputError, match="damaged or edited"):
        _io.read_netcdf(good, name="path", what="file", tree=tree)


def test_a_file_too_large_to_keep_is_read_from_disk_and_not_kept(tmp_path, monkeypatch):
    good = tmp_path / "good.nc"
    small_stats().to_netcdf(good)
    monkeypatch.setattr(_io, "_PARSED", type(_io._PARSED)())
    monkeypatch.setattr(_io, "PARSED_CACHE_BYTES", 4 * os.stat(good).st_size - 4)
    monkeypatch.setattr(_io, "_load_bytes", lambda *_: pytest.fail("read into memory"))
    same(small_stats(), CorrelatorStats.from_netcdf(good))
    assert not _io._PARSED
    # Written by write_netcdf (the reader's bytes plus a format): too large to keep as well.
    _io.write_netcdf(small_stats().to_dataset(), tmp_path / "again.nc", file_format="t")
    assert not _io._PARSED


# Attribute values of the kinds the package's files carry (names, settings, lists of orders
# and couplings, one-element lists, NaN) and the variable kinds (float32/64, integers,
# strings, booleans, scalars, empty).
_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
_number = st.one_of(st.integers(-2**62, 2**62), st.floats(allow_infinity=True, allow_nan=True),
                    st.floats(width=32).map(np.float32))
_attr_value = st.one_of(_text, _number, st.lists(_text, min_size=1, max_size=3),
                        st.lists(st.floats(allow_nan=True), min_size=1, max_size=3),
                        st.lists(st.integers(-1000, 1000), min_size=1, max_size=3))
_attrs = st.dictionaries(st.sampled_from(["title", "orders", "σ_b", "couplings", "seed", "x1",
                                          "note"]), _attr_value, max_size=5)
_variables = st.lists(st.sampled_from([
    ("f64", ("d",), np.array([1.5, np.nan, -0.0])),
    ("f32", ("d",), np.array([1.5, 2.0, 3.0], np.float32)),
    ("i64", ("d",), np.array([2**62, -1, 0])),
    ("labels", ("d",), np.array(["λ", "g3", ""])),
    ("flags", ("d",), np.array([True, False, True])),
    ("scalar", (), np.array(0.25)),
    ("empty", ("z",), np.zeros(0)),
]), min_size=1, max_size=4, unique_by=lambda v: v[0])


@FEW
@given(root=_attrs, group=_attrs, var_attrs=_attrs, variables=_variables)
def test_the_parse_write_netcdf_keeps_is_what_h5netcdf_reads_from_the_file(
        root, group, var_attrs, variables):
    """write_netcdf parses the bytes it has just built with netCDF-C (_io._load, netcdf4),
    keeps that parse for later readers and checksums it; a reader in another process parses
    the file with h5netcdf (_io._load by default). The two must agree exactly, or a file would read
    differently in another process and be refused there as edited: the same values and
    attributes, in the same order, the checksum verified, and the same bytes when written
    again."""
    ds = xr.Dataset({name: (dims, value, var_attrs) for name, dims, value in variables},
                    coords={"d": ["a", "b", "c"]}, attrs=group)
    cases = [(ds.assign_attrs(root), False),
             (xr.DataTree.from_dict({"/": xr.Dataset(attrs=root), "/posterior": ds}), True)]
    with tempfile.TemporaryDirectory() as tmp:
        for obj, tree in cases:
            path = Path(tmp) / "f.nc"
            _io.write_netcdf(obj, path, file_format="test", version=1)
            kept = _io.load_netcdf(path, name="path", what="file", tree=tree)
            fresh = _io._load(io.BytesIO(path.read_bytes()), tree)
            assert kept.identical(fresh)
            for a, b in zip(_nodes(kept), _nodes(fresh), strict=True):
                assert list(a.attrs) == list(b.attrs)
                assert {k: list(v.attrs) for k, v in a.variables.items()} == {
                    k: list(v.attrs) for k, v in b.variables.items()}
            _io.verify_checksum(fresh, name="path", path=path, what="file")
            assert _io.netcdf_bytes(kept) == _io.netcdf_bytes(fresh)


def test_the_byte_bounded_memo_drops_the_least_recently_used_and_keeps_no_oversized_entry():
    # The memo behind the parsed-file, kernel-block and lattice caches (nngp_ppl._memo).
    memo = BytesLRU()
    for key in "abc":
        memo.keep(key, key.upper(), 10, limit=30)
    assert memo.fetch("a") == "A"  # now the most recently used: "b" goes first
    memo.keep("d", "D", 10, limit=30)
    assert list(memo) == ["c", "a", "d"] and memo.fetch("b") is None
    memo.keep("e", "E", 25, limit=30)  # 55 bytes: dropped from the oldest until <= 30
    assert list(memo) == ["e"] and sum(n for _, n in memo.values()) == 25
    memo.keep("f", "F", 6, limit=30, largest=5)  # larger than one entry may be: not kept
    memo.keep("g", "G", 31, limit=30)  # larger than the whole memo: not kept
    assert list(memo) == ["e"]
    memo.keep("e", "E2", 5, limit=30)  # a key kept again counts once, at its new size
    assert memo.fetch("e") == "E2" and list(memo.values()) == [("E2", 5)]


def test_statistics_without_tail_sums_skip_the_tail_check():
    f = small_stats()
    old = CorrelatorStats(f.net, f.X, f.orders, f.seed, {w: f.moment_sums(w) for w in f.widths},
                          {w: f.network_ranges(w) for w in f.widths})
    assert not old.has_tails and check_tails(old) == {}
    with pytest.raises(NNGPInputError, match="tail sums are not available"):
        old.effective_networks(2, 2)
    assert not old.merge(piece(np.random.default_rng(1), {2: [(100, 150)]}, True)).has_tails


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.999])
def test_truncated_files_are_detected(tmp_path, keep):
    good = tmp_path / "good.nc"
    small_stats().to_netcdf(good)
    data = good.read_bytes()
    cut = tmp_path / "cut.nc"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(NNGPInputError, match="path: .*cut.nc"):
        CorrelatorStats.from_netcdf(cut)


# ---------------------------------------------------------------------------------------------
# float32 batches against a float64 reference
# ---------------------------------------------------------------------------------------------
def float64_outputs(net, X, width, seed, n):
    """The sampler's networks (same keys, same float32 normal draws) evaluated in float64.

    Parameter layout of SingleLayerNet.network_outputs: per network one standard-normal
    vector, w0 = eps[:N d_in], then b0, a (N each) and b1.
    """
    keys = network_keys(seed, width, 0, n)
    size = width * (net.d_in + 2) + 1
    eps = np.asarray(jax.vmap(lambda key: jax.random.normal(key, (size,), np.float32))(keys),
                     dtype=np.float64)
    d = net.d_in
    w0 = eps[:, : width * d].reshape(n, width, d) * (net.sigma_w / np.sqrt(d))
    b0 = eps[:, width * d: width * d + width] * net.sigma_b
    a = eps[:, width * d + width: width * d + 2 * width] * (net.sigma_w / np.sqrt(width))
    b1 = eps[:, -1] * net.sigma_b
    z = w0 @ X.T + b0[:, :, None]  # (n, N, k)
    if net.name == "erf":
        h = erf(z)
    elif net.name == "relu":
        h = np.maximum(z, 0.0)
    else:
        h = np.exp(z - np.asarray(net.preactivation_var(X))[None, None, :])
    return np.einsum("nw,nwk->nk", a, h) + b1[:, None]


@pytest.mark.parametrize("net, X", [
    (nngp_ppl.ErfNet(), np.array([[-1.0], [0.2], [1.0]])),
    (nngp_ppl.ReLUNet(d_in=2, sigma_b=0.5), np.array([[0.5, 0.5], [1.0, 0.5], [1.0, 1.0]])),
    (nngp_ppl.GaussNet(sigma_w=0.5, sigma_b=0.3), np.array([[0.0], [0.5], [1.0]])),
])
@pytest.mark.parametrize("width", [3, 1000])
def test_float32_batches_agree_with_float64_within_the_statistical_error(net, X, width):
    """|G(float32 sampler) - G(float64 reference)| <= 1e-3 standard errors, every tuple.

    Same networks (same keys and float32 normal draws), so the difference is arithmetic
    only: float32 forward pass (N-term sums at N = 1000) against float64. The bound is
    1000x tighter than what would matter statistically.
    """
    n = 2000
    f = float64_outputs(net, X, width, 1, n)
    moments, squares = network_sums(net, X, width, 1, 0, n, orders=(2, 4, 6),
                                    covariance=False)
    for order in (2, 4, 6):
        obs = np.prod(f[:, distinct_tuples(len(X), order)], axis=2)
        ref = obs.mean(axis=0)
        se = obs.std(axis=0, ddof=1) / np.sqrt(n)
        got = moments[order] / n
        assert np.max(np.abs(got - ref) / se) < 1e-3, order
        np.testing.assert_allclose(squares[order], (obs**2).sum(axis=0), rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# heavy tails
# ---------------------------------------------------------------------------------------------
def test_effective_networks_equal_the_brute_force_participation_number():
    net, X, width, n = nngp_ppl.GaussNet(sigma_w=0.5, sigma_b=0.3), [0.0, 0.5, 1.0], 4, 1500
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HeavyTailWarning)
        stats = nngp_ppl.sample_correlators(net, X, width, n, orders=(2, 4), seed=2,
                                            progress=False)
    f = net.sample_outputs(2, X, width, n).astype(np.float64)
    for order in (2, 4):
        d = np.prod(f[:, distinct_tuples(3, order)], axis=2)
        d = d - d.mean(axis=0)
        brute = (d**2).sum(axis=0) ** 2 / (d**4).sum(axis=0)
        np.testing.assert_allclose(stats.effective_networks(order, width), brute, rtol=1e-4)
        s3, s4 = stats.tail_sums(width)[order]
        np.testing.assert_allclose(s4, (np.prod(f[:, distinct_tuples(3, order)], axis=2) ** 4)
                                   .sum(axis=0), rtol=1e-4)


def test_heavy_tail_warning_fires_where_naive_errors_fail_and_not_where_they_hold():
    """physics.md §4: Gauss-net at σ_W = σ_b = 1 has log-normal, heavy-tailed products.

    There the effective number of networks behind the 4-pt variance stays at a few
    however many networks are drawn (the sample kurtosis grows like n), and the warning
    fires at 2·10⁴ and at 2·10⁵ networks. For Erf-net at the same point the kurtosis of
    f⁴ is finite, n_eff grows with n and no warning fires. Fixed seeds; the threshold is
    the documented criterion (n_eff < 10).
    """
    heavy, X1 = nngp_ppl.GaussNet(), [[0.01]]
    light = nngp_ppl.ErfNet()
    neff = {}
    for name, net in (("heavy", heavy), ("light", light)):
        for n in (20_000, 200_000):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                stats = nngp_ppl.sample_correlators(net, X1, 2, n, orders=(2, 4), seed=0,
                                                    progress=False)
            neff[name, n] = stats.effective_networks(4, 2)[0]
            fired = [w for w in caught if issubclass(w.category, HeavyTailWarning)]
            bad = check_tails(stats, warn=False)
            assert len(fired) == (1 if bad else 0)
            assert ((2, 4) in bad) == (neff[name, n] < 10), (name, n, neff[name, n])
            assert bad.get((2, 4), neff[name, n]) == neff[name, n]
    assert neff["heavy", 20_000] < 10 and neff["heavy", 200_000] < 10
    assert neff["light", 200_000] > neff["light", 20_000] > 10
    with pytest.warns(HeavyTailWarning, match="G4"):
        check_tails(stats, min_effective=1e9)
