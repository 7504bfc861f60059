r"""The effective action along training: the trained ensemble expanded around its learned
1-pt function at every recorded step, the f -> -f test per step, and the couplings' flow
in training time (issue 20, part 3), as :mod:`nngp_ppl.inference.flow` follows them in
:math:`\log\Lambda`.

Expansion around the learned mean
---------------------------------
Supervised training learns the 1-pt function :math:`\langle f\rangle_t`. Write
:math:`f = \langle f\rangle_t + \phi` (docs/physics.md §6b, the centred convention). At
each step :math:`t` and width N this module gives, from the sampled sums
(:class:`~nngp_ppl.training.trainer.TrainedCorrelators`):

* the connected correlators :math:`\kappa_n` (joint cumulants, n = 2..6;
  :meth:`~nngp_ppl.CorrelatorStats.connected`) and the centred moments
  :math:`C_n(t) = E\prod_{a\in t}(f(x_a) - \langle f(x_a)\rangle)`, by the binomial
  expansion :math:`C_n(t) = \sum_{S\subseteq t} G_{S} \prod_{a\in t\setminus S}
  (-G_1(x_a))` (:func:`centred_map`, :mod:`nngp_ppl.inference.centring`), both with the delta-method
  covariance :math:`J\Sigma J^T` of the moment estimates;
* the learned mean against the infinite-width oracle :math:`\mu_t`
  (:func:`nngp_ppl.theory.ntk.training_oracle`): :math:`z = (\hat G_1 - \mu_t)/\mathrm{se}`,
  and what finite width adds, :math:`\delta_t = \hat G_1 - \mu_t`, its rms over inputs per
  width and the log-log slope of that rms over the widths (−1 for a 1/N correction; the
  statistical background, the rms standard error, is stored beside it: a deviation inside
  it has no measurable slope).

Which null for the symmetry test
--------------------------------
Two hypotheses, both tested at every step:

* **raw**, :math:`f \to -f` of the whole distribution: every odd moment vanishes
  (:func:`nngp_ppl.inference.symmetry.parity_test` on :math:`G_1, G_3`). Once training has
  learned a non-zero mean this rejects for a trivial reason: :math:`\mu_t \ne 0` already at
  infinite width, where the ensemble is still a Gaussian process. It says that the mean is
  learned, not that the fluctuations became non-Gaussian.
* **centred**, :math:`\phi \to -\phi` of the fluctuations around the learned mean: every odd
  *centred* moment vanishes (:math:`C_3 = \kappa_3`, optionally :math:`C_5`). This is the
  null that matters for the effective action expanded around the mean: under it the odd
  couplings of :math:`S[\langle f\rangle + \phi]` vanish (g₃ = 0), and at N → ∞ it holds at
  every step (the trained ensemble stays Gaussian). The symmetry is said to *break* at the
  first recorded step where the centred test rejects. It is the verdict stored as
  ``parity_reject`` and drawn in the symmetry figure.

The centred statistic mirrors :func:`~nngp_ppl.inference.symmetry.parity_test`: a Wald
statistic :math:`W = \hat c^T \Sigma_0^+ \hat c` on the odd centred moments :math:`\hat c`,
with the covariance under the null, :math:`\Sigma_0 = J\hat\Sigma J^T + \hat c\hat c^T/n`
(the influence functions' second moments with the odd centred moments set to zero, as the
raw test uses uncentred second moments), scaled to unit diagonal, pseudo-inverted above
``rcond`` and referred to :math:`\chi^2` on the kept rank. By Sherman–Morrison it is
:math:`W = W_H/(1 + W_H/n)` of the Hotelling form :math:`W_H`: self-normalised, bounded by n.
Calibration (``benchmarks/training_symmetry.py``, docs/training_flow.md): false-positive
rate at the 5% level 0.043 ± 0.006 over 1000 seeds of the untrained Erf-net (N = 8, 2000
networks) and 0.041 ± 0.006 over 1000 seeds of the N → ∞ trained ensemble (Gaussian with
the learned mean μ₄₀ ≠ 0, where the raw test rejects every time).

Couplings per step
------------------
With the trained covariance :math:`\Sigma_t` of the oracle as the propagator
(:class:`~nngp_ppl.theory.trained_kernel.TrainedKernel`, the lattice integrals over the
cutoff box :math:`[-\Lambda, \Lambda]^{d_{in}}`), the centred theory of
:func:`nngp_ppl.inference.centred.build_theory` (its ``kernel_net`` is :math:`\Sigma_t`) gives the
first-order designs of the centred moments (``centred=True`` diagrams, rule 4.5: the
propagator is taken as the exact 2-pt function); for the basis (g₃, λ) they are

.. math:: \Delta C_3 = -6\, g_3 \int_{box} \Sigma_{1y}\Sigma_{2y}\Sigma_{3y},\qquad
    \Delta C_4 - \mathrm{Wick}(C_2) = -24\,\lambda \int_{box}
    \Sigma_{1y}\Sigma_{2y}\Sigma_{3y}\Sigma_{4y},

fitted to the observed :math:`r = (\hat\kappa_3, \hat\kappa_4)`: the centred 3-pt moment
and the centred 4-pt moment minus the Wick sums of the *measured* centred 2-pt function
(so the O(1/N) deviation of the trained covariance from :math:`\Sigma_t` does not enter
λ). The coupling is a declared estimand in the form of :mod:`nngp_ppl.inference.problem`'s,
:math:`g^* = B r`, :math:`B = (A^TA)^{-1}A^TS^{-1}`, :math:`A = S^{-1}D`, with one
change: the scales :math:`s_t` are one per order, the rms over that order's tuples of the
sensitivity :math:`|D_{t c}|` (least squares within each order; :func:`row_scales`),
instead of each tuple's own :math:`|D_{t c}|` (whose estimand, for one coupling per order,
is the paper's mean of :math:`r_t/D_{tc}` over tuples). The trained propagator changes
sign: :math:`\Sigma_t(x_a, y)` of a test input near the training points is small and
crosses zero in y, so a tuple's vertex integral can pass through zero at some step, and
:math:`r_t/D_{tc}` with it (measured on the example of ``benchmarks/training_symmetry.py``:
per-tuple scales gave g₃ = 173 ± 15 at step 2, N = 8, with a per-tuple spread τ = 530,
where the weighted fit gave 0.11). The per-tuple estimand stays available
(``fit_step(..., scales="tuple")``). Its posterior under a flat prior on the noise-free
:math:`r` and the normal likelihood with the delta-method covariance :math:`C` of :math:`\hat r` is
exactly normal, :math:`g^* \sim \mathcal N(B\hat r, BCB^T)`: the median and sd are stored,
with a central 90% band (``band``): by default the *score* band, the values
:math:`g_0` with :math:`|\hat g - g_0| \le q\,sd(g_0)`, the delta-method covariance taken
at the tested value (:func:`score_covariance`, :func:`fit_step`'s ``cov_at``), because
the Wald band :math:`B\hat r \pm q\,sd` divides the error of :math:`\hat\kappa_4` by an
sd that moves with :math:`\hat\kappa_4` itself. Their coverage of the noise-free
:math:`g^*` of the trained ensemble (a 4·10⁶-network reference run;
``benchmarks/training_symmetry.py trained-coverage``, docs/training_flow.md; Erf-net N = 8,
32, steps 0–50, 1000 seeds of 2000 networks): score band g₃ 0.874–0.911, λ 0.872–0.912
(mean z −0.08 … +0.24); the Wald band's λ 0.816–0.895 (mean z up to +0.44: the error
correlated with the stated sd, corr −0.64 … −0.86, at a mean error within 0.13 of the
seed-to-seed spread); at 8000 networks score λ 0.875–0.910, Wald 0.877–0.910. The point
fit beside it is the inverse-variance weighted least-squares fit
:math:`(D^TWD)^{-1}D^TW\hat r`, :math:`W = \mathrm{diag}(1/C_{tt})`
(the generalised least squares with the full :math:`C^{-1}` was tried and is unstable: the
sampled covariance of a few hundred strongly correlated tuples is near-singular). It weighs
the tuples differently from the estimand, so the two differ by more than noise where one
coupling per order does not describe every tuple: that model discrepancy is
``coupling_tau``, the rms of :math:`(r_t - D_t g^*)/s_t` over tuples in coupling units.
Only g₃ and λ are fitted: κ and g₅ would need the centred 5- and 6-pt designs with their
disconnected pieces, which this first-order module does not build.
"""

