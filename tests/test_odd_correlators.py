"""Odd correlators in the sampler, and connected correlators with propagated errors.

Oracles: float64 brute-force sums of the same float32 outputs (both accumulation kernels,
bounds as in tests/test_native.py: materialised orders float64, |err| <= 1e-12 sum|terms|;
covariance-only orders float32 per block, |err| <= (NB + 2) 2^-24 sum|terms| for the C
kernel and (C + 2) 2^-24 for an XLA chunk of C networks); the exact finite-width cumulants
of nngp_ppl.theory.exact (fixed seeds, tolerances from the propagated standard error).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from nngp_ppl import NNGPInputError
from nngp_ppl._checks import orders as check_orders
from nngp_ppl.sampling import _native, _shard
from nngp_ppl.sampling.stats import accumulated_orders
from nngp_ppl.tuples import distinct_tuples, materialised_orders, prefix_suffix_orders

U32 = 2.0**-24
lib = _native.library()
needs_c = pytest.mark.skipif(lib is None, reason="no C compiler: the XLA kernel is used")


def _outputs(k, n, seed, wide):
    rng = np.random.default_rng(seed)
    scales = np.logspace(-3, 3, k) if wide else np.logspace(-0.5, 0.5, k)
    F = (rng.standard_normal((n, k)) * scales).astype(np.float32)
    F[-3:] = 0.0  # masked rows
    return F


def _check_sums(moments, F, orders, bound_split):
    f = F.astype(np.float64)
    top = max(orders)
    assert sorted(moments) == list(accumulated_orders(orders, True))
    for m, got in moments.items():
        prods = np.prod(f[:, distinct_tuples(F.shape[1], m)], axis=2)
        err = np.abs(got - prods.sum(0))
        bound = (1e-12 if m <= top else bound_split) * np.abs(prods).sum(0) + 1e-300
        assert np.all(err <= bound), (m, float(np.max(err / bound)))


def test_orders_validator_accepts_odd_only_when_asked():
    assert check_orders("orders", [3, 1, 6], odd=True) == (1, 3, 6)
    with pytest.raises(NNGPInputError, match="even integers"):
        check_orders("orders", [3])
    with pytest.raises(NNGPInputError, match=r"integers in 1\.\.6"):
        check_orders("orders", [0], odd=True)
    with pytest.raises(NNGPInputError, match=r"integers in 1\.\.6"):
        check_orders("orders", [7], odd=True)


def test_plans_with_odd_orders_materialise_every_order_and_split_within_them():
    assert materialised_orders((2, 4, 6)) == (2, 4, 6)
    assert materialised_orders((1, 4)) == (1, 2, 3, 4)
    for top in range(1, 7):
        for m in range(top + 1, 2 * top + 1):
            p, q = prefix_suffix_orders(m, odd=True)
            assert 1 <= p <= q <= top and p + q == m
    assert prefix_suffix_orders(10) == (4, 6)  # even plans keep their split


ODD_PLANS = [(6, (1, 2, 3, 4, 5, 6)), (3, (1, 3)), (2, (1,)), (4, (2, 3)), (1, (1, 5))]


@needs_c
@pytest.mark.parametrize(("k", "orders"), ODD_PLANS)
@pytest.mark.parametrize("wide", [False, True])
def test_c_kernel_odd_orders_against_brute_force(k, orders, wide):
    """Every accumulated order 1..2 max(orders) and the tail sums of the measured ones;
    "wide" outputs (1e-3..1e3) take the power-of-two scaling path."""
    F = _outputs(k, 203, k, wide)
    plan = _shard.StepPlan(k, orders, True)
    sums = _native.HostSums(lib, k, plan.orders, plan.split, True)
    for part in np.array_split(F, 2):
        sums.add(part)
    got = sums.result()
    _check_sums(got.moments, F, orders, (16 + 2) * U32)
    f = F.astype(np.float64)
    for n in orders:
        X = np.prod(f[:, distinct_tuples(k, n)], axis=2)
        for row, p in enumerate((3, 4)):
            ref = (X**p).sum(0)
            assert np.all(np.abs(got.tails[n][row] - ref) <= 1e-12 * np.abs(X**p).sum(0) + 1e-300)


@pytest.mark.parametrize(("k", "orders"), ODD_PLANS[:3])
def test_xla_kernel_odd_orders_against_brute_force(k, orders):
    F = _outputs(k, 200, k + 1, wide=True)
    plan = _shard.StepPlan(k, orders, True)
    chunk = 40
    total = None
    for c in F.astype(np.float64).reshape(-1, chunk, k):
        part = _shard.monomial_sums(jnp.asarray(c.T), plan)
        total = part if total is None else [
            tuple(a + b for a, b in zip(x, y, strict=True)) for x, y in zip(total, part,
                                                                             strict=True)]
    moments = _shard._assemble_moments(plan, total[0], total[1])
    _check_sums(moments, F, orders, (chunk + 2) * U32)


# ---------------------------------------------------------------------------------------------
# connected correlators
# ---------------------------------------------------------------------------------------------
def test_cumulant_jacobian_matches_finite_differences_and_wick_cumulants():
    from nngp_ppl.sampling.stats import cumulants_with_jacobian
    from nngp_ppl.theory.wick import connected_correlator_tuples

    k, n = 3, 5
    rng = np.random.default_rng(0)
    moments = {m: rng.standard_normal(len(distinct_tuples(k, m))) for m in range(1, n + 1)}
    kappa, jac = cumulants_with_jacobian(moments, k, n)
    np.testing.assert_allclose(kappa, connected_correlator_tuples(moments, n, k), rtol=1e-12,
                               atol=1e-12)
    sizes = [len(moments[m]) for m in range(1, n + 1)]
    flat = np.concatenate([moments[m] for m in range(1, n + 1)])

    def cumulant(v):
        parts = np.split(v, np.cumsum(sizes)[:-1])
        return cumulants_with_jacobian(dict(zip(range(1, n + 1), parts, strict=True)), k, n)[0]

    eps = 1e-6
    numeric = np.stack([(cumulant(flat + eps * e) - cumulant(flat - eps * e)) / (2 * eps)
                        for e in np.eye(len(flat))], axis=1)
    np.testing.assert_allclose(jac, numeric, atol=1e-7)


def test_connected_needs_even_orders_and_takes_missing_odd_ones_as_zero():
    from nngp_ppl import ErfNet, sample_correlators

    X = np.array([[0.3], [1.0]])
    stats = sample_correlators(ErfNet(), X, [4], 256, orders=(2, 4), seed=0, progress=False)
    conn = stats.connected(4, 4)
    assert conn.orders == (2, 4) and conn.assumed_zero == (1, 3)
    with pytest.raises(NNGPInputError, match=r"orders \[6\] were not measured"):
        stats.connected(6, 4)
    with pytest.raises(NNGPInputError, match="1..6"):
        stats.connected(7, 4)


@pytest.mark.slow
def test_propagated_errors_of_connected_correlators_are_calibrated_over_seeds():
    """z = (kappa_hat - kappa_exact) / stderr over 60 seeds, every tuple of kappa_1..kappa_4
    of a non-zero-mean Erf-net: mean within 4.5 sd/sqrt(seeds) of 0 (pooled over tuples
    it would be tighter, but tuples share draws) and sd within [0.75, 1.3]."""
    from nngp_ppl import ErfNet, sample_correlators
    from nngp_ppl.theory.exact import exact_cumulant_tuples

    net, X, width, seeds = ErfNet(mu_w=0.5, mu_b=0.3), np.array([[-0.6], [0.8]]), 3, 60
    exact = {n: exact_cumulant_tuples(net, X, width, n) for n in range(1, 5)}
    z = {n: [] for n in exact}
    for s in range(seeds):
        stats = sample_correlators(net, X, [width], 2048, orders=(1, 2, 3, 4), seed=100 + s,
                                   progress=False)
        for n in exact:
            c = stats.connected(n, width)
            z[n].append((c.values - exact[n]) / c.stderr)
    for n, zs in z.items():
        zs = np.array(zs)
        assert np.all(np.abs(zs.mean(0)) <= 4.5 / np.sqrt(seeds)), (n, zs.mean(0))
        assert np.all((zs.std(0) >= 0.75) & (zs.std(0) <= 1.3)), (n, zs.std(0))


def test_odd_order_statistics_round_trip_through_files_and_merge(tmp_path):
    from nngp_ppl import CorrelatorStats, ErfNet, sample_correlators

    X = np.array([[0.3], [1.0]])
    a = sample_correlators(ErfNet(mu_b=0.1), X, [2], 128, orders=(1, 3), seed=0,
                           progress=False)
    b = sample_correlators(ErfNet(mu_b=0.1), X, [2], 128, orders=(1, 3), seed=0, start=128,
                           progress=False)
    back = CorrelatorStats.from_netcdf(a.to_netcdf(tmp_path / "odd.nc"))
    assert back.orders == (1, 3) and back.accumulated_orders == (1, 2, 3, 4, 6)
    np.testing.assert_array_equal(back.covariance(2), a.covariance(2))
    both = back.merge(b)
    whole = sample_correlators(ErfNet(mu_b=0.1), X, [2], 256, orders=(1, 3), seed=0,
                               progress=False)
    np.testing.assert_allclose(both.mean_vector(2), whole.mean_vector(2), rtol=1e-12)


@needs_c
def test_c_and_xla_kernels_sample_the_same_odd_order_sums(monkeypatch):
    """A whole run with each kernel, orders 1..6 of a non-zero-mean net: the same networks,
    so the sums agree to float64 round-off for the measured orders and to the XLA
    kernel's float32 bound, 2 (CHUNK + 2) u sum|terms|, for the covariance-only ones."""
    import nngp_ppl.ensembles.core as ensembles
    from nngp_ppl import ErfNet, sample_correlators

    net, X, width, n = ErfNet(mu_b=0.2), np.array([[-0.5], [0.2], [1.0]]), 5, 1000
    runs = {}
    for kernel in ("c", "xla"):
        monkeypatch.setenv("NNGP_PPL_KERNEL", kernel)
        runs[kernel] = sample_correlators(net, X, width, n, orders=(1, 2, 3, 4, 5, 6),
                                          progress=False, seed=4)
    f = np.abs(np.asarray(net.network_outputs(ensembles.network_keys(4, width, 0, n), X,
                                              width, np.float32), np.float64))
    for m, s in runs["c"].moment_sums(width).items():
        size = np.prod(f[:, distinct_tuples(len(X), m)], axis=2).sum(axis=0)
        rel = 1e-12 if m <= 6 else 2 * (_shard.CHUNK + 2) * U32
        assert np.all(np.abs(s - runs["xla"].moment_sums(width)[m]) <= rel * size), m


