"""The sampler's C accumulation kernel (nngp_ppl.sampling._native) against exact float64 sums.

Oracles: brute-force float64 products of the same float32 outputs; the XLA kernel (its own
float32 bound); exact power-of-two scaling. Bounds come from the kernel's arithmetic
(_native and _accumulate.c docstrings): the materialised orders and the tail sums are
float64 products summed in float64, |err| <= 1e-13 sum|terms| for the few hundred terms
here; the covariance-only orders are float32 products summed over a block of NB networks
in float32 and then in float64, |err| <= (NB + 2) 2^-24 sum|terms| (one rounding of each
operand to float32, NB of the block's sum).
"""

from __future__ import annotations

import numpy as np
import pytest

import nngp_ppl
from nngp_ppl import NNGPInputError
from nngp_ppl.sampling import _native, _shard
from nngp_ppl.sampling.stats import accumulated_orders
from nngp_ppl.tuples import distinct_tuples

lib = _native.library()
needs_c = pytest.mark.skipif(lib is None, reason="no C compiler: the XLA kernel is used")
U32 = 2.0**-24


def host_sums(F, k, orders, covariance=True, batches=2):
    plan = _shard.StepPlan(k, tuple(orders), covariance)
    sums = _native.HostSums(lib, k, plan.orders, plan.split, covariance)
    for part in np.array_split(F, batches):
        sums.add(part)
    return sums.result()


def outputs(k, n, scales, seed):
    rng = np.random.default_rng(seed)
    F = (rng.standard_normal((n, k)) * scales).astype(np.float32)
    F[-3:] = 0.0  # masked rows
    return F


@needs_c
@pytest.mark.parametrize(("k", "orders"), [(6, (2, 4, 6)), (3, (2, 6)), (2, (4,)),
                                           (1, (2, 4, 6)), (4, (6,))])
@pytest.mark.parametrize("spread", ["unit", "wide"])
def test_c_kernel_against_float64_brute_force(k, orders, spread):
    """Every accumulated order, the tail sums, and (covariance=False) the squares.

    "wide" outputs span 1e-4..1e4 across inputs, past 2^+-SAFE_EXPONENT, so the batches are
    scaled by powers of two and scaled back; "unit" outputs are not scaled.
    """
    scales = (np.logspace(-4, 4, k) if k > 1 else np.array([1e3])) if spread == "wide" \
        else np.ones(k)
    F = outputs(k, 203, scales, seed=k)  # 203: the second batch ends in a part-block
    if k >= 4:
        F[:, 1] = 0.0  # an input whose outputs vanish
    got = host_sums(F, k, orders)
    f = F.astype(np.float64)
    assert sorted(got.moments) == list(accumulated_orders(orders, True))
    for m, sums in got.moments.items():
        terms = np.prod(f[:, distinct_tuples(k, m)], axis=2)
        size = np.abs(terms).sum(axis=0)
        rel = 1e-13 if m <= max(orders) else (_native_block() + 2) * U32
        assert np.all(np.abs(sums - terms.sum(axis=0)) <= rel * size), m
    for n in orders:
        X = np.prod(f[:, distinct_tuples(k, n)], axis=2)
        for row, p in enumerate((3, 4)):
            exact, size = np.sum(X**p, axis=0), np.sum(np.abs(X) ** p, axis=0)
            assert np.all(np.abs(got.tails[n][row] - exact) <= 1e-13 * size)
    plain = host_sums(F, k, orders, covariance=False)
    assert sorted(plain.moments) == sorted(orders)
    for n in orders:
        X = np.prod(f[:, distinct_tuples(k, n)], axis=2)
        np.testing.assert_allclose(plain.squares[n], np.sum(X**2, axis=0), rtol=1e-13)
        np.testing.assert_array_equal(plain.moments[n], got.moments[n])


def _native_block():
    return int(lib.nngp_block_size())