from __future__ import annotations

import functools
import itertools
import json
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from scipy import stats as _sps

from .. import _checks
from .. import tuples as _tuples
from .._checks import NNGPInputError
from .._version import __version__
from ..sampling.stats import CorrelatorStats, cumulants_with_jacobian, square_index
from ..theory.lattice import check_box
from ..theory.ntk import training_oracle
from ..theory.trained_kernel import TrainedKernel
from ..training.comparison import FLOW_FORMAT
from ..training.trainer import TrainedCorrelators
from . import centred as _centred
from . import centring as _centring
from .problem import coupling_names
from .symmetry import RCOND, parity_test

__all__ = ["BAND_COVARIANCES", "FLOW_FORMAT", "INTERVAL", "ROUNDING_LIMIT",
           "TRAINING_COUPLINGS", "CentredParityTest", "band_covariance", "model_covariance",
           "model_moments", "rounding_ratio", "score_covariance",
           "centred_map", "centred_parity_test", "expansion_block", "fit_step", "row_scales",
           "step_theory", "training_flow"]

#: The couplings this module fits along training (module docstring).
TRAINING_COUPLINGS = ("g3", "lambda")
#: Correlator orders a training-flow analysis needs recorded.
REQUIRED_ORDERS = (1, 2, 3, 4)
#: Central interval of the stored coupling bands.
INTERVAL = 0.90


# ---------------------------------------------------------------------------------------------
# centred moments and joint covariances
# ---------------------------------------------------------------------------------------------
def centred_map(k: int, orders, top: int):
    r"""Pure JAX map: raw moments of orders 1..``top`` concatenated (distinct tuples) ->
    the centred moments of ``orders`` concatenated, by the binomial expansion
    :math:`C_n(t) = \sum_{S\subseteq t} G_{t_S}\prod_{a\notin S}(-G_1(x_a))` of
    ``nngp_ppl.inference.centring.centred_moments`` (the one home of the centred moments); its
    Jacobian by ``jax.jacfwd``."""
    cuts = np.cumsum([0] + [len(_tuples.distinct_tuples(k, m)) for m in range(1, top + 1)])

    def fn(vec):
        raw = {m: vec[cuts[m - 1]:cuts[m]] for m in range(1, top + 1)}
        return jnp.concatenate([jnp.atleast_1d(_centring.centred_moments(raw, k, n))
                                for n in orders])

    return fn


@functools.lru_cache(maxsize=32)
def _centred_values_and_jacobian(k: int, orders: tuple[int, ...], top: int):
    """Compiled ``vec -> (centred moments, Jacobian)`` of :func:`centred_map`."""
    fn = centred_map(k, orders, top)
    return jax.jit(lambda vec: (fn(vec), jax.jacfwd(fn)(vec)))


def _moment_estimates(stats: CorrelatorStats, width: int, top: int):
    """Moments of orders 1..top of the shifted outputs f - r the sums hold
    (:meth:`~nngp_ppl.CorrelatorStats.shift`; r = 0 for sampled runs): every centred moment
    and connected function of order >= 2 is the same for f - r as for f, and computed from
    these no digits cancel where the spread of f is far below its mean."""
    count = stats.n_nets(width)
    sums = stats.shifted_moment_sums(width)
    return {m: sums[m] / count for m in range(1, top + 1)}


def _check_orders(stats: CorrelatorStats, top: int):
    missing = [m for m in range(1, top + 1) if m not in stats.orders]
    if missing:
        raise NNGPInputError(
            f"trained: expanding around the learned mean needs the correlators of every order "
            f"1..{top} (odd ones included: the mean is no longer zero), but orders {missing} "
            f"were not recorded (recorded: {stats.orders}); train with orders=(1, 2, ..., 6)")
    if not stats.has_covariance:
        raise NNGPInputError("trained: the errors need a run with covariance=True")


def _expansion(stats: CorrelatorStats, width: int, orders, kind: str, memo=None):
    """(values, covariance, blocks, J, top) of :func:`expansion_block`; ``memo``: a dict
    that keeps them per (width, orders, kind) for one ``stats`` (:func:`training_flow`
    asks for the same block up to four times per step and width: its values, its rounding
    ratio, the symmetry test and the test's own ratio; the centred 6-pt block alone cost
    0.24 s per call at XLA optimisation level 0)."""
    orders = tuple(int(n) for n in orders)
    if memo is not None:
        key = (int(width), orders, kind)
        if key not in memo:
            memo[key] = _expansion(stats, width, orders, kind)
        return memo[key]
    top = max(orders)
    _check_orders(stats, top)
    moments = _moment_estimates(stats, width, top)
    sigma = stats.shifted_covariance(width, tuple(range(1, top + 1)))
    blocks = tuple(len(_tuples.distinct_tuples(stats.k, n)) for n in orders)
    if kind == "centred":
        vec = jnp.asarray(np.concatenate([moments[m] for m in range(1, top + 1)]))
        values, J = (np.asarray(a) for a in
                     _centred_values_and_jacobian(stats.k, orders, top)(vec))
        return values, J @ sigma @ J.T, blocks, J, top
    values, jacs = [], []
    for n in orders:
        v, J = cumulants_with_jacobian({m: moments[m] for m in range(1, n + 1)}, stats.k, n)
        values.append(v + stats.shift(width) if n == 1 else v)
        jacs.append(np.pad(J, ((0, 0), (0, sigma.shape[0] - J.shape[1]))))
    J = np.concatenate(jacs)
    return np.concatenate(values), J @ sigma @ J.T, blocks, J, top


