r"""Two-vertex integrals of the second-order Feynman diagrams on the cutoff box.

Every second-order diagram of the NGP effective action (physics.md §5;
:func:`nngp_ppl.theory.diagrams.second_order_diagrams`) reduces to a *two-vertex integral*

.. math:: I^{(m_1 \ell_1, m_2 \ell_2; L)}_{u v}(\Lambda) =
    \int_{B_\Lambda} d^{d}y_1 \int_{B_\Lambda} d^{d}y_2\;
    \prod_{a \in u} \tilde K(x_a, y_1)\, \tilde K(y_1, y_1)^{\ell_1}\;
    \tilde K(y_1, y_2)^{L}\;
    \prod_{b \in v} \tilde K(x_b, y_2)\, \tilde K(y_2, y_2)^{\ell_2},

:math:`B_\Lambda = [-\Lambda, \Lambda]^{d_{in}}`, for multisets ``u`` (:math:`m_1` inputs on
vertex 1) and ``v`` (:math:`m_2` inputs on vertex 2), :math:`\ell_i` self-loops and
:math:`L` lines between the vertices. :math:`\tilde K` is the vertex-leg propagator of
:mod:`nngp_ppl.theory.lattice` (``"full"``: K; ``"bias_subtracted"``: K - σ_b²).

Discretisation. With the box rule :math:`(y_p, w_p)_{p=1..P}` of
:func:`nngp_ppl.theory.lattice.box_lattice` (composite Gauss–Legendre, cut at the inputs and
at 0, geometric panels out to Λ) on *both* vertex positions, the integral is a matrix
product of per-site *leg factors* with the inter-vertex propagator matrix:

.. math:: I = A_1\, M^{\circ L} A_2^{\mathsf T},\qquad
    (A_i)_{u p} = w_p \prod_{a\in u}\tilde K(x_a, y_p)\,\tilde K(y_p, y_p)^{\ell_i},\qquad
    M_{pq} = \tilde K(y_p, y_q)

(:math:`\circ L`: elementwise power). Every tuple is one row of :math:`A`; there is no
loop over tuples. :math:`M` is formed one block of rows at a time, so the memory is
:math:`O(B P + T P)` for a block of ``B`` rows, never :math:`O(P^2)`. With :math:`L = 0`
(no line between the vertices) the integral factorises into two first-order integrals.

Accuracy (measured; tests/test_second_order.py, benchmarks/second_order.py). The only
non-smooth feature the vertex-leg cuts miss is the diagonal :math:`y_1 = y_2` of
:math:`\tilde K(y_1, y_2)^L`; the Erf and Gauss kernels are analytic there and the ReLU
kernel with σ_b > 0 has a :math:`|\theta|^3` cusp (θ the angle between (σ_b, σ_W y_1) and
(σ_b, σ_W y_2)) whose effect on the d_in = 1 tensor rule is <= 2e-10 relative. d_in = 1: the
default rule agrees with scipy's adaptive ``dblquad`` (split at 0 and at the diagonal) to
better than 1e-9 relative. d_in = 2 (benchmarks/second_order.py, paper corner inputs):
the default rule (8 nodes per panel, P = 16384 points at Λ = 30) agrees with a finer one
(10 nodes, P = 25600) to 6e-7 for Erf, with the propagator matrix built 32 MiB at a time
instead of 2 GiB whole; for the Gauss-net the ridge below limits it to 1e-4..7e-4 at Λ = 30
(a warning says so).

Ridge kernels. The Gauss-net kernel is translation-invariant up to a constant, so
:math:`\tilde K(y_1, y_2)` keeps a ridge of fixed width along the diagonal out to the cutoff,
which geometric panels miss (0.2–2 % at Λ = 100). For d_in = 1 such a kernel (detected
numerically, :func:`has_ridge`) is split as :math:`\tilde K = c_0 + R` with R decaying
within a band :math:`|y_1 - y_2| \le b` (:func:`ridge_split`); the :math:`c_0^L` term
factorises and the terms with a power of R integrate the second vertex over the band
around each node of the first (banded method; cost ~ log Λ). It agrees with fixed-width
panels on both vertices (:func:`ridge_rule`, cost ∝ Λ²) to 1e-12 and with dblquad to 1e-15.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from functools import cache
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import _checks
from .. import tuples as _tuples
from .._checks import NNGPInputError
from . import lattice as _lattice

# Entries of one block of the inter-vertex propagator matrix (rows x P): 2^22 float64 = 32 MiB.
BLOCK_BUDGET = 2**22


class TwoVertexKey(NamedTuple):
    """Shape of a two-vertex integral: inputs and self-loops on each vertex, lines between."""

    m1: int
    loops1: int
    m2: int
    loops2: int
    lines: int

    def swapped(self) -> TwoVertexKey:
        return TwoVertexKey(self.m2, self.loops2, self.m1, self.loops1, self.lines)

    def canonical(self) -> TwoVertexKey:
        """The key with the vertex of fewer (inputs, loops) second: the integral of the
        swapped key is the transpose, so only canonical keys are computed."""
        return self if (self.m1, self.loops1) >= (self.m2, self.loops2) else self.swapped()


def _check_key(key) -> TwoVertexKey:
    try:
        key = TwoVertexKey(*key)
    except TypeError:
        raise NNGPInputError(
            f"keys must be (m1, loops1, m2, loops2, lines) tuples of non-negative integers, "
            f"got {key!r}"
        ) from None
    for name, v in zip(TwoVertexKey._fields, key, strict=True):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise NNGPInputError(f"keys: {name} must be a non-negative integer, got {v!r}")
    return TwoVertexKey(*(int(v) for v in key))


def _leg_factors(Kxy, dgl, w, rows: np.ndarray, loops: int):
    """(T, *P): w_p Π_{a∈row} K̃(x_a, y_p) K̃(y_p, y_p)^loops (P any shape)."""
    out = jnp.broadcast_to(w * dgl**loops, (rows.shape[0], *w.shape))
    for a in range(rows.shape[1]):
        out = out * Kxy[rows[:, a]]
    return out


@cache
def _integral_fn(net, propagator: str, k: int, keys: tuple[TwoVertexKey, ...], block: int):
    """jit-compiled (Y (P, d), w (P,), X (k, d)) -> tuple of (T_m1, T_m2), one per key.

    P must be a multiple of ``block``; the propagator matrix is built ``block`` rows at a
    time inside a scan, and each row block is contracted at once with the right-hand leg
    factors of every key (grouped by power of the propagator)."""
    cross, diag = _lattice.propagator_kernels(net, propagator)
    rows = {m: _tuples.distinct_tuples(k, m) for key in keys for m in (key.m1, key.m2)}
    legs = sorted({(key.m1, key.loops1) for key in keys} | {(key.m2, key.loops2) for key in keys})
    powers = sorted({key.lines for key in keys if key.lines > 0})
    # Right-hand leg factors needed per power, stacked so that one matmul serves them all.
    right = {L: sorted({(key.m2, key.loops2) for key in keys if key.lines == L}) for L in powers}

    def fn(Y, w, X):
        Kxy = jax.lax.optimization_barrier(cross(X, Y))
        dgl = diag(Y)
        A = {leg: _leg_factors(Kxy, dgl, w, rows[leg[0]], leg[1]) for leg in legs}
        stacks = {L: jnp.concatenate([A[leg] for leg in right[L]], axis=0) for L in powers}
        P = Y.shape[0]
        nb = P // block

        def body(acc, b):
            Yb = jax.lax.dynamic_slice_in_dim(Y, b * block, block)
            Mb = cross(Yb, Y)  # (block, P)
            new = {}
            for L in powers:
                R = (Mb**L) @ stacks[L].T  # (block, ΣT2)
                for key in keys:
                    if key.lines != L:
                        continue
                    left = jax.lax.dynamic_slice_in_dim(A[(key.m1, key.loops1)], b * block,
                                                        block, axis=1)
                    start = sum(A[leg].shape[0] for leg in right[L][: right[L].index(
                        (key.m2, key.loops2))])
                    T2 = A[(key.m2, key.loops2)].shape[0]
                    new[key] = acc[key] + left @ R[:, start:start + T2]
            return new, None

        init = {key: jnp.zeros((A[(key.m1, key.loops1)].shape[0],
                                A[(key.m2, key.loops2)].shape[0]))
                for key in keys if key.lines > 0}
        acc = init
        if init:
            acc, _ = jax.lax.scan(body, init, jnp.arange(nb))
        out = []
        for key in keys:
            if key.lines == 0:
                s1 = jnp.sum(A[(key.m1, key.loops1)], axis=1)
                s2 = jnp.sum(A[(key.m2, key.loops2)], axis=1)
                out.append(s1[:, None] * s2[None, :])
            else:
                out.append(acc[key])
        return tuple(out)

    return jax.jit(fn)


def _block_rows(P: int, d_in: int, block_budget: int) -> int:
    return max(1, min(P, block_budget // max(1, P)))


def _padded(points: np.ndarray, weights: np.ndarray, size: int):
    """Pad to ``size`` points with zero weight (a copy of the first point), so that every
    cutoff shares one compiled shape."""
    extra = size - len(weights)
    pts = np.concatenate([points, np.repeat(points[:1], extra, axis=0)])
    w = np.concatenate([weights, np.zeros(extra)])
    return pts, w


@cache
def has_ridge(net, propagator: str = "full") -> bool:
    """Whether the inter-vertex propagator keeps a ridge of fixed width along y1 = y2 far
    from the inputs (a translation-invariant part, e.g. Gauss-net), probed numerically.

    Erf and ReLU kernels depend on the *angle* between far points, so their variation
    length grows like |y| and the geometric panels of the box rule resolve them; a kernel
    that still drops by more than 0.1 % over one kernel scale at |y| = 10^3 scales does not,
    and gets panels of fixed width (see :func:`ridge_rule`)."""
    scale = _lattice.kernel_scale(net)
    cross, _ = _lattice.propagator_kernels(net, propagator)
    y0 = np.zeros((1, net.d_in))
    y0[0, 0] = 1e3 * scale
    y1 = y0.copy()
    y1[0, 0] += scale
    on = float(cross(jnp.asarray(y0), jnp.asarray(y0))[0, 0])
    off = float(cross(jnp.asarray(y0), jnp.asarray(y1))[0, 0])
    return abs(on - off) > 1e-3 * max(abs(on), 1e-300)


# Nodes per axis the fixed-width panels of a ridge rule may use (P^2 = 6.7e7 matrix entries,
# built in blocks): enough for d_in = 1 cutoffs up to ~ 400 kernel scales.
RIDGE_MAX_NODES = 8192
_RIDGE_NODES = 10  # per panel of one kernel scale: the Gaussian ridge to round-off


def ridge_rule(net, X, cutoff: float, *, nodes: int | None = None, ratio: float | None = None,
               max_nodes: int = RIDGE_MAX_NODES) -> _lattice.Lattice:
    """1-d composite Gauss–Legendre rule whose panels are at most one kernel scale wide out
    to the cutoff, so that a ridge of fixed width along y1 = y2 is resolved everywhere.

    Panels are cut at the inputs and at 0 (as in :func:`nngp_ppl.theory.lattice.box_lattice`);
    when the fixed-width panels would need more than ``max_nodes`` nodes they stop at the
    radius the budget allows and geometric panels (``ratio``, default 2) continue to the
    cutoff; the ridge is then under-resolved beyond that radius and a warning says so."""
    if net.d_in != 1:
        raise NNGPInputError("ridge_rule is the d_in = 1 rule; d_in >= 2 uses box_lattice")
    scale = _lattice.kernel_scale(net)
    q = _RIDGE_NODES if nodes is None else _checks.positive_int("nodes", nodes)
    r = 2.0 if ratio is None else float(ratio)
    xs = np.asarray(X, dtype=np.float64).reshape(-1)
    reach = max(float(np.max(np.abs(xs))), (max_nodes // q) * scale / 2)
    R = min(cutoff, reach)
    cuts = np.unique(np.concatenate([xs, [0.0, -R, R]]))
    edges = [float(cuts[0])]
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        pieces = max(1, math.ceil((b - a) / scale - 1e-9))
        edges.extend(float(a + (b - a) * (i + 1) / pieces) for i in range(pieces))
    edges = np.asarray(edges)
    if R < cutoff:
        warnings.warn(
            f"the inter-vertex propagator of {type(net).__name__} has a ridge of fixed width "
            f"along y1 = y2; it is resolved out to |y| = {R:g} only ({max_nodes} nodes), not "
            f"to the cutoff {cutoff:g}: two-vertex integrals lose accuracy (raise max_nodes)",
            stacklevel=3,
        )
        n_geo = max(1, math.ceil(math.log(cutoff / R) / math.log(r)))
        geo = R * (cutoff / R) ** (np.arange(1, n_geo + 1) / n_geo)
        edges = np.concatenate([-geo[::-1], edges, geo])
    t, w = np.polynomial.legendre.leggauss(q)
    lo, hi = edges[:-1, None], edges[1:, None]
    pts = (lo + (hi - lo) * (t + 1) / 2).reshape(-1, 1)
    wts = ((hi - lo) / 2 * w).reshape(-1)
    return _lattice.Lattice(pts, wts, "explicit", None, None)


def _rules(net, X, cutoffs: np.ndarray, nodes, ratio, propagator="full"):
    if net.d_in == 1 and has_ridge(net, propagator):
        return [ridge_rule(net, X, float(c), nodes=nodes, ratio=ratio) for c in cutoffs]
    scale = _lattice.kernel_scale(net)
    return [_lattice.box_lattice(net.d_in, float(c), "gauss_legendre", split_points=X,
                                 nodes=nodes, ratio=ratio, scale=scale) for c in cutoffs]


@cache
def ridge_split(net, propagator: str = "full") -> tuple[float, float]:
    """(c0, half_width) of a ridge kernel (:func:`has_ridge`): the constant c0 that the
    inter-vertex propagator K̃(y, z) tends to for |y - z| → ∞, and the distance beyond which
    R = K̃ - c0 is below 1e-17 of its diagonal value (probed at the origin and at ±10^3
    kernel scales). For the Gauss-net c0 = σ_b² (full) or 0 (bias-subtracted) and R is
    σ_W² exp(-σ_W² (y - z)² / 2). Raises NNGPInputError if R does not decay."""
    scale = _lattice.kernel_scale(net)
    cross, _ = _lattice.propagator_kernels(net, propagator)

    def k(y, z):
        return float(cross(jnp.full((1, 1), y), jnp.full((1, 1), z))[0, 0])

    far = 1e3 * scale
    c0 = k(far, -far)
    for m in range(2, 61):
        c = m * scale
        if all(abs(k(y, y + c) - c0) <= 1e-17 * abs(k(y, y) - c0) for y in (0.0, far, -far)):
            return c0, c
    raise NNGPInputError(
        f"the inter-vertex propagator of {type(net).__name__} has a ridge along y = z that "
        f"does not decay to a constant within 60 kernel scales; use ridge_method='uniform'"
    )


def _banded_rule(X, cutoff: float, scale: float, band: float, q: int = 16):
    """1-d rule for the outer vertex of the banded method: panels at most scale/2 wide on
    [-S, S] (cut at the inputs and 0), at most one scale wide within ``band`` of ±Λ (where
    the band integral drops), geometric panels of ratio <= 2 between."""
    xs = np.asarray(X, dtype=np.float64).reshape(-1)
    S = max(float(np.max(np.abs(xs))), 2.0 * scale)

    def uniform(a, b, width):
        pieces = max(1, math.ceil((b - a) / width - 1e-9))
        return [a + (b - a) * i / pieces for i in range(1, pieces + 1)]

    E = cutoff - band
    if E <= 2 * S:
        cuts = np.unique(np.concatenate([xs, [0.0, -cutoff, cutoff]]))
        edges = [float(cuts[0])]
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            edges += uniform(a, b, scale / 2)
        edges = np.asarray(edges)
    else:
        cuts = np.unique(np.concatenate([xs, [0.0, -S, S]]))
        edges = [float(cuts[0])]
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            edges += uniform(a, b, scale / 2)
        n_geo = max(1, math.ceil(math.log(E / S) / math.log(2.0) - 1e-9))
        pos = list(S * (E / S) ** (np.arange(1, n_geo + 1) / n_geo))
        pos += uniform(E, cutoff, scale)
        edges = np.concatenate([-np.asarray(pos[::-1]), edges, np.asarray(pos)])
    t, w = np.polynomial.legendre.leggauss(q)
    lo, hi = edges[:-1, None], edges[1:, None]
    return (lo + (hi - lo) * (t + 1) / 2).reshape(-1), ((hi - lo) / 2 * w).reshape(-1)


_BAND_NODES = 8  # Gauss-Legendre nodes per kernel scale across the band


@cache
def _banded_fn(net, propagator: str, k: int, keys: tuple[TwoVertexKey, ...], block: int,
               c0: float):
    """jit-compiled (y (P,), w (P,), lo (P,), hi (P,), t (Q,), wt (Q,), X) -> integrals.

    I = Σ_j C(L, j) c0^(L-j) ∫dy A1(y) ∫_{|z-y| <= band} R(y, z)^j A2(z) dz: the j = 0 term
    factorises; for j >= 1 the inner integral runs over the band [y + lo, y + hi] (clipped
    to the box) with its own nodes per outer node, ``block`` outer nodes at a time."""
    cross, diag = _lattice.propagator_kernels(net, propagator)
    rows = {m: _tuples.distinct_tuples(k, m) for key in keys for m in (key.m1, key.m2)}
    right = sorted({(key.m2, key.loops2) for key in keys if key.lines > 0})
    legs = sorted({(key.m1, key.loops1) for key in keys} | {(key.m2, key.loops2) for key in keys})

    def fn(y, w, lo, hi, t, wt, X):
        Y = y[:, None]
        Kxy = jax.lax.optimization_barrier(cross(X, Y))
        dgl = diag(Y)
        A = {leg: _leg_factors(Kxy, dgl, w, rows[leg[0]], leg[1]) for leg in legs}
        nb = y.shape[0] // block

        def body(acc, b):
            yb = jax.lax.dynamic_slice_in_dim(y, b * block, block)
            lob = jax.lax.dynamic_slice_in_dim(lo, b * block, block)
            hib = jax.lax.dynamic_slice_in_dim(hi, b * block, block)
            Z = yb[:, None] + lob[:, None] + (hib - lob)[:, None] * (t[None, :] + 1) / 2
            om = (hib - lob)[:, None] / 2 * wt[None, :]  # (B, Q)
            R = jax.vmap(lambda a, zs: cross(a[None, None], zs[:, None])[0])(yb, Z) - c0
            flat = Z.reshape(-1, 1)
            Kxz = cross(X, flat).reshape(k, *Z.shape)
            dz = diag(flat).reshape(Z.shape)
            new = dict(acc)
            for leg in right:
                A2 = _leg_factors(Kxz, dz, om, rows[leg[0]], leg[1])  # (T2, B, Q)
                mine = [key for key in keys if key.lines > 0 and (key.m2, key.loops2) == leg]
                inner = {j: jnp.einsum("tbq,bq->tb", A2, R**j)
                         for j in range(1, max(key.lines for key in mine) + 1)}
                for key in mine:
                    left = jax.lax.dynamic_slice_in_dim(A[(key.m1, key.loops1)], b * block,
                                                        block, axis=1)
                    band = sum(math.comb(key.lines, j) * c0 ** (key.lines - j) * inner[j]
                               for j in range(1, key.lines + 1))
                    new[key] = new[key] + left @ band.T
            return new, None

        init = {key: jnp.zeros((A[(key.m1, key.loops1)].shape[0],
                                A[(key.m2, key.loops2)].shape[0]))
                for key in keys if key.lines > 0}
        acc = jax.lax.scan(body, init, jnp.arange(nb))[0] if init else init
        out = []
        for key in keys:
            s1 = jnp.sum(A[(key.m1, key.loops1)], axis=1)
            s2 = jnp.sum(A[(key.m2, key.loops2)], axis=1)
            sep = c0**key.lines * s1[:, None] * s2[None, :]
            out.append(sep + acc[key] if key.lines > 0 else sep)
        return tuple(out)

    return jax.jit(fn)


def _banded_integrals(net, X, keys, cutoffs, propagator, block_budget):
    """Two-vertex integrals of a d_in = 1 ridge kernel by the banded method (see
    :func:`two_vertex_integrals`): list over cutoffs of tuples over ``keys``."""
    scale = _lattice.kernel_scale(net)
    c0, band = ridge_split(net, propagator)
    n_pan = math.ceil(2 * band / scale)
    tq, wq = np.polynomial.legendre.leggauss(_BAND_NODES)
    t = ((np.arange(n_pan)[:, None] + (tq + 1) / 2) * 2 / n_pan - 1).reshape(-1)
    wt = np.tile(wq / n_pan, n_pan)
    k = X.shape[0]
    T2 = max([math.comb(k + key.m2 - 1, key.m2) for key in keys] + [1])
    rules = [_banded_rule(X, float(c), scale, band) for c in cutoffs]
    P = max(len(r[0]) for r in rules)
    block = max(1, min(P, block_budget // (T2 * len(t))))
    size = block * math.ceil(P / block)
    fn = _banded_fn(net, propagator, k, keys, block, float(c0))
    out = []
    for cut, (y, w) in zip(cutoffs, rules, strict=True):
        extra = size - len(y)
        y = np.concatenate([y, np.zeros(extra)])
        w = np.concatenate([w, np.zeros(extra)])
        lo = np.maximum(-band, -cut - y)
        hi = np.minimum(band, cut - y)
        res = fn(*(jnp.asarray(a) for a in (y, w, lo, hi, t, wt, X)))
        out.append([np.asarray(v) for v in res])
    return out


def two_vertex_integrals(
    net,
    X,
    keys: Iterable,
    cutoffs=None,
    propagator: str = "full",
    lattice=None,
    *,
    nodes: int | None = None,
    ratio: float | None = None,
    block_budget: int = BLOCK_BUDGET,
    ridge_method: str = "banded",
) -> dict[TwoVertexKey, np.ndarray]:
    """Two-vertex integrals (module docstring) for every key, at every cutoff.

    ``keys`` are ``(m1, loops1, m2, loops2, lines)`` tuples (:class:`TwoVertexKey`). Returns
    ``{key: array (C, T_m1, T_m2)}`` with rows and columns on
    ``tuples.distinct_tuples(k, m1)`` and ``(k, m2)``. ``cutoffs`` is a number or 1-d array
    (C of them); with an explicit ``lattice`` (a :class:`nngp_ppl.theory.lattice.Lattice`)
    both vertices run over its points and weights and C = 1. ``nodes`` and ``ratio`` set the
    Gauss–Legendre rule (defaults of :func:`nngp_ppl.theory.lattice.box_lattice`);
    ``block_budget`` bounds the entries of one block of the propagator matrix.

    A d_in = 1 kernel with a ridge along y1 = y2 (:func:`has_ridge`, the Gauss-net) is
    integrated by ``ridge_method="banded"`` (default): K̃(y, z)^L = Σ_j C(L, j) c0^(L-j)
    R(y, z)^j with c0 the far off-diagonal constant and R decaying within a band
    |y - z| <= b (:func:`ridge_split`); the j = 0 term factorises and for j >= 1 the inner
    vertex runs over the band around each node of the outer one (eight Gauss–Legendre
    nodes per kernel scale), so the cost grows like log Λ. ``"uniform"`` uses
    :func:`ridge_rule` on both vertices instead (cost ∝ Λ², for cross-checks).
    """
    _lattice.check_propagator(propagator)
    X = _checks.inputs("X", X, net.d_in)
    k = X.shape[0]
    if isinstance(keys, (str, bytes)) or not isinstance(keys, Iterable):
        raise NNGPInputError(f"keys must be a list of (m1, loops1, m2, loops2, lines) tuples, "
                             f"got {keys!r}")
    wanted = [_check_key(key) for key in keys]
    canon = tuple(sorted({key.canonical() for key in wanted}))
    block_budget = _checks.positive_int("block_budget", block_budget)
    if lattice is not None:
        if not isinstance(lattice, _lattice.Lattice):
            raise NNGPInputError(f"lattice must be a Lattice (see box_lattice), got {lattice!r}")
        if lattice.d_in != net.d_in:
            raise NNGPInputError(f"lattice has d_in={lattice.d_in} but the net has "
                                 f"d_in={net.d_in}")
        rules = [lattice]
    else:
        lam = _lattice.check_cutoffs(cutoffs, float(np.max(np.abs(X))), "cutoffs")
        if lam.ndim > 1:
            raise NNGPInputError(f"cutoffs must be a number or a 1-d array, got {lam.shape}")
        if ridge_method not in ("banded", "uniform"):
            raise NNGPInputError(f"ridge_method must be 'banded' or 'uniform', got "
                                 f"{ridge_method!r}")
        if ridge_method == "banded" and net.d_in == 1 and has_ridge(net, propagator):
            per_cutoff = _banded_integrals(net, X, canon, lam.reshape(-1), propagator,
                                           block_budget)
            return _assemble(wanted, canon, per_cutoff)
        if net.d_in > 1 and has_ridge(net, propagator):
            warnings.warn(
                f"the inter-vertex propagator of {type(net).__name__} has a ridge of fixed "
                f"width along y1 = y2 that the d_in = {net.d_in} box rule resolves only near "
                f"the inputs: measured 1e-4..7e-4 relative error at cutoff 30 for the paper's "
                f"Gauss-net in d_in = 2 (benchmarks/second_order.py), growing with the cutoff",
                stacklevel=2,
            )
        rules = _rules(net, X, lam.reshape(-1), nodes, ratio, propagator)
    P = max(len(r) for r in rules)
    block = _block_rows(P, net.d_in, block_budget)
    size = block * math.ceil(P / block)
    fn = _integral_fn(net, propagator, k, canon, block)
    per_cutoff = []
    for rule in rules:
        pts, w = _padded(np.asarray(rule.points), np.asarray(rule.weights), size)
        per_cutoff.append([np.asarray(v) for v in fn(jnp.asarray(pts), jnp.asarray(w),
                                                     jnp.asarray(X))])
    return _assemble(wanted, canon, per_cutoff)


def _assemble(wanted, canon, per_cutoff):
    """{key: (C, T_m1, T_m2)} for the requested keys from per-cutoff canonical results."""
    stacked = {key: np.stack([c[i] for c in per_cutoff]) for i, key in enumerate(canon)}
    out = {}
    for key in wanted:
        value = stacked[key.canonical()]
        out[key] = value if key == key.canonical() else np.swapaxes(value, 1, 2)
    return out


def memory_estimate(net, X, keys, cutoff, propagator: str = "full", *, nodes=None,
                    ratio=None, block_budget: int = BLOCK_BUDGET) -> dict:
    """Size of the work of :func:`two_vertex_integrals` at one ``cutoff``: ``method``
    ("matrix" or "banded"), points P of the rule, rows per block, float64 bytes of one
    block (of the propagator matrix, or of the band's leg factors) and of the leg factors,
    and of the whole P x P matrix that the blocks avoid."""
    X = _checks.inputs("X", X, net.d_in)
    k = X.shape[0]
    keys = [_check_key(key) for key in keys]
    legs = {(key.m1, key.loops1) for key in keys} | {(key.m2, key.loops2) for key in keys}
    T = sum(math.comb(k + m - 1, m) for m, _ in legs)
    if net.d_in == 1 and has_ridge(net, propagator):
        scale = _lattice.kernel_scale(net)
        _, band = ridge_split(net, propagator)
        P = len(_banded_rule(X, float(cutoff), scale, band)[0])
        Q = _BAND_NODES * math.ceil(2 * band / scale)
        T2 = max(math.comb(k + key.m2 - 1, key.m2) for key in
                 (key.canonical() for key in keys))
        block = max(1, min(P, block_budget // (T2 * Q)))
        return {"method": "banded", "points": P, "band_nodes": Q, "block_rows": block,
                "block_bytes": 8 * T2 * block * Q, "leg_bytes": 8 * T * P,
                "full_matrix_bytes": 8 * P * P}
    (rule,) = _rules(net, X, np.atleast_1d(float(cutoff)), nodes, ratio, propagator)
    P = len(rule)
    block = _block_rows(P, net.d_in, block_budget)
    return {"method": "matrix", "points": P, "block_rows": block, "block_bytes": 8 * block * P,
            "leg_bytes": 8 * T * P, "full_matrix_bytes": 8 * P * P}


__all__ = ["BLOCK_BUDGET", "TwoVertexKey", "has_ridge", "memory_estimate", "ridge_rule",
           "ridge_split", "two_vertex_integrals"]