def test_an_interrupted_odd_order_run_resumes_to_the_identical_sums(tmp_path, monkeypatch):
    from nngp_ppl import ErfNet, sample_correlators
    from nngp_ppl.sampling.checkpoint import ShardLedger

    net, X, ck = ErfNet(mu_b=0.2), np.array([[-0.8], [0.1], [0.9]]), tmp_path / "odd.partial"
    kw = dict(orders=(1, 3, 4), seed=5, batch_size=64, shard_size=64, progress=False)
    whole = sample_correlators(net, X, [7], 384, **kw)
    real_save, saves = ShardLedger.save, []

    def crash_after_two(self, path):
        real_save(self, path)
        saves.append(path)
        if len(saves) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(ShardLedger, "save", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        sample_correlators(net, X, [7], 384, checkpoint=ck, **kw)
    monkeypatch.setattr(ShardLedger, "save", real_save)
    resumed = sample_correlators(net, X, [7], 384, checkpoint=ck, resume=True, **kw)
    assert resumed.accumulated_orders == (1, 2, 3, 4, 5, 6, 7, 8)
    for m, s in whole.moment_sums(7).items():
        assert np.array_equal(s, resumed.moment_sums(7)[m]), m
    for n, s in whole.tail_sums(7).items():
        assert np.array_equal(s, resumed.tail_sums(7)[n]), n