# ---------------------------------------------------------------------------------------------
# the coupling band's covariance from the measured cumulants up to order 4
# ---------------------------------------------------------------------------------------------
#: The coupling bands :func:`training_flow` offers (its ``band``): ``"score"``, the interval
#: that inverts the z test with the covariance at the tested value (:func:`fit_step`'s
#: ``cov_at``, :func:`score_covariance`); ``"sample"``, ``"gaussian"``, ``"cumulants4"``:
#: the Wald interval :math:`B\hat r \pm q\,sd` with :func:`band_covariance`'s covariance.
BAND_COVARIANCES = ("score", "sample", "gaussian", "cumulants4")


@functools.lru_cache(maxsize=8)
def _partition_shapes(d: int) -> dict:
    """The set partitions of ``range(d)`` into blocks of sizes 2..4 (a centred moment has no
    singleton; cumulants above order 4 are zero in the model), grouped by their block sizes
    (in decreasing order): ``{sizes: (P, d) positions, block after block}``."""
    out: dict = {}

    def rec(rest, blocks):
        if not rest:
            blocks = sorted(blocks, key=len, reverse=True)
            out.setdefault(tuple(len(b) for b in blocks), []).append(
                [i for b in blocks for i in b])
            return
        first, others = rest[0], rest[1:]
        for size in (2, 3, 4):
            for comb in itertools.combinations(others, size - 1):
                rec([x for x in others if x not in comb], blocks + [(first, *comb)])

    rec(list(range(d)), [])
    return {sizes: np.asarray(pos, np.int64) for sizes, pos in out.items()}


@functools.lru_cache(maxsize=8)
def _monomial_plan(k: int, top: int):
    """The distinct monomials E prod(phi) that the moment covariance of orders 1..top needs:
    (pair index (T, T), single index (T,), {degree: (monomial ids, (M_d, d) labels)}, count)
    over the concatenated distinct tuples of orders 1..top."""
    rows = [tuple(t) for m in range(1, top + 1) for t in _tuples.distinct_tuples(k, m)]
    ids: dict = {}
    single = np.asarray([ids.setdefault(t, len(ids)) for t in rows])
    pair = np.asarray([[ids.setdefault(tuple(sorted(s + t)), len(ids)) for t in rows]
                       for s in rows])
    groups: dict = {}
    for mono, i in ids.items():
        groups.setdefault(len(mono), []).append((i, mono))
    plan = {d: (np.asarray([i for i, _ in g]), np.asarray([m for _, m in g], np.int64))
            for d, g in groups.items()}
    return pair, single, plan, len(ids)


def _full_tensor(values, k: int, n: int) -> np.ndarray:
    """The symmetric (k,)*n tensor of a function given on the distinct n-tuples."""
    lookup = {tuple(t): i for i, t in enumerate(_tuples.distinct_tuples(k, n))}
    index = np.asarray([lookup[tuple(sorted(t))] for t in itertools.product(range(k), repeat=n)])
    return np.asarray(values, np.float64)[index].reshape((k,) * n)


def model_moments(k: int, top: int, kappa2, kappa3=None, kappa4=None):
    r"""Centred moments :math:`E\prod_{a\in m}\phi_a` of every monomial m of degree 2..2·top
    in k variables, for the distribution whose joint cumulants are ``kappa2``, ``kappa3``,
    ``kappa4`` (on the distinct tuples; None: zero) and zero above order 4: the sum over
    the set partitions of m into blocks of sizes 2..4 of the product of the blocks'
    cumulants (Leonov & Shiryaev; with κ₃ = κ₄ = 0 it is Isserlis' theorem, the Wick sum).
    Returns ``(moments, pair, single)``: the (M,) values, indexed by
    ``pair[i, j]`` for the product of distinct tuples i and j of orders 1..top
    (concatenated) and by ``single[i]`` for tuple i alone (degree 1: zero)."""
    pair, single, plan, count = _monomial_plan(k, top)
    K = {2: _full_tensor(kappa2, k, 2),
         3: None if kappa3 is None else _full_tensor(kappa3, k, 3),
         4: None if kappa4 is None else _full_tensor(kappa4, k, 4)}
    out = np.zeros(count)
    for d, (ids, labels) in plan.items():
        if d < 2:
            continue
        total = np.zeros(len(ids))
        for sizes, pos in _partition_shapes(d).items():
            if any(K[b] is None for b in sizes):
                continue
            L = labels[:, pos]                      # (M_d, P, d)
            prod, o = np.ones(L.shape[:2]), 0
            for b in sizes:
                prod = prod * K[b][tuple(L[..., o + i] for i in range(b))]
                o += b
            total += prod.sum(-1)
        out[ids] = total
    return out, pair, single


def model_covariance(k: int, n: int, orders, kappa2, kappa3=None, kappa4=None) -> np.ndarray:
    r"""The delta-method covariance :math:`J\Sigma_M J^T/n` of the sample connected functions
    of ``orders`` (among 2..4; concatenated) for the model distribution of
    :func:`model_moments` (cumulants ``kappa2``, ``kappa3``, ``kappa4``, zero above order 4):
    :math:`\Sigma_M[s, t] = M_{s\cup t} - M_s M_t` over the tuples of orders 1..4, J the
    Jacobian of the cumulants with respect to the moments at the model's (zero-mean:
    connected functions are invariant under a shift) moments. With ``kappa3 = kappa4 =
    None`` it is the Gaussian (Wick) covariance of the k-statistics, :math:`n\,
    \mathrm{Cov}(k_{abcd}, k_{efgh}) = \sum_{\pi\in S_4}\prod_i \kappa_{a_i e_{\pi(i)}}`
    (McCullagh 1987, §4.2)."""
    orders = tuple(int(o) for o in orders)
    top = max(orders)
    mom, pair, single = model_moments(k, top, kappa2, kappa3, kappa4)
    sigma = (mom[pair] - np.outer(mom[single], mom[single])) / n
    cuts = np.cumsum([0] + [len(_tuples.distinct_tuples(k, m)) for m in range(1, top + 1)])
    moments = {m: mom[single[cuts[m - 1]:cuts[m]]] for m in range(1, top + 1)}
    jacs = []
    for order in orders:
        J = cumulants_with_jacobian({m: moments[m] for m in range(1, order + 1)}, k, order)[1]
        jacs.append(np.pad(J, ((0, 0), (0, sigma.shape[0] - J.shape[1]))))
    J = np.concatenate(jacs)
    return J @ sigma @ J.T


def band_covariance(stats: CorrelatorStats, width: int, orders=(3, 4),
                    method: str = "cumulants4", memo=None) -> np.ndarray:
    r"""Covariance of the connected functions of ``orders`` (3 and 4) for the coupling band.

    ``"sample"``: the delta method :math:`J\hat\Sigma J^T` with :math:`\hat\Sigma` the
    sampled covariance of the moments (:func:`expansion_block`; moments up to order 8).
    ``"gaussian"``, ``"cumulants4"``: :func:`model_covariance` of the measured
    :math:`\hat\kappa_2` (Isserlis: the Wick sums of the measured centred 2-pt function)
    or of the measured :math:`\hat\kappa_2, \hat\kappa_3, \hat\kappa_4`, zero above
    order 4. ``memo``: :func:`_expansion`'s."""
    orders = tuple(int(n) for n in orders)
    if method not in ("sample", "gaussian", "cumulants4"):
        raise NNGPInputError(f"method must be 'sample', 'gaussian' or 'cumulants4', "
                             f"got {method!r}")
    if method == "sample":
        return _expansion(stats, width, orders, "connected", memo)[1]
    if max(orders) > 4:
        raise NNGPInputError(f"method={method!r} models the moments from the cumulants up "
                             f"to order 4; orders {orders} need more")
    kap = {n: _expansion(stats, width, (n,), "connected", memo)[0] for n in (2, 3, 4)}
    if method == "gaussian":
        return model_covariance(stats.k, stats.n_nets(width), orders, kap[2])
    return model_covariance(stats.k, stats.n_nets(width), orders, kap[2], kap[3], kap[4])