@needs_c
def test_scaling_by_a_power_of_two_scales_every_sum_exactly():
    """Outputs x 2^20 (scaled inside the kernel) give sums x 2^(20 m), bit for bit, against
    the unscaled outputs; x 2^-20 likewise."""
    k, orders = 6, (2, 4, 6)
    F = outputs(k, 160, np.ones(k), seed=3)
    base = host_sums(F, k, orders)
    for shift in (20, -20):
        got = host_sums(np.ldexp(F, shift), k, orders)
        for m, sums in base.moments.items():
            np.testing.assert_array_equal(got.moments[m], np.ldexp(sums, shift * m))
        for n in orders:
            for row, p in enumerate((3, 4)):
                np.testing.assert_array_equal(got.tails[n][row],
                                              np.ldexp(base.tails[n][row], shift * n * p))


@needs_c
def test_c_and_xla_kernels_sample_the_same_sums(monkeypatch):
    """A whole run with each kernel: the same networks, so the sums agree to the XLA
    kernel's float32 bound, (CHUNK + 2) u sum|terms| per chunk for the covariance-only
    orders (2x: both kernels round), float64 round-off for the measured ones."""
    net, X, width, n = nngp_ppl.ErfNet(), [-0.5, 0.2, 1.0], 5, 1000
    runs = {}
    for kernel in ("c", "xla"):
        monkeypatch.setenv("NNGP_PPL_KERNEL", kernel)
        runs[kernel] = nngp_ppl.sample_correlators(net, X, width, n, progress=False, seed=4)
    f = np.abs(np.asarray(net.network_outputs(
        nngp_ppl.ensembles.core.network_keys(4, width, 0, n), np.asarray(X)[:, None], width,
        np.float32), np.float64))
    for m, s in runs["c"].moment_sums(width).items():
        size = np.prod(f[:, distinct_tuples(len(X), m)], axis=2).sum(axis=0)
        rel = 1e-12 if m <= 6 else 2 * (_shard.CHUNK + 2) * U32
        assert np.all(np.abs(s - runs["xla"].moment_sums(width)[m]) <= rel * size), m


def test_kernel_choice_is_validated(monkeypatch):
    monkeypatch.setenv("NNGP_PPL_KERNEL", "fortran")
    with pytest.raises(NNGPInputError, match="NNGP_PPL_KERNEL must be one of auto, c, xla"):
        _native.kernel_choice()
    monkeypatch.setenv("NNGP_PPL_KERNEL", "xla")
    assert _native.library() is None


def test_without_a_compiler_the_xla_kernel_is_used_with_one_warning(monkeypatch, tmp_path):
    monkeypatch.setenv("NNGP_PPL_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.delenv("NNGP_PPL_KERNEL", raising=False)
    _native._library_or_error.cache_clear()
    _native._warn_once.cache_clear()
    try:
        with pytest.warns(_native.NativeKernelWarning, match="no C compiler"):
            assert _native.library() is None
        monkeypatch.setenv("NNGP_PPL_KERNEL", "c")
        with pytest.raises(NNGPInputError, match="NNGP_PPL_KERNEL=c but the C kernel"):
            _native.library()
        monkeypatch.setenv("NNGP_PPL_KERNEL", "auto")
        job = _shard.shard_job(nngp_ppl.ErfNet(), [[0.5]], 3, 0, 0, 64, _shard.StepPlan(
            1, (2,), True), 64, 64)
        assert type(job) is _shard.ShardJob  # the XLA kernel
    finally:
        _native._library_or_error.cache_clear()
        _native._warn_once.cache_clear()
    assert list(tmp_path.iterdir()) == []  # nothing half-built left behind


@needs_c
def test_a_broken_source_fails_the_build_and_leaves_no_file(monkeypatch, tmp_path):
    bad = tmp_path / "broken.c"
    bad.write_text("this is not C\n")
    monkeypatch.setattr(_native, "SOURCE", bad)
    out = tmp_path / "cache" / "lib.so"
    error = _native._build(out)
    assert error and not out.exists()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == []


def test_a_bad_kernel_choice_is_refused_before_sampling(monkeypatch, tmp_path, capsys):
    from nngp_ppl.cli.main import main

    monkeypatch.setenv("NNGP_PPL_KERNEL", "fortran")
    out = tmp_path / "run.nc"
    assert main(["sample", "--ensemble", "erf", "--preset", "paper", "--widths", "2",
                 "--n-nets", "100", "--no-progress", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "NNGP_PPL_KERNEL must be one of auto, c, xla, got 'fortran'" in err
    assert "net/s" not in err and list(tmp_path.iterdir()) == []
