"""CorrelatorStats on synthetic data: estimates, covariance, merging, files, bad input.

The sums are built here by brute force from explicit "network outputs" (random numbers
standing in for f_j(x_a)), so every estimate can be checked against numpy's textbook
formulas on the same numbers; no sampler or JAX compilation is involved.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import xarray as xr

import nngp_ppl
from nngp_ppl import CorrelatorStats, NNGPInputError
from nngp_ppl.sampling.stats import (
    accumulated_orders,
    monomial_count,
    normalised_deviation,
    observable_rows,
    square_index,
    union_index,
)
from nngp_ppl.tuples import distinct_tuples, expand

NET = nngp_ppl.ErfNet(sigma_w=1.2, sigma_b=0.4)
X = np.array([[-1.0], [0.3], [0.8]])
K = len(X)


def outputs(n, seed):
    """Correlated, non-Gaussian stand-ins for network outputs f_j(x_a), shape (n, K)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, K)) @ np.array([[1.0, 0.5, 0.2], [0.0, 1.0, 0.4], [0.0, 0.0, 1.0]])
    return z + 0.3 * z**2


def sums_of(f, orders):
    return {m: np.prod(f[:, distinct_tuples(K, m)], axis=2).sum(axis=0) for m in orders}


def make(f, *, width=5, start=0, orders=(2, 4, 6), covariance=True, seed=0, net=NET, x=X):
    acc = accumulated_orders(orders, covariance)
    squares = None
    if not covariance:
        squares = {width: {n: (np.prod(f[:, distinct_tuples(K, n)], axis=2) ** 2).sum(axis=0)
                           for n in orders}}
    return CorrelatorStats(net, x, orders, seed, {width: sums_of(f, acc)},
                           {width: [(start, start + len(f))]}, squares=squares,
                           covariance=covariance)


def observables(f, orders=(2, 4, 6)):
    return np.concatenate([np.prod(f[:, distinct_tuples(K, n)], axis=2) for n in orders], axis=1)


def test_monomial_bookkeeping_counts():
    assert accumulated_orders((2, 4, 6)) == (2, 4, 6, 8, 10, 12)
    assert accumulated_orders((2, 6)) == (2, 4, 6, 8, 12)
    assert accumulated_orders((4, 2), covariance=False) == (2, 4)
    # physics.md §3 / the brief: k = 6 at orders 2, 4, 6 needs 11 087 monomial sums.
    assert monomial_count(6, (2, 4, 6)) == 11_087
    assert monomial_count(6, (2, 4, 6), covariance=False) == 2 * (21 + 126 + 462)