def score_covariance(stats: CorrelatorStats, width: int, orders, memo=None):
    r"""``r -> C(r)`` of the score band (:func:`fit_step`'s ``cov_at``): the sampled
    delta-method covariance with its dependence on the fitted connected functions moved
    from the measured :math:`\hat r` to ``r``,
    :math:`C(r) = \hat C_{sample} + C_M(\hat\kappa_2, r) - C_M(\hat\kappa_2, \hat r)`,
    :math:`C_M` the :func:`model_covariance` of cumulants up to order 4. The delta-method
    covariance is a polynomial in the cumulants up to order 8 (one variable:
    :math:`n\,\mathrm{Var}\,k_4 = \kappa_8 + 16\kappa_6\kappa_2 + 48\kappa_5\kappa_3 +
    34\kappa_4^2 + 72\kappa_4\kappa_2^2 + 144\kappa_3^2\kappa_2 + 24\kappa_2^4`, Kendall &
    Stuart §12.14) in which :math:`\kappa_4` enters only with :math:`\kappa_2`,
    :math:`\kappa_3` and itself, the terms :math:`C_M` keeps, and :math:`\kappa_3` also in
    the :math:`\kappa_5\kappa_3` terms; so :math:`C(r)` is the sampled covariance with
    :math:`\hat\kappa_3, \hat\kappa_4` replaced by r except in those."""
    orders = tuple(int(n) for n in orders)
    k, n = stats.k, stats.n_nets(width)
    sample = _expansion(stats, width, orders, "connected", memo)[1]
    kap = {o: _expansion(stats, width, (o,), "connected", memo)[0] for o in (2, 3, 4)}
    sizes = [len(_tuples.distinct_tuples(k, o)) for o in orders]

    def split(r):
        parts = dict(zip(orders, np.split(np.asarray(r, np.float64), np.cumsum(sizes)[:-1]),
                         strict=True))
        return parts.get(3, kap[3]), parts.get(4, kap[4])

    here = model_covariance(k, n, orders, kap[2], kap[3], kap[4])

    def cov_at(r):
        k3, k4 = split(r)
        return sample + model_covariance(k, n, orders, kap[2], k3, k4) - here

    return cov_at


def expansion_block(stats: CorrelatorStats, width: int, orders, kind: str = "connected"):
    r"""Connected correlators (``kind="connected"``) or centred moments (``"centred"``) of
    several ``orders`` at once with their joint delta-method covariance.

    Returns ``(values, covariance, blocks)``: the concatenated values (Σ T_n,), their
    covariance :math:`J\Sigma J^T` with :math:`\Sigma` the sampled covariance of the
    moments of orders 1..max(orders), and the block sizes.
    """
    return _expansion(stats, width, orders, kind)[:3]


#: A variance whose expected float32 rounding error (:func:`rounding_ratio`) exceeds this
#: fraction of it is not computable from the stored sums.
ROUNDING_LIMIT = 0.1


def rounding_ratio(stats: CorrelatorStats, width: int, orders, kind: str = "connected"):
    r"""Per value of :func:`expansion_block`, the expected float32 rounding error of its
    delta-method variance divided by that variance.

    The accumulation kernels multiply float32 numbers in float32 and add the products in
    float64. Trained runs multiply the outputs shifted by a reference,
    :math:`g = \mathrm{fl}_{32}(f - r)` (:func:`nngp_ppl.training.trainer.reference_outputs`;
    r = 0 in sampled runs and version-1 trained files): a product of m factors carries at most
    m roundings of its factors and m − 1 of its partial products, a relative error
    :math:`\le \epsilon = 2m\,2^{-24}`, m up to 2·top. A covariance entry built from the sum
    of :math:`\prod_{s\cup t} g` over the n networks is then off by at most
    :math:`\epsilon\,E|\prod_s g \prod_t g|/n \le \epsilon\,U_{st}/n`,
    :math:`U_{st} = (Q_s Q_t)^{1/2}` with :math:`Q_s = \overline{(\prod_s g)^2}` (Cauchy–
    Schwarz, from the stored order-2|s| sums), and :math:`J\Sigma J^T` by at most
    :math:`\epsilon\,|J|\,U\,|J|^T/n`, J the Jacobian with respect to the moments of g
    (those the variance is computed from, :func:`expansion_block`). Round-to-nearest errors
    of different networks are independent, so a sum of n products is off by about
    :math:`\sqrt n` times one product's error, not n times: the estimate used here is the
    bound divided by :math:`\sqrt n`.

    Measured against the same float32 outputs multiplied in float64 (Erf-net, 4000
    networks, inputs and data of ``tests/test_training_flow.py``, learning rate 1, seed 11;
    largest relative error of the κ̂₃ / κ̂₄ variances over the tuples): with the shifted
    sums 6.3e-8 / 3.4e-7 (N = 16, step 5), 5.9e-8 / 1.5e-7 (step 20), 4.3e-8 / 7.1e-8 (step
    300), 4.6e-8 / 1.6e-7 (N = 128, step 300), where this estimate gives at most 7.9e-8 /
    2.7e-7, 1.1e-7 / 4.5e-7, 9.1e-8 / 3.6e-7 and 1.1e-7 / 4.4e-7 (per tuple the actual
    error was at most 0.5 to 4 times the estimate, by case; the worst-case bound is √n
    times the estimate); the unshifted sums (version-1 files) were off by 8.8e-5 / 5.1e-3,
    4.8e-4 / 0.093, 0.027 / 11 and 0.15 / 66 (the outputs' spread, 0.05–0.1, is far below their
    mean, 0.5–1, late in training, and the centred quantities cancelled many digits).
    Ratio ≥ :data:`ROUNDING_LIMIT` marks a variance as not computable from the stored sums.
    NaN where the variance is not positive (rounding has already destroyed it)."""
    return _rounding_ratio(stats, width, orders, kind)


def _rounding_ratio(stats, width, orders, kind, memo=None):
    _, cov, _, J, top = _expansion(stats, width, orders, kind, memo)
    count = stats.n_nets(width)
    sums = stats.shifted_moment_sums(width)
    k = stats.k
    Q = np.concatenate([sums[2 * m][square_index(k, m)] / count for m in range(1, top + 1)])
    U = np.sqrt(np.outer(Q, Q))
    bound = 4 * top * 2.0**-24 * np.einsum("ti,ij,tj->t", np.abs(J), U, np.abs(J)) / count
    floor = bound / np.sqrt(count)
    var = np.diag(cov)
    return np.divide(floor, var, out=np.full_like(var, np.nan), where=var > 0)


