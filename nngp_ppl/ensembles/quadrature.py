r"""Gaussian expectations of products of one activation: all monomials in one pass.

For inputs whose pre-activations are linear in a standard normal vector,
:math:`z_j = a_j\cdot u`, :math:`u \sim \mathcal N(0, I_r)` (``A`` has rows :math:`a_j`;
a single-layer net has :math:`r \le d_{in} + 1`), this module computes the neuron moments

.. math:: M_S = E\Big[\prod_{j} h(z_j)^{m_j}\Big]

for *every* multiset S (multiplicities m) of each total degree up to D at once.

Rule
----
The trapezoidal rule on the lattice :math:`u \in h_1\mathbb Z \times\cdots\times
h_r\mathbb Z`, truncated to the ball :math:`|u| \le R`, with weights
:math:`\prod_\alpha h_\alpha\ \phi_r(u)`. For an integrand analytic in a strip around the
real axis of each coordinate the error falls geometrically in :math:`1/h_\alpha`
(Trefethen & Weideman, SIAM Review 56 (2014) 385, §5); for entire activations that grow
off the axis (erf, GELU) it beats Gauss–Hermite, whose nodes spread over a range that
grows like :math:`\sqrt{2q}` and waste most of their points in the tails.

* ``A`` is first reduced to its rank: :math:`A = U\Sigma V^T` and the columns of
  :math:`U\Sigma` are the r coordinates (rotation invariance of u); the factor's own
  columns are kept instead when they have full rank and need fewer nodes.
* Step :math:`h_\alpha`: a shift :math:`u_\alpha \to u_\alpha + ib` moves every
  :math:`z_j` by at most :math:`i b\, s_\alpha`, :math:`s_\alpha = \max_j |A_{j\alpha}|`,
  so the worst integrand along axis α behaves like :math:`h(s_\alpha t + c)^D`. The step is
  the largest of a geometric ladder for which the one-dimensional rule on that probe (at
  c = 0 and c = s_α/2) agrees with a four-times finer rule to ``rtol / (10 r)`` of
  :math:`E|h(s_\alpha t + c)|^D`. This measures the activation's analyticity strip
  instead of assuming it, so a user's activation gets the same treatment.
* Radius R: the activation's growth exponent p (1 for GELU and softplus, 0 for bounded
  ones) is read off :math:`\max_{|z|\le 2z_0}|h| / \max_{|z|\le z_0}|h|`; the tail of a
  degree-D integrand is then bounded by :math:`P(\chi^2_{r + D\max(p,1)} > R^2)`, set to
  ``rtol / 100``. Activations that grow faster than a polynomial are refused.
* All monomials: the inputs are split into two halves; every exponent vector of degree
  <= D on each half is a running product of powers of :math:`h(z_j)`, and the mean of
  each full monomial is one row of a matrix product ``(left * w) @ right.T`` grouped by
  the degree split. Nodes are processed in chunks so memory stays bounded.

Accuracy, measured (``tests/test_quadrature.py``, ``tests/test_exact.py``): for erf at
σ_W = σ_b = 1 on the paper's inputs (d_in = 1, 2, 3) the moments of orders 2..6 agree
with Price's theorem (itself 1e-14) to 3e-15 of the largest moment, and orders 8 and 12
at d_in = 1 with nested adaptive scipy integration to 1e-15; exp(-z²) moments match
their determinant closed form and sin moments their exponential expansion to < 1e-10
in ranks 2..4 (the tests' promise). The step ladder (ratio 1.2) is what keeps the
achieved error far below ``rtol``: the trapezoid error falls faster than geometrically
in 1/h for these entire integrands. The error bound ``rtol`` is relative to the
scale :math:`E[\prod_j |h(z_j)|^{m_j}]` of each monomial, so a monomial that cancels to
nearly zero has a larger relative error.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np
from scipy.stats import chi2

from .. import tuples as _tuples
from .._checks import NNGPInputError
from .._memo import BytesLRU

__all__ = [
    "RTOL",
    "MAX_NODES",
    "reduce_factor",
    "growth_exponent",
    "oscillatory",
    "axis_step",
    "radius",
    "rule",
    "parity",
    "nodes",
    "gaussian_moments",
    "pair_expectation",
]

#: Default relative accuracy of a moment, against the scale E[prod |h|^m].
RTOL = 1e-11

#: Floats held by the per-chunk monomial tables (left + right rows times nodes).
_CHUNK_FLOATS = 4_000_000

#: Largest lattice the oracle will integrate (about a minute of work at order 12 with four
#: inputs); beyond it the pre-activation rank is too high for a tensor rule.
MAX_NODES = 60_000_000


# --------------------------------------------------------------------------------------------
# the rule
# --------------------------------------------------------------------------------------------
def reduce_factor(F: np.ndarray) -> np.ndarray:
    """(k, r) A with A Aᵀ = F Fᵀ, r = numerical rank of F (columns of U Σ from the SVD)."""
    F = np.asarray(F, dtype=np.float64)
    if F.size == 0:
        return np.zeros((F.shape[0], 0))
    U, sv, _ = np.linalg.svd(F, full_matrices=False)
    tol = max(F.shape) * np.finfo(float).eps * 16 * (sv[0] if len(sv) else 0.0)
    r = int(np.sum(sv > tol))
    return U[:, :r] * sv[:r]


def _basis(F: np.ndarray) -> np.ndarray:
    """A factor of F Fᵀ with the fewest lattice nodes: the SVD one or F itself.

    The node count scales like Π_α 1/h_α ∝ Π_α max_j |A_jα|, which depends on the
    rotation. The SVD basis minimises the dimension; when F already has full column rank
    its own columns (weights and bias of the paper's inputs) are often better aligned:
    scales (0.58, 0.58, 0.58, 1) against (1, 0.82, 0.82, 0.58) for the d_in = 3 corners.
    """
    A = reduce_factor(F)
    if F.shape[1] == A.shape[1] and A.shape[1] > 0:
        cost_svd = np.prod(np.max(np.abs(A), axis=0))
        cost_own = np.prod(np.max(np.abs(F), axis=0))
        if cost_own < cost_svd:
            return np.asarray(F, dtype=np.float64)
    return A


def growth_exponent(activation: Callable, z0: float = 32.0) -> int:
    """Polynomial growth p of |h(z)| (0 bounded, 1 linear), from maxima on [-z0,z0], [-2z0,2z0].

    Raises NNGPInputError for faster growth or non-finite values: the Gaussian tail
    bound below assumes polynomial growth.
    """
    z = np.linspace(-2 * z0, 2 * z0, 4001)
    with np.errstate(all="ignore"):
        v = np.abs(np.asarray(activation(z), dtype=np.float64))
    if v.shape != z.shape or not np.all(np.isfinite(v)):
        raise NNGPInputError(
            "activation must be a vectorised numpy function returning finite values of the "
            "same shape as its argument on [-64, 64]"
        )
    inner = v[np.abs(z) <= z0].max()
    outer = v.max()
    if inner == 0.0:
        return 0
    p = math.log2(max(outer / inner, 1.0))
    if p > 6.0:
        raise NNGPInputError(
            f"activation grows faster than a polynomial (max|h| grows by 2^{p:.1f} from "
            f"|z| <= {z0} to |z| <= {2 * z0}); the quadrature oracle supports activations "
            "bounded by a polynomial"
        )
    return int(math.ceil(p - 0.05))


def oscillatory(activation) -> bool:
    """Whether h' changes sign more than 4 times on [-64, 64] (sin does; tanh, GELU don't)."""
    z = np.linspace(-64.0, 64.0, 16001)
    dh = np.diff(np.asarray(activation(z), dtype=np.float64))
    dh = dh[np.abs(dh) > 1e-12 * max(float(np.max(np.abs(dh))), 1e-300)]
    return int(np.sum(np.diff(np.sign(dh)) != 0)) > 4


def _probe_sums(activation, scales, c_frac: float, powers, h: float, R: float):
    """Trapezoid sums of h(s t + c_frac s)^j φ(t) for each (power j, scale s): (J, S)."""
    t = h * np.arange(-math.floor(R / h), math.floor(R / h) + 1)
    w = h * np.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)
    base = np.asarray(activation(scales[:, None] * (t[None, :] + c_frac)), dtype=np.float64)
    vals = np.stack([base**j for j in powers])
    return vals @ w, np.abs(vals) @ w, float(w.sum())


def axis_step(activation, s: float, D: int, rtol: float, R: float) -> float:
    """Largest trapezoid step (from a ladder h = 2 / 1.2^i) resolving h(s t + c)^D to rtol.

    The Gaussian weight alone must be resolved too (a scale-0 axis, or h(0) = 0, would
    otherwise accept any step). The references use steps h/√5 and h/√7, not h/4: a
    nested grid aliases an oscillation (sin at scale 32: frequency 64 ≈ 4 · 2π/h) exactly
    as the coarse one does. An oscillatory activation's products along an axis carry
    every frequency up to D s (sums of ± m_j A_jα), and a trapezoid step can pass a probe
    at the frequencies {s, 2s, ...} while aliasing one in between, so for those the probe
    runs over all powers 1..D and a dense grid of scales in (0, s].
    """
    if oscillatory(activation):
        n = int(min(64, math.ceil(D * s / 4.0) + 1))
        scales = s * np.arange(1, n + 1) / n
        powers = list(range(1, D + 1))
    else:
        scales, powers = np.array([s]), [D]
    h = 2.0
    for _ in range(80):
        ok = True
        for c_frac in (0.0, 0.5):
            coarse, _, mass = _probe_sums(activation, scales, c_frac, powers, h, R)
            for ratio in (math.sqrt(5.0), math.sqrt(7.0)):
                fine, scale, fine_mass = _probe_sums(activation, scales, c_frac, powers,
                                                     h / ratio, R)
                if np.any(np.abs(coarse - fine) > rtol * scale) or (
                    abs(mass - fine_mass) > rtol * fine_mass
                ):
                    ok = False
                    break
            if not ok:
                break
        if ok:
            return h
        h /= 1.2
    raise NNGPInputError(
        f"the quadrature oracle cannot resolve this activation at pre-activation scale {s:.3g} "
        f"and degree {D} (no trapezoid step down to {h:.2g} converges); is it continuous?"
    )


def radius(r: int, D: int, growth: int, rtol: float) -> float:
    """R with P(chi^2_{r + D max(growth, 1)} > R^2) = rtol: the truncated Gaussian tail."""
    return float(math.sqrt(chi2.isf(rtol, r + D * max(growth, 1))))


def rule(activation, A: np.ndarray, D: int, rtol: float = RTOL):
    """Steps h (r,) and radius R of the truncated trapezoid rule for degree <= D (see module)."""
    r = A.shape[1]
    growth = growth_exponent(activation)
    R = radius(r, D, growth, rtol / 100)
    scales = np.max(np.abs(A), axis=0) if r else np.zeros(0)
    steps = np.array(
        [axis_step(activation, float(s), max(D, 2), rtol / (10 * max(r, 1)), R) for s in scales]
    )
    return steps, R


def parity(activation) -> int:
    """+1 if h is even, -1 if odd, 0 otherwise (checked on a grid to round-off)."""
    z = np.linspace(0.0, 16.0, 1601)
    hp = np.asarray(activation(z), dtype=np.float64)
    hm = np.asarray(activation(-z), dtype=np.float64)
    tol = 1e-14 * max(float(np.max(np.abs(hp))), 1e-300)
    if np.max(np.abs(hp - hm)) <= tol:
        return 1
    if np.max(np.abs(hp + hm)) <= tol:
        return -1
    return 0


def nodes(steps: np.ndarray, R: float, max_nodes: int, half: bool = False):
    """Chunks (u (P, r), w (P,)) of the ball-truncated lattice with Gaussian weights.

    ``half``: only u_0 >= 0, with the u_0 > 0 nodes weighted twice; exact for integrands
    even under u -> -u, because the lattice is symmetric.
    """
    r = len(steps)
    if r == 0:
        yield np.zeros((1, 0)), np.ones(1)
        return
    axes = [h * np.arange(-math.floor(R / h), math.floor(R / h) + 1) for h in steps]
    cell = float(np.prod(steps)) / (2 * math.pi) ** (r / 2)
    if r == 1:
        rest = np.zeros((1, 0))
    else:
        rest = np.stack(np.meshgrid(*axes[1:], indexing="ij"), -1).reshape(-1, r - 1)
    rest_sq = np.sum(rest * rest, axis=1)
    t0s = axes[0]
    r2 = R * R
    # Per row t0 of the first axis, which rest-rows lie in the ball. Rows are visited in
    # blocks (vectorised, with the scalar test's exact arithmetic) rather than one by one,
    # which cost a NumPy call per row: 2e5 rows for a far pair of the quadrature kernel.
    block = max(1, (1 << 24) // max(len(rest_sq), 1))

    def inside(lo, hi):
        t = t0s[lo:hi]
        return rest_sq[None, :] + (t * t)[:, None] <= r2

    counts = np.concatenate([inside(lo, lo + block).sum(axis=1)
                             for lo in range(0, len(t0s), block)])
    if half:
        counts = np.where(t0s < 0, 0, counts)
    # The chunks: rows are gathered in order until a gathering reaches max_nodes nodes (or
    # the last row), then cut into pieces of max_nodes; the same nodes, order and pieces
    # as visiting row by row.
    start, gathered = 0, 0
    for i, c in enumerate(counts.tolist()):
        gathered += c
        if gathered < max_nodes and i != len(t0s) - 1:
            continue
        if gathered:
            ti, ri = np.nonzero(inside(start, i + 1))
            t = t0s[start:i + 1][ti]
            keep = (t >= 0) if half else slice(None)
            U = np.hstack([t[:, None], rest[ri]])[keep]
            M = np.where(half & (U[:, 0] > 0), 2.0, 1.0)
            for lo in range(0, len(U), max_nodes):
                chunk = U[lo : lo + max_nodes]
                w = cell * M[lo : lo + max_nodes] * np.exp(-0.5 * np.sum(chunk * chunk, axis=1))
                yield chunk, w
        start, gathered = i + 1, 0


# --------------------------------------------------------------------------------------------
# all monomials at once
# --------------------------------------------------------------------------------------------
@lru_cache(maxsize=64)
def _exponents(g: int, D: int) -> tuple[np.ndarray, ...]:
    """Exponent vectors on g inputs by total degree 0..D (tuple of (n_d, g) int arrays)."""

    def compositions(parts: int, total: int):
        if parts == 0:
            if total == 0:
                yield ()
            return
        for first in range(total, -1, -1):
            for rest in compositions(parts - 1, total - first):
                yield (first, *rest)

    out = []
    for d in range(D + 1):
        rows = sorted(compositions(g, d))
        out.append(np.array(rows, dtype=np.int64).reshape(len(rows), g))
    return tuple(out)


def _power_table(H: np.ndarray, exps: tuple[np.ndarray, ...], D: int) -> list[np.ndarray]:
    """Per degree, (n_d, P) products Π_j H[:, j]^{e_j} for the exponent vectors ``exps``."""
    P, g = H.shape
    if g == 0:
        return [np.ones((1, P))] + [np.zeros((0, P)) for _ in range(D)]
    pw = np.empty((g, D + 1, P))
    pw[:, 0] = 1.0
    for p in range(1, D + 1):
        pw[:, p] = pw[:, p - 1] * H.T
    out = []
    for e in exps:
        block = pw[0, e[:, 0]]
        for j in range(1, g):
            block = block * pw[j, e[:, j]]
        out.append(block)
    return out


@lru_cache(maxsize=64)
def _scatter(k: int, D: int, d: int, a: int) -> np.ndarray:
    """Rows of distinct_tuples(k, d) for (left degree a) x (right degree d - a) blocks."""
    gl = (k + 1) // 2
    left = _exponents(gl, D)[a]
    right = _exponents(k - gl, D)[d - a]
    mult = np.concatenate(
        [
            np.broadcast_to(left[:, None, :], (len(left), len(right), gl)),
            np.broadcast_to(right[None, :, :], (len(left), len(right), k - gl)),
        ],
        axis=2,
    ).reshape(-1, k)
    base = d + 1
    weights = base ** np.arange(k - 1, -1, -1, dtype=np.int64)
    rows = _tuples.distinct_tuples(k, d)
    ref = np.zeros((len(rows), k), dtype=np.int64)
    for c in range(d):
        np.add.at(ref, (np.arange(len(rows)), rows[:, c]), 1)
    keys = ref @ weights
    order = np.argsort(keys)
    idx = order[np.searchsorted(keys[order], mult @ weights)]
    return idx.reshape(len(left), len(right))


def gaussian_moments(
    activation: Callable, F, degrees, rtol: float = RTOL, shift=None
) -> dict[int, np.ndarray]:
    r"""Moments :math:`E[\prod_j h(z_j)^{m_j}]`, z = ν + F u, u ~ N(0, I), for all multisets.

    ``activation`` is a vectorised numpy function h; ``F`` is (k, D') with rows
    :math:`\phi_j`; ``shift`` the (k,) pre-activation means :math:`\nu_j` (None: zero;
    non-zero-mean ensembles, :mod:`nngp_ppl.theory.exact`); ``degrees`` the total degrees
    wanted. Returns, per degree d, a float64 array on
    :func:`nngp_ppl.tuples.distinct_tuples` ``(k, d)``. One truncated trapezoid rule
    (module docstring), chosen for the highest degree, serves all of them. A shift
    translates the integrand along the real axis: the analyticity strip, and so the step,
    are unchanged, and the parity shortcut is not used.
    """
    degrees = sorted({int(d) for d in degrees})
    F = np.asarray(F, dtype=np.float64)
    k = F.shape[0]
    D = max(degrees, default=0)
    A = _basis(F)
    steps, R = rule(activation, A, D, rtol)
    # An odd or even h makes every monomial even or odd under u -> -u: half the nodes.
    shift = np.zeros(k) if shift is None else np.asarray(shift, np.float64).reshape(k)
    sym = parity(activation) if not np.any(shift) else 0
    r = len(steps)
    ball = math.pi ** (r / 2) / (math.gamma(r / 2 + 1) * 2**r)
    count = float(np.prod(2 * np.floor(R / steps) + 1)) * ball * (0.5 if sym else 1.0)
    if count > MAX_NODES:
        raise NNGPInputError(
            f"the quadrature oracle would need ~{count:.1e} nodes for these inputs "
            f"(pre-activation rank {r}, order {D}); it handles rank <= 4 (d_in <= 3 with a "
            "bias) comfortably. Use fewer input dimensions or points, or sampled correlators"
        )
    gl = (k + 1) // 2
    exps_l, exps_r = _exponents(gl, D), _exponents(k - gl, D)
    n_rows = sum(len(e) for e in exps_l) + sum(len(e) for e in exps_r)
    max_nodes = max(256, _CHUNK_FLOATS // max(n_rows, 1))
    sums = {d: np.zeros(len(_tuples.distinct_tuples(k, d))) for d in degrees}
    for u, w in nodes(steps, R, max_nodes, half=sym != 0):
        H = np.asarray(activation(u @ A.T + shift), dtype=np.float64).reshape(len(u), k)
        left = _power_table(H[:, :gl], exps_l, D)
        right = _power_table(H[:, gl:], exps_r, D)
        for d in degrees:
            for a in range(max(0, d - len(right) + 1), min(d, len(left) - 1) + 1):
                if not len(left[a]) or not len(right[d - a]):
                    continue
                block = (left[a] * w) @ right[d - a].T
                sums[d][_scatter(k, D, d, a)] += block
    if sym == -1:
        for d in degrees:
            if d % 2:
                sums[d][:] = 0.0
    return sums


# --------------------------------------------------------------------------------------------
# the kernel: E[h(z) h(z')] for many pairs
# --------------------------------------------------------------------------------------------
@lru_cache(maxsize=64)
def _activation_profile(activation: Callable, rtol: float):
    """(growth exponent, parity, radius for degree 2 in two dimensions) of an activation."""
    growth = growth_exponent(activation)
    return growth, parity(activation), radius(2, 2, growth, rtol / 100)


@lru_cache(maxsize=512)
def _pair_step(activation: Callable, scale: float, rtol: float, R: float) -> float:
    return axis_step(activation, scale, 2, rtol / 20, R)


#: The bytes of the two-dimensional lattices that :func:`_pair_nodes` keeps, and the largest
#: lattice it keeps (nodes; 24 bytes a node).
_KEPT_PAIR_BYTES, _KEPT_PAIR_NODES = 64 << 20, 1 << 16
_kept_pair_nodes = BytesLRU()


def _pair_nodes(h1: float, h2: float, R: float, half: bool):
    """The chunks of :func:`nodes` for the two-dimensional lattice of :func:`pair_expectation`,
    the most recently used kept (read-only, up to :data:`_KEPT_PAIR_BYTES` in all). A deep
    net's kernel recursion asks for the same few dozen lattices thousands of times, one call
    per layer and evaluation (examples/06's kernels: 5,230 calls, 77 lattices of 450-4,700
    nodes), and building them again cost as much as integrating on them."""
    key = (h1, h2, R, half)
    chunks = _kept_pair_nodes.fetch(key)
    if chunks is None:
        chunks = tuple(nodes(np.array([h1, h2]), R, 1 << 22, half=half))
        for u, w in chunks:
            u.flags.writeable = w.flags.writeable = False
        _kept_pair_nodes.keep(key, chunks, sum(u.nbytes + w.nbytes for u, w in chunks),
                              limit=_KEPT_PAIR_BYTES, largest=24 * _KEPT_PAIR_NODES)
    return chunks


def _bucket(s: np.ndarray) -> np.ndarray:
    """Round scales up to the grid 2^(i/4): one probed step serves every scale in a bucket."""
    out = np.zeros_like(s)
    pos = s > 0
    out[pos] = 2.0 ** (np.ceil(4.0 * np.log2(s[pos]) - 1e-9) / 4.0)
    return out


def pair_expectation(activation: Callable, a, b, c, rtol: float = 1e-12, nu=None,
                     nu_p=None) -> np.ndarray:
    r""":math:`E[h(z)\,h(z')]` for :math:`(z, z') \sim \mathcal N((\nu, \nu'), [[a, c], [c, b]])`.

    Elementwise over broadcastable arrays ``a = Var z``, ``b = Var z'``, ``c = Cov`` and the
    optional means ``nu = E z``, ``nu_p = E z'`` (None: zero; the pre-activation means
    :math:`\mu_W\sum_\alpha x_\alpha + \mu_b` of a net with non-zero means,
    :class:`nngp_ppl.inference.centring.LimitCovariance`). The pair is
    :math:`z = \nu + L_{11} u_1`, :math:`z' = \nu' + L_{21} u_1 + L_{22} u_2` (Cholesky,
    with :math:`L_{22} = \sqrt{(b - c^2/a)_+}`, the larger variance first, its mean with
    it), integrated by the truncated trapezoid rule of this module in
    :math:`(u_1, u_2)`. Each axis's step is probed for its scale
    (:math:`\max(L_{11}, |L_{21}|) = L_{11}` and :math:`L_{22}`, rounded up to quarter
    octaves), so the cost grows like the standard deviations (about 1e3 nodes per pair at
    variance 2, 2e5 for a pair with variances 2 and 1e4) while the error stays at ``rtol``
    of :math:`E|h(z)h(z')|`. Used for the GP kernel of :class:`nngp_ppl.ActivationNet`.

    Means: the integrand is still :math:`\phi(u)` times h at points moved along the real
    axis. The step controls the error through the width of the strip in which
    :math:`h(\nu + s t)` is analytic in t, which a real shift does not change; the zero-mean
    rule already relies on this, since along the second axis z' is
    :math:`L_{21}u_1 + L_{22}u_2`, offset by every real :math:`L_{21}u_1` of the lattice,
    and the probe tests two offsets (0 and s/2). The radius bounds the Gaussian tail of u,
    which the shift does not touch; for an activation of growth p >= 1 the tail integrand
    grows by the factor :math:`(1 + |\nu|/s)^p` that the scale :math:`E|hh'|` grows by
    too. What is lost is the parity shortcut (an odd or even h no longer makes the
    integrand even in u), so with any non-zero mean the full lattice is used. Measured:
    tanh, GELU, sin and softplus at five (a, b, c, ν, ν') with :math:`|\nu|` up to 3 and
    up to 3 standard deviations agree with ``scipy.integrate.dblquad`` to 3e-14 of
    :math:`E|hh'|`, either order of the pair; ``tests/test_quadrature.py`` checks tanh and
    softplus against dblquad and sin against its closed form (variances to 1e4, means to
    100) at 1e-10.
    """
    arrays = [np.asarray(v, dtype=np.float64) for v in (a, b, c)]
    shifted = nu is not None or nu_p is not None
    if shifted:
        arrays += [np.asarray(0.0 if v is None else v, dtype=np.float64) for v in (nu, nu_p)]
    arrays = np.broadcast_arrays(*arrays)
    shape = arrays[0].shape
    a, b, c = (v.ravel() for v in arrays[:3])
    n1, n2 = (v.ravel() for v in arrays[3:]) if shifted else (np.zeros(a.size),) * 2
    # The larger variance goes first: then |L21| <= L11, so only the first axis carries the
    # large scale (a kernel between a data point and a far lattice point needs fine steps
    # along one axis, not two). E[h(z) h(z')] is symmetric in the pair, so each mean moves
    # with its variance.
    swap = b > a
    a, b = np.where(swap, b, a), np.where(swap, a, b)
    n1, n2 = np.where(swap, n2, n1), np.where(swap, n1, n2)
    growth, sym, R = _activation_profile(activation, rtol)
    moved = bool(np.any(n1) or np.any(n2))
    if moved:
        sym = 0  # h(nu + z) has no parity in z
    L11 = np.sqrt(np.clip(a, 0.0, None))
    safe = np.where(L11 > 0, L11, 1.0)
    L21 = np.where(L11 > 0, c / safe, 0.0)
    L22 = np.sqrt(np.clip(b - L21 * L21, 0.0, None))
    s1 = _bucket(np.maximum(L11, np.abs(L21)))
    s2 = _bucket(L22)
    out = np.empty(len(a))
    keys, inverse = np.unique(np.stack([s1, s2], axis=1), axis=0, return_inverse=True)
    for g, (k1, k2) in enumerate(keys):
        sel = np.flatnonzero(inverse.ravel() == g)
        steps = np.array([_pair_step(activation, float(k1), rtol, R),
                          _pair_step(activation, float(k2), rtol, R)])
        acc = np.zeros(len(sel))
        for u, w in _pair_nodes(float(steps[0]), float(steps[1]), R, sym != 0):
            per = max(1, 4_000_000 // len(u))
            for lo in range(0, len(sel), per):
                idx = sel[lo : lo + per]
                z1 = L11[idx, None] * u[None, :, 0]
                z2 = L21[idx, None] * u[None, :, 0] + L22[idx, None] * u[None, :, 1]
                if moved:  # the zero-mean kernel skips the two additions
                    z1 += n1[idx, None]
                    z2 += n2[idx, None]
                acc[lo : lo + per] += (
                    np.asarray(activation(z1), np.float64) * np.asarray(activation(z2), np.float64)
                ) @ w
        out[sel] = acc
    return out.reshape(shape)