def test_union_and_square_index_against_brute_force():
    k = 4
    for n, m in [(2, 2), (2, 4), (4, 2), (4, 6)]:
        idx = union_index(k, n, m)
        a, b, c = distinct_tuples(k, n), distinct_tuples(k, m), distinct_tuples(k, n + m)
        for i in (0, len(a) // 2, len(a) - 1):
            for j in (0, len(b) // 3, len(b) - 1):
                assert tuple(c[idx[i, j]]) == tuple(sorted(list(a[i]) + list(b[j])))
    assert np.array_equal(square_index(k, 4), np.diag(union_index(k, 4, 4)))


def test_estimates_equal_textbook_formulas():
    f = outputs(4000, 1)
    stats = make(f)
    obs = observables(f)
    np.testing.assert_allclose(stats.mean_vector(5), obs.mean(axis=0), rtol=1e-12)
    cov = np.cov(obs, rowvar=False) / len(f)
    np.testing.assert_allclose(stats.covariance(5), cov, rtol=1e-8, atol=1e-12 * abs(cov).max())
    se = np.sqrt(np.diag(cov))
    np.testing.assert_allclose(np.concatenate([stats.stderr_tuples(n, 5) for n in (2, 4, 6)]),
                               se, rtol=1e-8)
    np.testing.assert_allclose(stats.correlator(4, 5),
                               expand(obs[:, 6:21].mean(axis=0), K, 4), rtol=1e-12)
    G6 = stats.correlator(6, 5)
    assert G6.shape == (3,) * 6 and G6[0, 1, 2, 2, 1, 0] == G6[0, 0, 1, 1, 2, 2]
    assert stats.stderr(2, 5).shape == (3, 3)
    # Sub-blocks and the row labels line up.
    rows = stats.observables((4, 6))
    assert rows[0] == (4, (0, 0, 0, 0)) and rows[-1] == (6, (2,) * 6) and len(rows) == 15 + 28
    np.testing.assert_allclose(stats.covariance(5, orders=(4, 6)), cov[6:, 6:], rtol=1e-8,
                               atol=1e-12 * abs(cov).max())
    assert observable_rows(K, (2,)) == [(2, (0, 0)), (2, (0, 1)), (2, (0, 2)), (2, (1, 1)),
                                        (2, (1, 2)), (2, (2, 2))]


def test_diagonal_only_run_gives_the_same_standard_errors():
    f = outputs(3000, 2)
    full, cheap = make(f), make(f, covariance=False)
    assert cheap.accumulated_orders == (2, 4, 6)
    for n in (2, 4, 6):
        np.testing.assert_allclose(cheap.stderr_tuples(n, 5), full.stderr_tuples(n, 5),
                                   rtol=1e-9)
    with pytest.raises(NNGPInputError, match="covariance=False"):
        cheap.covariance(5)


def test_single_network_has_undefined_errors():
    stats = make(outputs(1, 3))
    assert np.all(np.isnan(stats.stderr_tuples(4, 5)))
    assert np.all(np.isnan(stats.covariance(5)))


def test_merge_adds_sums_and_unites_widths():
    f = outputs(3000, 4)
    a, b = make(f[:1000]), make(f[1000:], start=1000)
    merged = a.merge(b)
    whole = make(f)
    assert merged.n_nets(5) == 3000 and merged.network_ranges(5) == ((0, 3000),)
    for m, s in whole.moment_sums(5).items():
        np.testing.assert_allclose(merged.moment_sums(5)[m], s, rtol=1e-12)
    other_width = make(f[:500], width=9)
    both = merged.merge(other_width)
    assert both.widths == (5, 9) and both.n_nets(9) == 500 and both.n_nets(5) == 3000
    # A gap in the index ranges is fine (e.g. a shard still missing); an overlap is not.
    gap = a.merge(make(f[2000:], start=2000))
    assert gap.network_ranges(5) == ((0, 1000), (2000, 3000)) and gap.n_nets(5) == 2000


@pytest.mark.parametrize(
    "other, match",
    [
        (lambda f: make(f, start=500), "counted twice"),
        (lambda f: make(f, start=1000, seed=1), "seed"),
        (lambda f: make(f, start=1000, net=nngp_ppl.ErfNet()), "ensemble"),
        (lambda f: make(f, start=1000, x=X + 0.1), "inputs"),
        (lambda f: make(f, start=1000, orders=(2, 4)), "orders"),
        (lambda f: make(f, start=1000, covariance=False), "covariance"),
        (lambda f: "not stats", "other"),
    ],
)
def test_merge_refuses_mismatches(other, match):
    f = outputs(1000, 5)
    with pytest.raises(NNGPInputError, match=match):
        make(f).merge(other(f))


def test_netcdf_round_trip_keeps_sums_and_provenance(tmp_path):
    f = outputs(2000, 6)
    stats = make(f).merge(make(f[:700], width=11, start=40))
    path = tmp_path / "sub" / "run.nc"
    stats.to_netcdf(path)
    assert sorted(os.listdir(path.parent)) == ["run.nc"]  # no temporary file left behind
    back = CorrelatorStats.from_netcdf(path)
    assert back.net == NET and back.orders == (2, 4, 6) and back.seed == 0
    assert back.widths == (5, 11) and back.network_ranges(11) == ((40, 740),)
    np.testing.assert_array_equal(back.X, X)
    for w in (5, 11):
        for m, s in stats.moment_sums(w).items():
            np.testing.assert_array_equal(back.moment_sums(w)[m], s)
        np.testing.assert_array_equal(back.covariance(w), stats.covariance(w))
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        assert ds.attrs["nngp_ppl_version"] == nngp_ppl.__version__
        assert json.loads(ds.attrs["ensemble"])["ensemble"] == "erf"
        assert json.loads(ds.attrs["n_nets_per_width"]) == {"5": 2000, "11": 700}
        assert list(ds["n_nets"].values) == [2000, 700]
    cheap = make(f, covariance=False)
    cheap.to_netcdf(path)  # overwrites
    back = CorrelatorStats.from_netcdf(str(path))
    assert not back.has_covariance
    np.testing.assert_array_equal(back.stderr_tuples(6, 5), cheap.stderr_tuples(6, 5))


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    # The file is built in memory and its bytes written by _io.write_bytes (a full disk is
    # one OSError there): interrupt that write half-way.
    def broken(tmp, data, **kw):
        with open(tmp, "wb") as fh:
            fh.write(data[: len(data) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(nngp_ppl.sampling.stats, "write_bytes", broken)
    with pytest.raises(KeyboardInterrupt):
        make(outputs(10, 7)).to_netcdf(tmp_path / "run.nc")
    assert os.listdir(tmp_path) == []


def test_bad_files_raise_one_clear_error(tmp_path):
    with pytest.raises(NNGPInputError, match="no such file"):
        CorrelatorStats.from_netcdf(tmp_path / "missing.nc")
    with pytest.raises(NNGPInputError, match="directory"):
        CorrelatorStats.from_netcdf(tmp_path)
    junk = tmp_path / "junk.nc"
    junk.write_text("not a netCDF file")
    with pytest.raises(NNGPInputError, match="not a readable netCDF"):
        CorrelatorStats.from_netcdf(junk)
    foreign = tmp_path / "foreign.nc"
    xr.Dataset({"t": ("x", [1.0, 2.0])}).to_netcdf(foreign, engine="h5netcdf")
    with pytest.raises(NNGPInputError, match="not an nngp_ppl"):
        CorrelatorStats.from_netcdf(foreign)
    good = tmp_path / "good.nc"
    make(outputs(10, 8)).to_netcdf(good)
    ds = xr.load_dataset(good, engine="h5netcdf")
    ds.attrs["nngp_ppl_format_version"] = 99
    ds.to_netcdf(tmp_path / "future.nc", engine="h5netcdf")
    with pytest.raises(NNGPInputError, match="version"):
        CorrelatorStats.from_netcdf(tmp_path / "future.nc")
    ds = xr.load_dataset(good, engine="h5netcdf").drop_vars("moment_sum_12")
    ds.to_netcdf(tmp_path / "damaged.nc", engine="h5netcdf")
    with pytest.raises(NNGPInputError, match="damaged"):
        CorrelatorStats.from_netcdf(tmp_path / "damaged.nc")
    with pytest.raises(NNGPInputError, match="path"):
        make(outputs(10, 8)).to_netcdf(tmp_path)
    with pytest.raises(NNGPInputError, match="path"):
        CorrelatorStats.from_netcdf(None)


def test_bad_queries_and_constructor_arguments():
    f = outputs(100, 9)
    stats = make(f)
    with pytest.raises(NNGPInputError, match="width"):
        stats.correlator(4, 6)
    with pytest.raises(NNGPInputError, match="n must be one of"):
        stats.correlator_tuples(8, 5)
    with pytest.raises(NNGPInputError, match="orders"):
        stats.covariance(5, orders=(2, 8))
    sums = sums_of(f, accumulated_orders((2, 4, 6)))
    with pytest.raises(NNGPInputError, match="order-8 sums"):
        CorrelatorStats(NET, X, (2, 4, 6), 0, {5: sums_of(f, (2, 4, 6))}, {5: [(0, 100)]})
    with pytest.raises(NNGPInputError, match="shape"):
        CorrelatorStats(NET, X[:2], (2, 4, 6), 0, {5: sums}, {5: [(0, 100)]})
    with pytest.raises(NNGPInputError, match="ranges"):
        CorrelatorStats(NET, X, (2, 4, 6), 0, {5: sums}, {6: [(0, 100)]})
    with pytest.raises(NNGPInputError, match="overlap"):
        CorrelatorStats(NET, X, (2, 4, 6), 0, {5: sums}, {5: [(0, 60), (50, 100)]})
    with pytest.raises(NNGPInputError, match="squares"):
        CorrelatorStats(NET, X, (2, 4, 6), 0, {5: sums}, {5: [(0, 100)]}, covariance=False)
    with pytest.raises(NNGPInputError, match="orders"):
        CorrelatorStats(NET, X, (2, 5), 0, {5: sums}, {5: [(0, 100)]})
    with pytest.raises(NNGPInputError, match="net"):
        CorrelatorStats("erf", X, (2, 4, 6), 0, {5: sums}, {5: [(0, 100)]})


def test_normalised_deviation():
    assert normalised_deviation([1.1, -2.2], [1.0, -2.0]) == pytest.approx(0.1)