def _limited(ratio) -> bool:
    return bool(np.any(~(np.asarray(ratio) < ROUNDING_LIMIT)))


# ---------------------------------------------------------------------------------------------
# the centred symmetry test
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CentredParityTest:
    """Result of :func:`centred_parity_test`: the Wald statistic of the odd centred moments
    (module docstring), its degrees of freedom, p-value, verdict at ``alpha``, and the size
    of the odd connected 3-pt function: the largest and the rms of :math:`|\\kappa_3/se|`;
    ``rounding_limited``: some odd centred variance is within float32 rounding of the stored
    sums (:func:`rounding_ratio`), and then ``reject`` is False whatever p says."""

    statistic: float
    dof: int
    p_value: float
    alpha: float
    reject: bool
    width: int
    n_nets: int
    orders: tuple[int, ...]
    max_abs_z3: float
    rms_z3: float
    rounding_limited: bool = False

    @property
    def verdict(self) -> str:
        head = ("phi -> -phi rejected" if self.reject else "consistent with phi -> -phi")
        if self.rounding_limited:
            head = ("phi -> -phi not decidable (the variances of the odd centred moments are "
                    "below the float32 rounding of the stored sums)")
        return (f"{head} (phi = f - <f>) at the {self.alpha:.0%} level: Wald W = "
                f"{self.statistic:.3g} on {self.dof} degrees of freedom (odd centred orders "
                f"{list(self.orders)}, N = {self.width}, {self.n_nets} networks), "
                f"p = {self.p_value:.3g}; largest |kappa_3|/se = {self.max_abs_z3:.3g}")


def _wald(values, cov, n: int, rcond: float):
    """W, rank of the null-covariance Wald statistic (module docstring)."""
    null = cov + np.outer(values, values) / n
    scale = np.sqrt(np.clip(np.diag(null), 0.0, None))
    live = scale > 0
    if not np.any(live):
        raise NNGPInputError("stats: every odd centred correlator is exactly zero in every "
                             "network; there is nothing to test")
    z = values[live] / scale[live]
    corr = null[np.ix_(live, live)] / np.outer(scale[live], scale[live])
    vals, vecs = np.linalg.eigh(corr)
    keep = vals > rcond * vals[-1]
    proj = vecs[:, keep].T @ z
    return float(np.sum(proj**2 / vals[keep])), int(np.sum(keep))


def centred_parity_test(stats: CorrelatorStats, width, *, orders=(3,), alpha: float = 0.05,
                        rcond: float | None = None) -> CentredParityTest:
    r"""Test :math:`\phi \to -\phi` around the learned mean (every odd centred moment of
    ``orders``, 3 and optionally 5, zero) on sampled statistics (module docstring)."""
    orders, alpha, rcond = _parity_args(stats, orders, alpha, rcond)
    return _centred_parity(stats, int(width), orders, alpha, rcond)


def _parity_args(stats, orders, alpha, rcond):
    """The arguments of :func:`centred_parity_test`, checked."""
    if not isinstance(stats, CorrelatorStats):
        raise NNGPInputError(f"stats must be a CorrelatorStats, got {type(stats).__name__}")
    orders = tuple(int(n) for n in orders)
    if not orders or any(n not in (3, 5) for n in orders):
        raise NNGPInputError(f"orders must be odd centred orders among (3, 5), got {orders}")
    alpha = _checks.finite_float("alpha", alpha)
    if not 0 < alpha < 1:
        raise NNGPInputError(f"alpha must lie strictly between 0 and 1, got {alpha}")
    rcond = RCOND if rcond is None else _checks.finite_float("rcond", rcond)
    return orders, alpha, rcond


def _centred_parity(stats, width, orders, alpha, rcond, memo=None) -> CentredParityTest:
    values, cov, blocks = _expansion(stats, width, orders, "centred", memo)[:3]
    n = stats.n_nets(width)
    w, dof = _wald(values, cov, n, rcond)
    p = float(_sps.chi2.sf(w, dof))
    if orders[0] == 3:
        k3, var3 = values[:blocks[0]], np.diag(cov)[:blocks[0]]
    else:
        k3, c3, _ = _expansion(stats, width, (3,), "centred", memo)[:3]
        var3 = np.diag(c3)
    se3 = np.sqrt(np.clip(var3, 0.0, None))
    z3 = np.divide(k3, se3, out=np.zeros_like(k3), where=se3 > 0)
    limited = _limited(_rounding_ratio(stats, width, orders, "centred", memo))
    return CentredParityTest(w, dof, p, alpha, bool(p < alpha and not limited), width, n,
                             orders, float(np.max(np.abs(z3))),
                             float(np.sqrt(np.mean(z3**2))), limited)


# ---------------------------------------------------------------------------------------------
# couplings at one step
# ---------------------------------------------------------------------------------------------
def row_scales(design, scale_columns, scales: str = "order") -> np.ndarray:
    r"""The estimand's scales :math:`s_t` (module docstring): ``"order"``, the rms of the
    sensitivity :math:`|D_{t c_t}|` over the rows that share the scaling coupling
    :math:`c_t` (one scale per order: least squares within each order); ``"tuple"``, the
    package's per-tuple :math:`|D_{t c_t}|`
    (:func:`nngp_ppl.inference.problem.estimand_projection`)."""
    cols = np.asarray(scale_columns)
    sens = np.abs(design[np.arange(design.shape[0]), cols])
    if scales == "tuple":
        return sens
    if scales != "order":
        raise NNGPInputError(f"scales must be 'order' or 'tuple', got {scales!r}")
    out = np.empty_like(sens)
    for c in np.unique(cols):
        rms = float(np.sqrt(np.mean(sens[cols == c] ** 2)))
        if not rms > 0:
            raise NNGPInputError(f"the design of coupling column {c} is zero on every tuple "
                                 "it scales: the coupling is not identified at this step")
        out[cols == c] = rms
    return out


