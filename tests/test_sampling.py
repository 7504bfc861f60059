"""The streaming sampler against physics (exact finite-width correlators) and brute force.

Statistical tests use fixed seeds. A sampled correlator is compared with the exact one
through z = (G_sampled - G_exact) / stderr on every distinct tuple of orders 2, 4 and 6
(609 tuples for six inputs) and judged by the worst tuple: |z| < 4.5 is a Bonferroni bound
at family-wise level ~0.5% for 609 Gaussian z's (their correlation only makes it safer).
Averages of |z| over tuples are not used: the tuples share the same networks, so their
errors move together (physics.md §4). Settings are the tame ones of physics.md §4
(Gauss-net σ_W = 0.5, σ_b = 0.3 on the paper's inputs); the heavy-tailed Gauss-net at
σ_W = σ_b = 1 is shown separately.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

import nngp_ppl
from nngp_ppl import NNGPInputError, sample_correlators
from nngp_ppl.sampling import _shard
from nngp_ppl.sampling.sampler import default_batch_size, network_sums
from nngp_ppl.sampling.stats import observable_rows
from nngp_ppl.theory.exact import exact_correlator_tuples
from nngp_ppl.theory.wick import gp_correlator_tuples
from nngp_ppl.tuples import distinct_tuples

Z_MAX = 4.5
WIDTHS = (2, 10, 100)
# More networks where the finite-width effect must be resolved (N = 2: power check).
N_NETS = {2: 100_000, 10: 40_000, 100: 20_000}
ENSEMBLES = {
    "erf": (nngp_ppl.ErfNet(), nngp_ppl.paper_inputs("erf")),
    "relu": (nngp_ppl.ReLUNet(sigma_b=0.5), nngp_ppl.paper_inputs("relu")),
    "gauss": (nngp_ppl.GaussNet(sigma_w=0.5, sigma_b=0.3), nngp_ppl.paper_inputs("gauss")),
}

_RUNS: dict = {}


def run(name: str, width: int):
    """One sampled run per (ensemble, width), shared by the tests of this module."""
    if (name, width) not in _RUNS:
        net, X = ENSEMBLES[name]
        _RUNS[name, width] = sample_correlators(net, X, width, N_NETS[width], seed=11,
                                                progress=False)
    return _RUNS[name, width]


def worst_z(stats, width, reference: dict) -> float:
    return max(
        float(np.max(np.abs((stats.correlator_tuples(n, width) - ref)
                            / stats.stderr_tuples(n, width))))
        for n, ref in reference.items()
    )


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", sorted(ENSEMBLES))
def test_sampler_matches_exact_correlators(name, width):
    net, X = ENSEMBLES[name]
    stats = run(name, width)
    exact = {n: exact_correlator_tuples(net, X, width, n) for n in (2, 4, 6)}
    assert worst_z(stats, width, exact) < Z_MAX
    if width == 2:
        # Power: at N = 2 the same test rejects the Gaussian process.
        gp = {4: gp_correlator_tuples(np.asarray(net.kernel(X)), 4)}
        assert worst_z(stats, width, gp) > Z_MAX


@pytest.mark.parametrize("name", sorted(ENSEMBLES))
def test_two_point_function_is_the_kernel_at_every_width(name):
    # physics.md §2: E[f(x) f(x')] = K(x, x') exactly at every N (closed-form kernel).
    net, X = ENSEMBLES[name]
    K = np.asarray(net.kernel(X))
    for width in WIDTHS:
        stats = run(name, width)
        z = (stats.correlator(2, width) - K) / stats.stderr(2, width)
        assert np.max(np.abs(z)) < Z_MAX


def test_full_arrays_are_symmetric_and_consistent_with_tuples():
    stats = run("erf", 10)
    G4 = stats.correlator(4, 10)
    assert G4.shape == (6, 6, 6, 6)
    assert G4[0, 1, 2, 3] == G4[3, 1, 0, 2] == G4[2, 3, 1, 0]
    assert np.array_equal(G4[tuple(distinct_tuples(6, 4).T)], stats.correlator_tuples(4, 10))
    assert stats.stderr(6, 10).shape == (6,) * 6


def test_estimator_covariance_of_two_point_functions_matches_exact():
    r"""The 21x21 covariance block of the 2-pt estimates against the exact one.

    Exact: Cov(Ĝ_s, Ĝ_t) = (G_{s∪t} - G_s G_t) / n from the exact 4-point function. The
    tolerance is the standard error of the sampled covariance,
    sqrt(Var[(X_s - μ_s)(X_t - μ_t)] / n) / n with X_s = f(x_a) f(x_b), computed from
    exact moments up to order 8 (Gauss-net's oracle goes to 12).
    """
    net, X = ENSEMBLES["gauss"]
    width, stats = 2, run("gauss", 2)
    n = stats.n_nets(width)
    k = len(X)
    G = {m: exact_correlator_tuples(net, X, width, m) for m in (2, 4, 6, 8)}
    rows = {m: {tuple(r): i for i, r in enumerate(distinct_tuples(k, m).tolist())}
            for m in G}

    def moment(*idx):
        idx = tuple(sorted(i for t in idx for i in t))
        return G[len(idx)][rows[len(idx)][idx]] if idx else 1.0

    obs = [t for _, t in observable_rows(k, (2,))]
    cov = stats.covariance(width, orders=(2,))
    worst = 0.0
    for i, s in enumerate(obs):
        for j, t in enumerate(obs[i:], start=i):
            mu_s, mu_t = moment(s), moment(t)
            c = moment(s, t) - mu_s * mu_t
            # E[(X_s - μ_s)^2 (X_t - μ_t)^2], expanded into raw moments.
            e22 = (moment(s, s, t, t) - 2 * mu_t * moment(s, s, t) + mu_t**2 * moment(s, s)
                   - 2 * mu_s * moment(s, t, t) + 4 * mu_s * mu_t * moment(s, t)
                   - 2 * mu_s * mu_t**2 * mu_s + mu_s**2 * moment(t, t)
                   - 2 * mu_s**2 * mu_t * mu_t + mu_s**2 * mu_t**2)
            se = np.sqrt((e22 - c**2) / n) / n
            worst = max(worst, abs(cov[i, j] - c / n) / se)
    assert worst < Z_MAX


# Small runs below share one ensemble, input count, width and batch size, so they share
# compiled steps.
SMALL_NET, SMALL_X, SMALL_N = nngp_ppl.GaussNet(sigma_w=0.5, sigma_b=0.3), [0.0, 0.5, 1.0], 7


def small_run(n_nets, batch_size=1000, seed=2, **kw):
    return sample_correlators(SMALL_NET, SMALL_X, SMALL_N, n_nets, seed=seed,
                              batch_size=batch_size, progress=False, **kw)


def brute_force_observables(n_nets, seed=2, orders=(2, 4, 6)):
    """Products over the distinct tuples, from SingleLayerNet.sample_outputs.

    The same seed and network index give the same network, so these are the sampler's
    networks (float32 outputs, like the sampler's).
    """
    f = SMALL_NET.sample_outputs(seed, SMALL_X, SMALL_N, n_nets).astype(np.float64)
    return {n: np.prod(f[:, distinct_tuples(len(SMALL_X), n)], axis=2) for n in orders}, f


def test_sums_equal_brute_force_over_the_same_networks():
    obs, f = brute_force_observables(1000)
    stats = small_run(1000)
    for m, sums in stats.moment_sums(SMALL_N).items():  # orders 2..12
        brute = np.prod(f[:, distinct_tuples(3, m)], axis=2).sum(axis=0)
        np.testing.assert_allclose(sums, brute, rtol=1e-5)
    cheap = small_run(1000, covariance=False)
    assert cheap.accumulated_orders == (2, 4, 6) and not cheap.has_covariance
    for n in (2, 4, 6):
        np.testing.assert_allclose(cheap.moment_sums(SMALL_N)[n], obs[n].sum(axis=0),
                                   rtol=1e-5)
        np.testing.assert_allclose(cheap.square_sums(SMALL_N)[n], (obs[n] ** 2).sum(axis=0),
                                   rtol=1e-5)
        np.testing.assert_allclose(cheap.stderr_tuples(n, SMALL_N),
                                   stats.stderr_tuples(n, SMALL_N), rtol=1e-6)


def test_covariance_equals_brute_force_outer_products():
    # The monomial bookkeeping against the textbook estimate: np.cov of the observable
    # vectors (3 inputs: 6 + 15 + 28 = 49 products per network), divided by n.
    obs, _ = brute_force_observables(1000)
    obs = np.concatenate([obs[n] for n in (2, 4, 6)], axis=1)
    stats = small_run(1000)
    np.testing.assert_allclose(stats.mean_vector(SMALL_N), obs.mean(axis=0), rtol=1e-5)
    brute = np.cov(obs, rowvar=False) / len(obs)
    scale = np.abs(brute).max()
    np.testing.assert_allclose(stats.covariance(SMALL_N), brute, rtol=1e-4, atol=1e-6 * scale)
    np.testing.assert_allclose(stats.covariance(SMALL_N, orders=(4,)), brute[6:21, 6:21],
                               rtol=1e-4, atol=1e-6 * scale)
    assert [o for o, _ in stats.observables()] == [2] * 6 + [4] * 15 + [6] * 28


def test_covariance_diagonal_is_stderr_squared():
    stats = run("relu", 10)
    diag = np.concatenate([stats.stderr_tuples(n, 10) ** 2 for n in (2, 4, 6)])
    np.testing.assert_allclose(np.diag(stats.covariance(10)), diag, rtol=1e-10)


@pytest.mark.parametrize(("k", "orders"), [(6, (2, 4, 6)), (3, (2, 6)), (2, (4,)), (1, (2, 4, 6)),
                                         (4, (6,))])
def test_monomial_kernel_against_float64_brute_force(k, orders):
    """One chunk of the kernel against exact float64 products, orders 2..2 max(orders).

    Outputs span 1e-4..1e4 across inputs (plus one all-zero input and zero rows, like a
    masked batch): unscaled float32 order-12 products of these overflow and underflow, so
    this checks the power-of-two scaling. Bounds (_shard docstring): the materialised
    orders are float64, |err| <= 1e-13 sum|terms|; the covariance-only orders are float32
    sums of C terms, |err| <= (C + 2) u sum|terms| with u = 2^-24; the tail sums X^3, X^4
    are float32 too, (C + 4) u sum|terms| (one more rounding per power).
    """
    import jax
    import jax.numpy as jnp

    C = 128
    rng = np.random.default_rng(k)
    scales = np.logspace(-4, 4, k) if k > 1 else np.array([1e3])
    F = rng.standard_normal((k, C)) * scales[:, None]
    F = F.astype(np.float32).astype(np.float64)  # the sampler's outputs are float32
    F[:, -3:] = 0.0  # masked rows
    if k >= 4:
        F[1] = 0.0  # an input whose outputs vanish (binary exponent of 0)
    plan = _shard.StepPlan(k, orders, True)
    moments, products, _, tails = jax.jit(lambda F: _shard.monomial_sums(F, plan))(
        jnp.asarray(F))
    got = _shard._assemble_moments(plan, moments, products)
    for n, tail in zip(orders, tails, strict=True):  # float32: (C + 4) u sum|terms|
        X = np.prod(F.T[:, distinct_tuples(k, n)], axis=2)
        for row, p in enumerate((3, 4)):
            bound = (C + 4) * 2.0**-24 * np.sum(np.abs(X) ** p, axis=0)
            assert np.all(np.abs(np.asarray(tail)[row] - np.sum(X**p, axis=0)) <= bound)
    assert tuple(got) == plan.accumulated
    for m, sums in got.items():
        terms = np.prod(F.T[:, distinct_tuples(k, m)], axis=2)
        exact, size = terms.sum(axis=0), np.abs(terms).sum(axis=0)
        rel = 1e-13 if m <= max(orders) else (C + 2) * 2.0**-24
        assert np.all(np.abs(sums - exact) <= rel * size), m
    if k == 6:  # the case the scaling is for: unscaled float32 products leave the range
        with np.errstate(over="ignore", under="ignore"):
            f32 = np.prod(F.T.astype(np.float32)[:, distinct_tuples(k, 12)], axis=2)
        assert np.isinf(f32).any() and ((f32 == 0) & (terms != 0)).any()


def test_same_seed_same_sums_whatever_the_batch_size():
    # 3000 is a multiple of neither: both runs end with a masked partial batch. Network j
    # is the same network in both; XLA may sum its N neurons in another order for another
    # batch shape, so outputs agree to float32 round-off (not bit for bit).
    a, b = small_run(3000, batch_size=256), small_run(3000, batch_size=1000)
    for m, s in a.moment_sums(SMALL_N).items():
        np.testing.assert_allclose(s, b.moment_sums(SMALL_N)[m], rtol=1e-6)
    c = small_run(3000, seed=3)
    assert not np.allclose(c.moment_sums(SMALL_N)[2], b.moment_sums(SMALL_N)[2], rtol=1e-3)


def test_disjoint_runs_merge_into_one_big_run():
    big = small_run(3000)
    first, rest = small_run(1000), small_run(2000, start=1000)
    merged = rest.merge(first)
    assert merged.n_nets(SMALL_N) == 3000 and merged.network_ranges(SMALL_N) == ((0, 3000),)
    _, f = brute_force_observables(3000)
    for m, s in big.moment_sums(SMALL_N).items():
        if m <= 6:  # the measured orders: float64 products, equal up to summation order
            np.testing.assert_allclose(merged.moment_sums(SMALL_N)[m], s, rtol=1e-12)
        else:
            # Covariance-only orders are float32 products summed per chunk of C networks
            # (the XLA kernel, _shard docstring) or per block of 16 (the C kernel,
            # _native docstring); the two runs cut the networks differently, so each may
            # be off by the float32 bound (C + 2) u sum|terms| (the larger of the two) and
            # the difference by twice that.
            terms = np.abs(np.prod(f[:, distinct_tuples(len(SMALL_X), m)], axis=2)).sum(0)
            bound = 2 * (_shard.CHUNK + 2) * 2.0**-24 * terms
            assert np.all(np.abs(merged.moment_sums(SMALL_N)[m] - s) <= bound)
    with pytest.raises(NNGPInputError, match="counted twice"):
        merged.merge(first)


def test_heavy_tailed_gauss_net_naive_errors_understate_the_spread():
    """physics.md §4: at σ_W = σ_b = 1 Gauss-net products are log-normal and heavy-tailed.

    100 independent replicates of 2000 networks (disjoint index ranges) at N = 2, one
    input, z = (Ĝ - G_exact)/stderr per replicate. Both bands are derived from what a
    well-behaved estimate does, z ~ N(0, 1):

    * the median of 100 z's has standard error sqrt(π/2)/10 = 0.125; the band is 4 of
      them, |median| < 0.50 (a well-behaved run leaves it with probability 6e-5);
    * |z| > 3 has probability p = 2Φ(-3) = 0.0027 per replicate, so the count of such
      replicates is Binomial(100, p); the band is the count a well-behaved run exceeds
      with probability below 1e-4 (4 of 100).

    The 2-pt function, and the 4-pt function at the tame σ_W = 0.5, σ_b = 0.3, stay in both
    bands. The 4-pt function at σ = 1 leaves both, on the side the physics says: the rare
    draws that carry its mean are missing from most replicates, which then sit below the
    exact value (median z below the band) by many naive standard errors (too many |z| > 3).
    """
    X, width, n, reps = [[0.01]], 2, 2000, 100
    median_band = 4 * np.sqrt(np.pi / 2) / np.sqrt(reps)
    p_tail = 2 * scipy.stats.norm.sf(3)
    tail_band = scipy.stats.binom.isf(1e-4, reps, p_tail) / reps

    def z_scores(net, order):
        exact = exact_correlator_tuples(net, X, width, order)[0]
        out = []
        for r in range(reps):
            m, sq = network_sums(net, X, width, 0, r * n, n, orders=(2, 4),
                                 covariance=False, batch_size=n)
            mean = m[order][0] / n
            stderr = np.sqrt((sq[order][0] - m[order][0] ** 2 / n) / (n - 1) / n)
            out.append((mean - exact) / stderr)
        return np.array(out)

    def well_behaved(z):
        return abs(np.median(z)) < median_band and np.mean(np.abs(z) > 3) <= tail_band

    heavy = nngp_ppl.GaussNet(sigma_w=1.0, sigma_b=1.0)
    z4 = z_scores(heavy, 4)
    assert np.median(z4) < -median_band
    assert np.mean(np.abs(z4) > 3) > tail_band
    assert well_behaved(z_scores(heavy, 2))
    assert well_behaved(z_scores(nngp_ppl.GaussNet(sigma_w=0.5, sigma_b=0.3), 4))


@pytest.mark.parametrize("net", [nngp_ppl.ErfNet(d_in=2, sigma_w=1.3),
                                 nngp_ppl.ReLUNet(d_in=3), nngp_ppl.GaussNet(d_in=2)])
def test_forward_pass_stays_in_float32(net):
    # The sampler's speed rests on a float32 forward pass: a float64 constant anywhere in
    # it would promote the whole batch under x64 (measured 3x slower on CPU).
    import jax

    from nngp_ppl.ensembles.core import network_keys

    X = np.ones((4, net.d_in))
    jaxpr = jax.make_jaxpr(lambda s: net.network_outputs(network_keys(s, 5, 0, 3), X, 5))(0)
    assert "f64" not in str(jaxpr)


def test_default_batch_size_shrinks_with_width_within_bounds():
    sizes = [default_batch_size(w, 6) for w in (1, 10, 100, 1000, 10_000, 10**7)]
    assert all(8 <= b <= 4096 and b % 8 == 0 for b in sizes)
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > sizes[-1] == 8
    # Working memory of the forward pass stays near 16 MiB where the bounds allow it.
    assert 8 * 2**20 < sizes[2] * 4 * 100 * (1 + 2 + 18) <= 16 * 2**20


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
GOOD = dict(net=nngp_ppl.ErfNet(), X=[0.0, 1.0], widths=[3], n_nets=10)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"widths": [0]}, "widths"),
        ({"widths": []}, "widths"),
        ({"widths": [2.5]}, "widths"),
        ({"n_nets": 0}, "n_nets"),
        ({"n_nets": -5}, "n_nets"),
        ({"X": []}, "X"),
        ({"X": [[0.0, 1.0], [1.0]]}, "X"),
        ({"X": [0.0, np.nan]}, "X"),
        ({"X": [0.0, np.inf]}, "X"),
        ({"X": [[0.0, 1.0], [1.0, 2.0]]}, "X"),  # d_in = 2 points for a d_in = 1 ensemble
        ({"X": "abc"}, "X"),
        ({"orders": (0,)}, "orders"),  # odd orders are measured now (1..6)
        ({"orders": (2, 8)}, "orders"),
        ({"orders": ()}, "orders"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"batch_size": 0}, "batch_size"),
        ({"net": "erf"}, "net"),
        ({"start": -1}, "start"),
        ({"covariance": "yes"}, "covariance"),
    ],
)
def test_bad_arguments_raise_one_clear_error(change, match):
    kwargs = {**GOOD, "progress": False, **change}
    with pytest.raises(NNGPInputError, match=match):
        sample_correlators(**kwargs)


def test_bad_ensembles_raise_clear_errors():
    with pytest.raises(NNGPInputError, match="sigma_w"):
        nngp_ppl.ErfNet(sigma_w=-1.0)
    with pytest.raises(NNGPInputError, match="sigma_b"):
        nngp_ppl.GaussNet(sigma_b=-0.1)
    with pytest.raises(NNGPInputError, match="ensemble"):
        nngp_ppl.make_ensemble("swish")  # tanh is an ActivationNet now
    with pytest.raises(NNGPInputError, match="preset"):
        nngp_ppl.paper_inputs("erf", d_in=5)


def test_too_many_monomials_is_refused_with_a_way_out():
    X = np.linspace(-1, 1, 20)
    with pytest.raises(NNGPInputError, match="covariance=False"):
        sample_correlators(nngp_ppl.ErfNet(), X, 3, 10, progress=False)
