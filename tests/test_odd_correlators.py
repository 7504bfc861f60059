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

from nngp_ppl import NNGPInputError, _native, _shard
from nngp_ppl._checks import orders as check_orders
from nngp_ppl.stats import accumulated_orders
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
    plan = _shard._Plan(k, orders, True)
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
    plan = _shard._Plan(k, orders, True)
    chunk = 40
    total = None
    for c in F.astype(np.float64).reshape(-1, chunk, k):
        part = _shard._monomial_sums(jnp.asarray(c.T), plan)
        total = part if total is None else [
            tuple(a + b for a, b in zip(x, y, strict=True)) for x, y in zip(total, part,
                                                                             strict=True)]
    moments = _shard._assemble_moments(plan, total[0], total[1])
    _check_sums(moments, F, orders, (chunk + 2) * U32)