def fit_step(r, cov, design, scale_columns, *, scales: str = "order", draws=None,
             cov_at=None) -> dict:
    r"""Posterior and point fit of the couplings from the centred deviations at one step.

    ``r`` (T,): observed centred deviations; ``cov`` (T, T): their covariance; ``design``
    (T, C): first-order design; ``scale_columns`` (T,): the coupling whose sensitivity
    scales each row; ``scales``: :func:`row_scales`. The estimand is
    :math:`g^* = B r`, :math:`B = (A^TA)^{-1}A^TS^{-1}`, :math:`A = S^{-1}D`,
    :math:`S = \mathrm{diag}(s_t)`. Returns a dict of (C,) arrays: ``median`` =
    :math:`B\hat r`, ``sd`` = :math:`\sqrt{\mathrm{diag}\,BCB^T}`, ``lower`` and
    ``upper`` (central :data:`INTERVAL`), ``point`` (inverse-variance weighted least
    squares) and the scalar ``tau`` (module docstring). With ``draws`` (S, T), posterior
    draws of the noise-free r (e.g. NUTS, :func:`nngp_ppl.inference.centred.posterior`), the median,
    sd and interval are those of the draws :math:`B r_s` instead of the closed form.
    With ``cov_at`` (a map r -> covariance of :math:`\hat r`, e.g.
    :func:`score_covariance`) and no draws, ``lower`` and ``upper`` are the score interval
    (:func:`_score_interval`: the variance at the tested value), asymmetric where the
    variance depends on r; ``median`` and ``sd`` stay those of the closed form.
    """
    r = np.asarray(r, np.float64)
    design = np.asarray(design, np.float64)
    cov = np.asarray(cov, np.float64)
    s = row_scales(design, scale_columns, scales)
    A = design / s[:, None]
    B = np.linalg.solve(A.T @ A, A.T) / s[None, :]
    median = B @ r
    sd = np.sqrt(np.clip(np.diag(B @ cov @ B.T), 0.0, None))
    q = float(_sps.norm.ppf(0.5 + INTERVAL / 2))
    lower, upper = median - q * sd, median + q * sd
    var = np.diag(cov)
    w = np.where(var > 0, 1.0 / np.where(var > 0, var, 1.0), 0.0)
    point = np.linalg.lstsq(design.T @ (w[:, None] * design), design.T @ (w * r),
                            rcond=None)[0]
    tau = float(np.sqrt(np.mean(((r - design @ median) / s) ** 2)))
    if cov_at is not None and draws is None:
        lower, upper = _score_interval(r, design, B, cov_at, median, sd, q)
    if draws is not None:
        g = np.asarray(draws, np.float64).reshape(-1, len(r)) @ B.T
        median, sd = np.median(g, axis=0), np.std(g, axis=0, ddof=1)
        lower, upper = np.quantile(g, [0.5 - INTERVAL / 2, 0.5 + INTERVAL / 2], axis=0)
    return {"median": median, "sd": sd, "lower": lower, "upper": upper, "point": point,
            "tau": tau}


def _score_interval(r, design, B, cov_at, median, sd, q):
    r"""Per coupling j, the set of :math:`g_0` that the z test with the covariance at
    :math:`g_0` does not reject: :math:`t^2 \le q^2 V_j(t)`, :math:`t = g_0 - \hat g_j`,
    :math:`V_j(t) = [B\,C(\hat r + D_{:j} t)\,B^T]_{jj}` (moving r along the design's
    column j moves :math:`B r` along coupling j alone: BD = 1). :math:`V_j` is a
    polynomial of degree <= 4 in t (:func:`score_covariance`: degree 2 in the cumulants,
    and the Jacobian linear in :math:`\kappa_3`), interpolated exactly through 5 points;
    the interval runs between the real roots of :math:`t^2 - q^2V_j(t)` nearest to 0 on
    either side (the Wilson score interval, Wilson 1927, for this variance; infinite on a
    side without a root). Where the variance does not depend on r it is the Wald interval
    :math:`\hat g \pm q\,sd`."""
    lower, upper = median - q * sd, median + q * sd
    for j in range(len(median)):
        if not sd[j] > 0:
            continue
        ts = sd[j] * np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
        var = np.array([(B @ cov_at(r + design[:, j] * t) @ B.T)[j, j] for t in ts])
        poly = np.polyfit(ts / sd[j], var / sd[j] ** 2, 4)     # V_j(u sd) / sd^2
        f = -q**2 * poly
        f[-3] += 1.0                                             # u^2 - q^2 V(u)/sd^2
        roots = np.roots(np.trim_zeros(f, "f"))
        real = roots[np.abs(roots.imag) < 1e-9 * np.maximum(1.0, np.abs(roots))].real
        above, below = real[real > 0], real[real < 0]
        upper[j] = median[j] + (sd[j] * above.min() if above.size else np.inf)
        lower[j] = median[j] + (sd[j] * below.max() if below.size else -np.inf)
    return lower, upper


def _couplings(couplings) -> tuple[str, ...]:
    names = coupling_names(couplings)
    extra = [c for c in names if c not in TRAINING_COUPLINGS]
    if extra:
        raise NNGPInputError(
            f"couplings: along training this module fits {list(TRAINING_COUPLINGS)} (the "
            f"centred 3- and 4-pt functions); {extra} need the centred 5- and 6-pt designs, "
            "not built here")
    return names


def step_theory(net, propagator, X, couplings, cutoff: float):
    """The centred theory of one step (:func:`nngp_ppl.inference.centred.build_theory`): propagator
    ``propagator`` (Σ_t), data orders (3, 4) for (g3, λ), the box up to ``cutoff``. Its
    ``at(cutoff)[0]`` is the design (T, C), ``scale_columns`` the coupling scaling each
    row."""
    return _centred.build_theory(net, X, couplings, kernel_net=propagator, max_cutoff=cutoff)


# ---------------------------------------------------------------------------------------------
# the per-step dataset
# ---------------------------------------------------------------------------------------------
def _inputs(trained, net, X, x_train, y_train):
    """The trained run's ensemble, inputs and training set; what the caller passes must
    agree with what the run recorded."""
    if not isinstance(trained, TrainedCorrelators):
        raise NNGPInputError(f"trained must be a TrainedCorrelators (nngp_ppl.training."
                             f"trainer), got {type(trained).__name__}")
    setup = trained.setup
    first = trained.at_step(trained.steps[0])
    if net is not None and net != first.net:
        raise NNGPInputError(f"net must be the ensemble the run trained ({first.net.describe()}),"
                             f" got {getattr(net, 'describe', lambda: net)()}")
    if X is not None:
        X = _checks.inputs("X", X, first.net.d_in)
        if X.shape != first.X.shape or not np.allclose(X, first.X, rtol=0, atol=1e-12):
            raise NNGPInputError("X must be the inputs the run recorded its correlators at")
    xt, yt = np.asarray(setup.x_train), np.asarray(setup.y_train)
    for name, given, stored in (("x_train", x_train, xt), ("y_train", y_train, yt)):
        if given is not None:
            given = np.asarray(given, np.float64).reshape(stored.shape) \
                if np.size(given) == stored.size else np.asarray(given)
            if given.shape != stored.shape or not np.allclose(given, stored, rtol=0,
                                                              atol=1e-12):
                raise NNGPInputError(f"{name} must be the training set the run used")
    if setup.optimizer not in ("gd", "sgd"):
        raise NNGPInputError(
            f"trained: the infinite-width oracle and its covariance Sigma_t (the propagator) "
            f"hold for plain gradient descent; this run used {setup.optimizer!r}")
    return first.net, first.X, xt, yt, setup


def _oracle(net, X, xt, yt, setup, widths):
    """(S, W, k) means and (S, W, k, k) covariances of the oracle, per width only in the
    standard parametrisation (whose kernel grows with N)."""
    per_width = setup.parametrisation == "standard"
    mus, sigmas = [], []
    for w in (widths if per_width else widths[:1]):
        mu, sig = training_oracle(net, X, xt, yt, setup.steps, setup.learning_rate,
                                  parametrisation=setup.parametrisation,
                                  width=w if per_width else None)
        mus.append(mu)
        sigmas.append(sig)
    mu, sig = np.stack(mus, 1), np.stack(sigmas, 1)
    if not per_width:
        mu = np.repeat(mu, len(widths), 1)
        sig = np.repeat(sig, len(widths), 1)
    return mu, sig


def _slope(widths, values) -> float:
    ok = np.isfinite(values) & (values > 0)
    if np.sum(ok) < 2:
        return np.nan
    return float(np.polyfit(np.log(np.asarray(widths, float)[ok]), np.log(values[ok]), 1)[0])


def _step_block(stats, width, mu, alpha, odd_orders, top, memo):
    """Everything of one (step, width) but the couplings (``memo``: :func:`_expansion`)."""
    n = stats.n_nets(width)
    g1 = stats.correlator_tuples(1, width)
    se1 = stats.stderr_tuples(1, width)
    out = {"mean": g1, "mean_stderr": se1,
           "mean_z": np.divide(g1 - mu, se1, out=np.full_like(g1, np.nan), where=se1 > 0)}
    for kind in ("connected", "centred"):
        for order in range(2, top + 1):
            v, c, _ = _expansion(stats, width, (order,), kind, memo)[:3]
            ok = _rounding_ratio(stats, width, (order,), kind, memo) < ROUNDING_LIMIT
            out[f"{kind}_{order}"] = v
            # an error bar within float32 rounding of the sums is not computable: NaN
            out[f"{kind}_{order}_stderr"] = np.where(
                ok, np.sqrt(np.clip(np.diag(c), 0.0, None)), np.nan)
    cen = _centred_parity(stats, int(width), *_parity_args(stats, odd_orders, alpha, None),
                          memo)
    raw = parity_test(stats, width, alpha=alpha)
    out.update(parity_statistic=cen.statistic, parity_dof=cen.dof, parity_p_value=cen.p_value,
               parity_reject=cen.reject, parity_rounding_limited=cen.rounding_limited,
               odd_connected_max_z=cen.max_abs_z3,
               odd_connected_rms_z=cen.rms_z3, raw_parity_statistic=raw.statistic,
               raw_parity_dof=raw.dof, raw_parity_p_value=raw.p_value,
               raw_parity_reject=raw.reject, n_nets=n)
    return out


def training_flow(trained, net=None, X=None, x_train=None, y_train=None, *,
                  couplings=TRAINING_COUPLINGS, cutoff: float = 10.0, alpha: float = 0.05,
                  odd_orders=(3,), scales: str = "order", posterior: str = "normal",
                  num_samples: int = 1000, seed: int = 0, band: str = "score"):
    r"""The effective action at every recorded step of a trained ensemble, as an
    :class:`xarray.Dataset` with a ``step`` coordinate (module docstring).

    ``trained``: :class:`~nngp_ppl.training.trainer.TrainedCorrelators` recorded with orders 1..4 at
    least (1..6 for the full expansion) and ``covariance=True``. ``net``, ``X``,
    ``x_train``, ``y_train``: optional; when given they must be the run's (read from it
    otherwise). ``couplings``: a subset of (g3, lambda); ``cutoff``: Λ of the box of the
    vertex integrals with the propagator :math:`\Sigma_t`; ``alpha``: level of the symmetry
    tests; ``odd_orders``: the centred orders of the :math:`\phi\to-\phi` test ((3,) or
    (3, 5)); ``scales``: the estimand's scales (:func:`row_scales`); ``posterior``:
    ``"normal"`` (the closed form) or ``"nuts"`` (:func:`nngp_ppl.inference.centred.posterior`'s
    draws of r, ``num_samples`` per chain, ``seed``); ``band``: the closed form's 90%
    interval (:data:`BAND_COVARIANCES`): ``"score"`` (default) inverts the z test with the
    delta-method covariance at the tested value (:func:`fit_step`'s ``cov_at``,
    :func:`score_covariance`), ``"sample"`` the Wald interval
    :math:`B\hat r \pm q\,sd` of the sampled covariance, ``"gaussian"``,
    ``"cumulants4"`` the Wald interval with :func:`band_covariance`'s model covariance
    (docs/training_flow.md, coverage along training). Variables (dims step,
    width, input, coupling, tuple_n): the learned mean, its standard error, the oracle's
    :math:`\mu_t`, z and the finite-width deviation; the connected and centred n-pt functions
    with errors; both symmetry tests; the couplings' median, sd, 90% interval, point fit and
    discrepancy τ. ``ds.to_netcdf(path)`` writes it.
    """
    net, X, xt, yt, setup = _inputs(trained, net, X, x_train, y_train)
    if posterior not in ("normal", "nuts"):
        raise NNGPInputError(f"posterior must be 'normal' or 'nuts', got {posterior!r}")
    num_samples = _checks.positive_int("num_samples", num_samples)
    if band not in BAND_COVARIANCES:
        raise NNGPInputError(f"band must be one of {BAND_COVARIANCES}, got {band!r}")
    couplings = _couplings(couplings)
    cutoff = _checks.finite_float("cutoff", cutoff, minimum=0.0)
    check_box(net, X, cutoff)
    alpha = _checks.finite_float("alpha", alpha)
    first = trained.at_step(trained.steps[0])
    widths = list(first.widths)
    top = 0
    while top + 1 in first.orders and top < 6:
        top += 1
    _check_orders(first, 4)
    mu, sigma = _oracle(net, X, xt, yt, setup, widths)
    rows = [[None] * len(widths) for _ in trained.steps]
    fits = [[None] * len(widths) for _ in trained.steps]
    for s, step in enumerate(trained.steps):
        stats = trained.at_step(step)
        theories = {}
        for i, w in enumerate(widths):
            memo = {}
            rows[s][i] = _step_block(stats, w, mu[s, i], alpha, odd_orders, top, memo)
            key = w if setup.parametrisation == "standard" else None
            if key not in theories:
                th = step_theory(net, _propagator(net, xt, yt, setup, step, w), X, couplings,
                                 cutoff)
                theories[key] = th, th.at(cutoff)[0]
            th, D = theories[key]
            # = inference.problem.centred_observation(stats, w, th.data_orders, "sample") to
            # round-off (r_3 = kappa_3, r_4 = kappa_4; tested), without a JAX trace per call
            r, C, _ = _expansion(stats, w, th.data_orders, "connected", memo)[:3]
            cov_at = None
            if band == "score":
                if posterior == "normal":  # NUTS draws give their own band
                    cov_at = score_covariance(stats, w, th.data_orders, memo)
            elif band != "sample":
                C = band_covariance(stats, w, th.data_orders, band, memo)
            draws = None
            if posterior == "nuts":
                draws = _centred.posterior(th, r, C, [cutoff], num_chains=2,
                                          num_samples=num_samples, seed=seed)["r"]
            fits[s][i] = fit_step(r, C, D, th.scale_columns, scales=scales, draws=draws,
                                  cov_at=cov_at)
            fits[s][i]["limited"] = _limited(_rounding_ratio(stats, w, th.data_orders,
                                                             "connected", memo))
    ds = _dataset(trained, net, X, widths, couplings, cutoff, alpha, odd_orders, top, mu,
                  sigma, rows, fits)
    ds.attrs["scales"] = scales
    ds.attrs["band"] = (
        "score: {g0 : |g_hat - g0| <= q sd(g0)}, the variance at the tested value "
        "(training_flow.score_covariance); coupling_sd is the Wald sd at g_hat"
        if band == "score" and posterior == "normal" else
        f"Wald: median +- q sd, covariance {band} (training_flow.band_covariance)"
        if posterior == "normal" else "posterior draws' quantiles")
    ds.attrs["posterior"] = (
        "closed form: N(B r_hat, B C B^T), flat prior on r, normal likelihood"
        if posterior == "normal" else
        f"NUTS (nngp_ppl.inference.centred.posterior: latent r ~ N(0, 100 C), normal likelihood; "
        f"2 chains x {num_samples} draws, seed {seed}), g = B r per draw")
    return ds


def _propagator(net, xt, yt, setup, step, width):
    return TrainedKernel.build(net, xt, yt, step, setup.learning_rate,
                               parametrisation=setup.parametrisation,
                               width=width if setup.parametrisation == "standard" else None)



_SCALARS = ("parity_statistic", "parity_dof", "parity_p_value", "parity_reject",
            "parity_rounding_limited",
            "odd_connected_max_z", "odd_connected_rms_z", "raw_parity_statistic",
            "raw_parity_dof", "raw_parity_p_value", "raw_parity_reject", "n_nets")


def _first_reject(steps, reject) -> np.ndarray:
    """(W,) the first step whose test rejects, -1 where none does."""
    out = np.full(reject.shape[1], -1, np.int64)
    for i in range(reject.shape[1]):
        hit = np.flatnonzero(reject[:, i])
        if hit.size:
            out[i] = steps[hit[0]]
    return out


def _dataset(trained, net, X, widths, couplings, cutoff, alpha, odd_orders, top, mu, sigma,
             rows, fits):
    steps = np.asarray(trained.steps, np.int64)
    k = len(X)
    SW = ("step", "width")

    def stack(key):
        return np.asarray([[cell[key] for cell in row] for row in rows])

    mean = stack("mean")
    dev = mean - mu
    se = stack("mean_stderr")
    data = {
        "mean": (SW + ("input",), mean, {"long_name": "sampled 1-pt function <f>_t"}),
        "mean_stderr": (SW + ("input",), se, {"long_name": "standard error of <f>_t"}),
        "mu_oracle": (SW + ("input",), mu,
                      {"long_name": "infinite-width mean mu_t (NTK oracle, discrete GD)"}),
        "mean_deviation": (SW + ("input",), dev,
                           {"long_name": "finite-width deviation <f>_t - mu_t"}),
        "mean_z": (SW + ("input",), stack("mean_z"), {"long_name": "(<f>_t - mu_t) / se"}),
        "mean_max_abs_z": (SW, np.nanmax(np.abs(stack("mean_z")), axis=-1)),
        "mean_deviation_rms": (SW, np.sqrt(np.mean(dev**2, -1))),
        "mean_noise_rms": (SW, np.sqrt(np.mean(se**2, -1)),
                           {"long_name": "rms standard error of <f>_t: the background"}),
        "mean_deviation_slope": (("step",), np.asarray(
            [_slope(widths, np.sqrt(np.mean(dev[s] ** 2, -1))) for s in range(len(steps))]),
            {"long_name": "log-log slope of the rms deviation over widths (-1: 1/N)"}),
        "sigma_oracle": (SW + ("tuple_2",), np.stack(
            [sigma[..., r[0], r[1]] for r in _tuples.distinct_tuples(k, 2)], -1),
            {"long_name": "infinite-width covariance Sigma_t on the 2-tuples"}),
    }
    for key in _SCALARS:
        value = stack(key)
        # netCDF has no boolean type: verdicts are stored as 0/1
        data[key] = (SW, value.astype(np.int8) if value.dtype == bool else value)
    for kind in ("connected", "centred"):
        for n in range(2, top + 1):
            for suffix in ("", "_stderr"):
                data[f"{kind}_{n}{suffix}"] = (SW + (f"tuple_{n}",), stack(f"{kind}_{n}{suffix}"))
    k3 = np.sqrt(np.mean(stack("connected_3") ** 2, -1))
    data["odd_connected_rms"] = (SW, k3, {"long_name": "rms over tuples of kappa_3"})
    data["odd_connected_slope"] = (("step",), np.asarray(
        [_slope(widths, k3[s]) for s in range(len(steps))]),
        {"long_name": "log-log slope of the rms kappa_3 over widths (-1: 1/N)"})
    for key in ("median", "sd", "lower", "upper", "point"):
        data[f"coupling_{key}"] = (SW + ("coupling",), np.asarray(
            [[f[key] for f in row] for row in fits]))
    data["coupling_tau"] = (SW, np.asarray([[f["tau"] for f in row] for row in fits]))
    data["coupling_rounding_limited"] = (
        SW, np.asarray([[f["limited"] for f in row] for row in fits], np.int8),
        {"long_name": "1: some fitted variance is within float32 rounding of the sums "
                      "(training_flow.rounding_ratio); the band is not reliable"})
    for name, key in (("symmetry_break_step", "parity_reject"),
                      ("raw_symmetry_break_step", "raw_parity_reject")):
        data[name] = (("width",), _first_reject(steps, stack(key)),
                      {"long_name": "first recorded step whose test rejects (-1: none)"})
    coords = {"step": steps, "width": np.asarray(widths, np.int64),
              "coupling": list(couplings), "input": np.arange(k)}
    for n in range(2, top + 1):
        coords[f"tuples_{n}"] = ((f"tuple_{n}", f"position_{n}"),
                                 np.asarray(_tuples.distinct_tuples(k, n)))
    attrs = {
        "nngp_ppl_format": FLOW_FORMAT,
        "nngp_ppl_version": __version__,
        "ensemble": json.dumps(net.to_dict()),
        "inputs": json.dumps(np.asarray(X).tolist()),
        "training": json.dumps(trained.setup.describe()),
        "couplings": json.dumps(list(couplings)),
        "cutoff": float(cutoff),
        "alpha": float(alpha),
        "interval": INTERVAL,
        "odd_orders": json.dumps(list(odd_orders)),
        "propagator": "Sigma_t: the infinite-width trained covariance of the NTK oracle "
                      "(nngp_ppl.theory.trained_kernel.TrainedKernel), full",
        "convention": "expansion around the learned mean (centred, docs/physics.md 6b); "
                      "couplings fitted to the connected 3- and 4-pt functions; estimand "
                      "g* = B r (scales: attribute scales) with its exact normal "
                      "posterior; point = inverse-variance WLS",
        "symmetry_null": "parity_*: phi -> -phi of phi = f - <f> (odd centred moments "
                         "zero); raw_parity_*: f -> -f (every odd moment zero, rejected by "
                         "any learned mean)",
    }
    return xr.Dataset(data, coords=coords, attrs=attrs)
