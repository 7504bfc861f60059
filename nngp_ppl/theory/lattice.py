r"""The cutoff box :math:`[-\Lambda, \Lambda]^{d_{in}}` and the vertex integrals on it.

The effective action of physics.md §5 integrates its interaction over the box

.. math:: S = S_{GP} + \int_{[-\Lambda,\Lambda]^{d_{in}}} d^{d_{in}}y\,
    \sum_c g_c f(y)^{k_c}

(λ = g₄, κ = g₆, odd k too: :mod:`nngp_ppl.theory.operators`), and every first-order
Feynman diagram (physics.md §6) reduces to a *vertex integral*

.. math:: I_t^{(\ell)}(\Lambda) = \int_{[-\Lambda,\Lambda]^{d_{in}}} d^{d_{in}}y\;
    \prod_{a \in t} \tilde K(x_a, y)\; \tilde K(y, y)^{\ell}

for a multiset ``t`` of input indices (the external points joined to the vertex) and
:math:`\ell` vertex self-loops. :math:`\tilde K` is the propagator on the vertex legs:
``"full"`` uses the GP kernel :math:`K` (the paper's first version), ``"bias_subtracted"``
uses :math:`K - \sigma_b^2` (its revised version: the output bias :math:`b_1` is exactly
Gaussian and carries no interaction).

Two discretisations of the box:

* ``uniform``: the lattice on which a discretised action lives; cells of side ``a`` tile the
  box and each site (a cell midpoint) carries the weight :math:`a^{d_{in}}` (midpoint rule).
* ``gauss_legendre``: the accurate continuum limit. On each axis the interval is cut at the
  inputs' coordinates, at 0 (the ReLU kink, and the axis splits of the authors' scipy
  quadrature) and at a kernel length scale; beyond the inputs the panels grow geometrically,
  :math:`s\,(\Lambda/s)^{j/n}`, so that kernels that flatten out or grow like a power of
  :math:`|y|` are integrated to round-off up to :math:`\Lambda = 10^5` and beyond. Each
  panel carries ``q`` Gauss–Legendre nodes; the box is their tensor product.

The continuum integrals are pure JAX functions of the cutoff, vectorised over tuples and over
cutoffs, and differentiable in :math:`\Lambda`: the derivative is the exact surface term

.. math:: \frac{dI}{d\Lambda} = \sum_{i=1}^{d_{in}} \sum_{\pm}
    \int_{[-\Lambda,\Lambda]^{d_{in}-1}} F(y)\big|_{y_i = \pm\Lambda}\, dy_{\neq i},

supplied as a custom JVP, so it never differentiates the kernel (whose ReLU form has
infinite slope where :math:`\cos\theta = \pm 1`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache, lru_cache, partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import _checks
from .._checks import NNGPInputError
from ..vocabulary import check_propagator, propagator_shift

__all__ = [
    "LATTICE_KINDS",
    "MAX_AXIS_NODES",
    "MAX_BOX_POINTS",
    "MAX_CUTOFF",
    "Lattice",
    "check_propagator",
    "propagator_kernels",
    "check_cutoffs",
    "kernel_scale",
    "check_box",
    "box_lattice",
    "vertex_integral_function",
    "vertex_integrals",
    "vertex_integral_exponents",
]

LATTICE_KINDS = ("gauss_legendre", "uniform")

# Quadrature defaults per input dimension: (nodes per panel, geometric panel ratio). Chosen by
# measurement against scipy adaptive quadrature and closed forms (tests/test_lattice.py) on
# the paper's nets and inputs, Λ = 7 .. 1e5: relative error <= 2e-13 for d_in = 1 and
# <= 5e-7 for d_in = 2, 3 (1e-6 and 1e-4 required).
_DEFAULT_RULE = {1: (16, 2.0), 2: (8, 4.0), 3: (5, 6.0)}
# Cutoff the geometric panels are sized for when the cutoff is a tracer (under jax.grad or
# jit) and no ``max_cutoff`` is given: the paper's largest cutoff times ten.
_TRACED_MAX_CUTOFF = 1e6
# Point budget (points x tuples) of one vectorised slab of the tensor-product rule.
_SLAB_BUDGET = 2**20
#: Most quadrature nodes on one axis. In d_in = 1 the whole axis is one vectorised product
#: table of (tuples x nodes) float64: 462 six-point tuples x 2**16 nodes is 240 MB. The
#: paper's boxes at Λ = 1e5 have 672-736 nodes per axis in d_in = 1 and 115-120 in
#: d_in = 3 (measured); the bound is reached only when the inputs span about a thousand
#: kernel length scales.
MAX_AXIS_NODES = 2**16
#: Most points of a tensor-product box (d_in >= 2): bounds the time of one vertex integral
#: (the paper's d_in = 3 boxes have 1.5e6-1.7e6).
MAX_BOX_POINTS = 2**25
#: Largest cutoff (:data:`nngp_ppl._checks.MAX_CUTOFF`): the kernel is evaluated on the box's
#: edge, where beyond this size σ_W² y·y/d_in and its products overflow float64.
MAX_CUTOFF = _checks.MAX_CUTOFF


@dataclass(frozen=True, eq=False)
class Lattice:
    """Points and weights of a quadrature (or lattice) rule on the cutoff box.

    ``points`` is (P, d_in), ``weights`` (P,), so that
    :math:`\\int F \\approx \\sum_j w_j F(y_j)`. ``kind`` is ``"gauss_legendre"``,
    ``"uniform"`` or ``"explicit"`` (points given by hand); ``cutoff`` is the half-width of
    the box (``None`` for explicit points), ``spacing`` the site spacing of a uniform lattice.
    """

    points: np.ndarray
    weights: np.ndarray
    kind: str = "explicit"
    cutoff: float | None = None
    spacing: float | None = None

    def __post_init__(self):
        pts = _checks.inputs("lattice points", self.points)
        w = np.asarray(self.weights, dtype=np.float64).reshape(-1)
        if w.shape[0] != pts.shape[0]:
            raise NNGPInputError(
                f"lattice weights must have one entry per point: {pts.shape[0]} points, "
                f"{w.shape[0]} weights"
            )
        if not np.all(np.isfinite(w)):
            raise NNGPInputError("lattice weights must be finite")
        pts.setflags(write=False)
        w.setflags(write=False)
        object.__setattr__(self, "points", pts)
        object.__setattr__(self, "weights", w)

    @property
    def d_in(self) -> int:
        return int(self.points.shape[1])

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def __repr__(self) -> str:
        extra = f", spacing={self.spacing:g}" if self.spacing is not None else ""
        cut = "None" if self.cutoff is None else f"{self.cutoff:g}"
        return f"Lattice(kind={self.kind!r}, d_in={self.d_in}, P={len(self)}, cutoff={cut}{extra})"


# --- one axis of the composite Gauss-Legendre rule -----------------------------------------


class _AxisPlan(NamedTuple):
    """Static layout of one axis.

    ``inner``: fixed panel edges spanning [-S, S] (the inputs' coordinates, 0, and panels no
    wider than half the kernel scale); ``outer``: fixed edges beyond S on each side (ratio-2
    transition panels); then ``n_geo`` geometric panels per side up to the cutoff, with
    ``q`` Gauss-Legendre nodes in every panel.
    """

    inner: tuple[float, ...]
    outer: tuple[float, ...]
    n_geo: int
    q: int


@cache
def _legendre(q: int) -> tuple[np.ndarray, np.ndarray]:
    t, w = np.polynomial.legendre.leggauss(q)
    return t, w


def _axis_plan(coords, cutoff_max: float, scale: float, q: int, ratio: float) -> _AxisPlan:
    """Panel layout for one axis (see :class:`_AxisPlan`): S = max(extent, 2 scale), inner
    panels no wider than scale/2 (a product of six Gauss-net kernels is a Gaussian of width
    ~ scale/2.5), transition edges 2S and 4S, then geometric panels of ratio <= ``ratio``
    from 4S up to ``cutoff_max``."""
    coords = np.asarray(coords, dtype=np.float64).reshape(-1)
    extent = float(np.max(np.abs(coords))) if coords.size else 0.0
    S = max(extent, 2.0 * scale)
    cuts = np.unique(np.concatenate([coords, [0.0, -S, S]]))
    # Merge cuts closer than round-off so no panel is degenerate.
    keep = np.concatenate([[True], np.diff(cuts) > 1e-12 * S])
    cuts = cuts[keep]
    cuts[0], cuts[-1] = -S, S
    pieces = [max(1, math.ceil((b - a) / (0.5 * scale) - 1e-9))
              for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    nodes = q * sum(pieces)
    if nodes > MAX_AXIS_NODES:
        # Counted before the panels are built: a huge extent would otherwise hang here.
        raise NNGPInputError(
            f"X: the inputs span max|x| = {extent:g}, {2 * S / scale:.3g} kernel length scales "
            f"(sqrt(d_in)/sigma_w = {scale:g}); the vertex-integral quadrature would need "
            f"{nodes:.3g} nodes per axis (limit {MAX_AXIS_NODES}); use inputs within about "
            f"{MAX_AXIS_NODES / q * scale / 4:.3g} of the origin"
        )
    inner = [float(cuts[0])]
    for a, b, n in zip(cuts[:-1], cuts[1:], pieces, strict=True):
        inner.extend(float(a + (b - a) * (i + 1) / n) for i in range(n))
    start = 4.0 * S
    n_geo = max(1, math.ceil(math.log(max(cutoff_max, start) / start) / math.log(ratio) - 1e-9))
    return _AxisPlan(tuple(inner), (2.0 * S, start), int(n_geo), int(q))


def _panels(edges, t, w):
    lo, hi = edges[:-1, None], edges[1:, None]
    return (lo + (hi - lo) * (t + 1) / 2).ravel(), ((hi - lo) / 2 * w).ravel()


def _axis_rule(plan: _AxisPlan, lam, xp=jnp):
    """Nodes and weights on [-Λ, Λ] for a (possibly traced) cutoff Λ >= the inputs' extent.

    Every edge is clamped to [-Λ, Λ], so panels beyond the cutoff collapse to zero width and
    the rule never leaves the box; the edges are continuous in Λ. ``xp`` is ``jax.numpy``
    (traceable) or ``numpy`` (concrete lattices).
    """
    t, w = _legendre(plan.q)
    inner = xp.clip(xp.asarray(plan.inner), -lam, lam)
    in_nodes, in_w = _panels(inner, t, w)
    start = plan.outer[-1]
    frac = xp.arange(1, plan.n_geo + 1) / plan.n_geo
    geo = start * (xp.maximum(lam, start) / start) ** frac
    outer = xp.concatenate([xp.asarray([plan.inner[-1], *plan.outer]), geo])
    out_nodes, out_w = _panels(xp.minimum(outer, lam), t, w)
    nodes = xp.concatenate([-out_nodes[::-1], in_nodes, out_nodes])
    weights = xp.concatenate([out_w[::-1], in_w, out_w])
    return nodes, weights


def _grid(rules):
    """Tensor product of 1-d rules: points (M, len(rules)) and weights (M,)."""
    if not rules:
        return jnp.zeros((1, 0)), jnp.ones(1)
    nodes = jnp.meshgrid(*[r[0] for r in rules], indexing="ij")
    weights = jnp.meshgrid(*[r[1] for r in rules], indexing="ij")
    pts = jnp.stack([g.ravel() for g in nodes], axis=-1)
    w = weights[0].ravel()
    for g in weights[1:]:
        w = w * g.ravel()
    return pts, w


# --- integrands --------------------------------------------------------------------------


def propagator_kernels(net, propagator: str):
    """Traceable ``(cross, diag)``: :math:`\\tilde K(X, Y)` and :math:`\\tilde K(y, y)` for
    each row y of Y, with :math:`\\tilde K = K - c` for the chosen vertex-leg propagator
    (c from :func:`nngp_ppl.vocabulary.propagator_shift`)."""
    shift = propagator_shift(net, propagator)

    def cross(X, Y):
        return net.traced_kernel(X, Y) - shift

    def diag(Y):
        return jax.vmap(lambda y: net.traced_kernel(y[None, :], y[None, :])[0, 0])(Y) - shift

    return cross, diag


def _weighted_products(cross, diag, X, rows, loops: int, Y, w):
    """Σ_j w_j Π_{a∈row} K(x_a, y_j) K(y_j, y_j)^loops for every row: (T,)."""
    # The barrier makes XLA materialise the kernel table once; otherwise it fuses the
    # (transcendental) kernel into every gathered product and recomputes it T*m times.
    Kxy = jax.lax.optimization_barrier(cross(X, Y))  # (k, M)
    if loops:
        w = w * diag(Y) ** loops
    if rows.shape[1] == 0:
        return jnp.broadcast_to(jnp.sum(w), (rows.shape[0],))
    prod = Kxy[rows[:, 0]]
    for a in range(1, rows.shape[1]):
        prod = prod * Kxy[rows[:, a]]
    return prod @ w


def _box_sum(cross, diag, X, rows, loops, rules):
    """Tensor-product rule over the box, one slab of the first axis at a time."""
    first, rest = rules[0], rules[1:]
    Yr, wr = _grid(rest)
    M = Yr.shape[0]
    if not rest:
        Y = first[0][:, None]
        return _weighted_products(cross, diag, X, rows, loops, Y, first[1])

    def slab(arg):
        y0, w0 = arg
        Y = jnp.concatenate([jnp.full((M, 1), y0), Yr], axis=1)
        return w0 * _weighted_products(cross, diag, X, rows, loops, Y, wr)

    batch = max(1, _SLAB_BUDGET // max(1, M * max(1, rows.shape[0])))
    return jnp.sum(jax.lax.map(slab, first, batch_size=batch), axis=0)


def _face_sum(cross, diag, X, rows, loops, rules, lam):
    """Surface term dI/dΛ: Σ over the 2 d faces y_i = ±Λ of the (d-1)-dim integral."""
    d = len(rules)
    total = 0.0
    for i in range(d):
        Yf, wf = _grid(rules[:i] + rules[i + 1 :])
        for sign in (-1.0, 1.0):
            col = jnp.full((Yf.shape[0], 1), sign * lam)
            Y = jnp.concatenate([Yf[:, :i], col, Yf[:, i:]], axis=1)
            total = total + _weighted_products(cross, diag, X, rows, loops, Y, wf)
    return total


@cache
def _integral_kernel(net, propagator: str, plans: tuple[_AxisPlan, ...], loops: int):
    """Pure function (Λ, X, rows) -> (T,) with the surface-term JVP in Λ."""
    cross, diag = propagator_kernels(net, propagator)

    @jax.custom_jvp
    def integral(lam, X, rows):
        rules = [_axis_rule(p, lam) for p in plans]
        return _box_sum(cross, diag, X, rows, loops, rules)

    @partial(integral.defjvp, symbolic_zeros=True)
    def _integral_jvp(primals, tangents):
        lam, X, rows = primals
        dlam, dX, _ = tangents
        if not isinstance(dX, jax.custom_derivatives.SymbolicZero):
            raise NotImplementedError(
                "vertex integrals are differentiable in the cutoff only, not in the inputs X"
            )
        rules = [_axis_rule(p, lam) for p in plans]
        out = _box_sum(cross, diag, X, rows, loops, rules)
        if isinstance(dlam, jax.custom_derivatives.SymbolicZero):
            return out, jnp.zeros_like(out)
        slope = _face_sum(cross, diag, X, rows, loops, rules, lam)
        return out, slope * dlam

    return integral


@cache
def _batched(net, propagator, plans, loops):
    """jit-compiled (Λ array (C,), X, rows) -> (C, T)."""
    integral = _integral_kernel(net, propagator, plans, loops)
    return jax.jit(jax.vmap(integral, in_axes=(0, None, None)))


# --- validation ----------------------------------------------------------------------------


def _concrete(value):
    """The value as a numpy array if it is concrete, else None (a JAX tracer)."""
    try:
        return np.asarray(value, dtype=np.float64)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def check_cutoffs(cutoffs, extent: float = 0.0, name: str = "cutoff") -> np.ndarray:
    """Concrete cutoffs as a float64 array (any shape): finite, > 0 and >= the inputs' extent
    (:func:`nngp_ppl._checks.cutoffs`, the validator every entry point shares)."""
    return _checks.cutoffs(name, cutoffs, extent)


def _rows(rows, k: int) -> np.ndarray:
    try:
        arr = np.asarray(rows)
    except (TypeError, ValueError):
        raise NNGPInputError("rows must be an integer array (T, m) of input indices") from None
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or not (arr.size == 0 or np.issubdtype(arr.dtype, np.integer)):
        raise NNGPInputError(
            f"rows must be an integer array (T, m) of input indices, got shape {arr.shape} "
            f"and dtype {arr.dtype}"
        )
    if arr.size and (arr.min() < 0 or arr.max() >= k):
        raise NNGPInputError(f"rows must index the {k} inputs (0..{k - 1}), got {arr.min()}.."
                             f"{arr.max()}")
    return arr.astype(np.int32)


def _loops(loops) -> int:
    if isinstance(loops, bool) or not isinstance(loops, (int, np.integer)) or loops < 0:
        raise NNGPInputError(f"loops must be a non-negative integer, got {loops!r}")
    return int(loops)


def kernel_scale(net) -> float:
    """Length over which the kernel varies near the inputs, as the ensemble states it
    (:meth:`nngp_ppl.Ensemble.kernel_length_scale`; sqrt(d_in)/σ_W for the single-layer
    nets, where the pre-activation m(x, y) = σ_b² + σ_W² x·y/d_in changes by O(1))."""
    return float(np.clip(net.kernel_length_scale(), 1e-3, 1e3))


def _rule_params(d_in: int, nodes, ratio):
    q0, r0 = _DEFAULT_RULE.get(d_in, _DEFAULT_RULE[3])
    q = q0 if nodes is None else _checks.positive_int("nodes", nodes)
    r = r0 if ratio is None else _checks.finite_float("ratio", ratio)
    if r <= 1.0:
        raise NNGPInputError(f"ratio (geometric panel growth) must be > 1, got {r}")
    return q, r


def _axis_nodes(plan: _AxisPlan) -> int:
    """Nodes of one axis: inner panels plus, per side, the transition and geometric ones."""
    return plan.q * (len(plan.inner) - 1 + 2 * (len(plan.outer) + plan.n_geo))


def _plans(split_coords: np.ndarray, cutoff_max: float, scale: float, q, r):
    d = split_coords.shape[1]
    plans = tuple(_axis_plan(split_coords[:, i], cutoff_max, scale, q, r) for i in range(d))
    points = math.prod(_axis_nodes(p) for p in plans)
    if max(_axis_nodes(p) for p in plans) > MAX_AXIS_NODES or points > MAX_BOX_POINTS:
        raise NNGPInputError(
            f"cutoff: the box [-{cutoff_max:g}, {cutoff_max:g}]^{d} around these inputs needs "
            f"{points:.3g} quadrature points (limit {MAX_BOX_POINTS:.3g} in all, "
            f"{MAX_AXIS_NODES} per axis); use smaller cutoffs or inputs nearer the origin"
        )
    return plans


def check_box(net, X, cutoff: float) -> None:
    """Refuse, before any integration, a box [-Λ, Λ]^d_in around the inputs ``X`` whose
    composite rule (the default one of :func:`vertex_integrals`) would need more than
    :data:`MAX_BOX_POINTS` points: the layout is planned, nothing is integrated."""
    X = _checks.inputs("X", X, net.d_in)
    q, r = _rule_params(net.d_in, None, None)
    _plans(X, float(check_cutoffs(cutoff, _checks.extent(X)).max()), kernel_scale(net), q, r)


def _finite_integrals(out, lam) -> None:
    """Refuse vertex integrals that overflowed float64 (kernels growing like |y|^p)."""
    bad = ~np.all(np.isfinite(np.asarray(out).reshape(len(lam), -1)), axis=1)
    if np.any(bad):
        raise NNGPInputError(
            f"cutoff: the vertex integrals overflow float64 at cutoff(s) "
            f"{np.asarray(lam)[bad].tolist()} (the kernel grows with |y| over the box); "
            "use smaller cutoffs"
        )


# --- public API ----------------------------------------------------------------------------


def box_lattice(
    d_in: int,
    cutoff: float,
    kind: str = "gauss_legendre",
    spacing: float | None = None,
    split_points=(),
    *,
    n_sites: int | None = None,
    nodes: int | None = None,
    ratio: float | None = None,
    scale: float = 1.0,
) -> Lattice:
    """Points and weights on the box :math:`[-\\Lambda, \\Lambda]^{d_{in}}`.

    ``kind="uniform"``: ``n`` cells of side ``a = 2Λ/n`` per axis, sites at the cell
    midpoints, weight :math:`a^{d_{in}}` each (the midpoint rule; the lattice a discretised
    action lives on). Give ``spacing`` (it must tile the box: 2Λ/a an integer) or
    ``n_sites`` per axis.

    ``kind="gauss_legendre"``: the composite rule described in the module docstring.
    ``split_points`` are extra points (shape (m, d_in), or scalars applied to every axis)
    whose coordinates become panel edges — pass the inputs; 0 is always an edge. ``nodes``
    per panel and the geometric ``ratio`` default per dimension; ``scale`` is the width of
    the innermost panels (the kernel's length scale).
    """
    d_in = _checks.positive_int("d_in", d_in)
    if kind not in LATTICE_KINDS:
        raise NNGPInputError(f"kind must be one of {LATTICE_KINDS}, got {kind!r}")
    splits = np.asarray(split_points, dtype=np.float64)
    if splits.size == 0:
        splits = np.zeros((0, d_in))
    elif splits.ndim <= 1:
        splits = np.repeat(splits.reshape(-1, 1), d_in, axis=1)
    if splits.ndim != 2 or splits.shape[1] != d_in or not np.all(np.isfinite(splits)):
        raise NNGPInputError(
            f"split_points must be finite points of shape (m, d_in={d_in}) or scalars, "
            f"got shape {splits.shape}"
        )
    extent = float(np.max(np.abs(splits))) if splits.size else 0.0
    lam = float(check_cutoffs(cutoff, extent).reshape(-1)[0]) if np.ndim(cutoff) == 0 else None
    if lam is None:
        raise NNGPInputError(f"cutoff must be a single positive number, got {cutoff!r}")

    if kind == "uniform":
        if (spacing is None) == (n_sites is None):
            raise NNGPInputError(
                "a uniform lattice needs exactly one of spacing (site spacing a, dividing 2Λ) "
                "or n_sites (sites per axis)"
            )
        if spacing is not None:
            a = _checks.finite_float("spacing", spacing)
            if a <= 0:
                raise NNGPInputError(f"spacing must be > 0, got {a}")
            ratio_ = 2 * lam / a
            n = round(ratio_)
            if n < 1 or abs(ratio_ - n) > 1e-9 * max(1.0, ratio_):
                raise NNGPInputError(
                    f"spacing must tile the box: 2Λ/a = {ratio_:g} is not an integer "
                    f"(Λ = {lam:g}, a = {a:g}); use a = 2Λ/n for an integer n"
                )
        else:
            n = _checks.positive_int("n_sites", n_sites)
        if n**d_in > MAX_BOX_POINTS:
            raise NNGPInputError(
                f"{'n_sites' if spacing is None else 'spacing'}: a uniform lattice of {n} sites "
                f"per axis has {n**d_in:.3g} sites in d_in = {d_in} (limit {MAX_BOX_POINTS:.3g})"
            )
        a = 2 * lam / n
        axis = -lam + (np.arange(n) + 0.5) * a
        grids = np.meshgrid(*([axis] * d_in), indexing="ij")
        pts = np.stack([g.ravel() for g in grids], axis=-1)
        return Lattice(pts, np.full(len(pts), a**d_in), "uniform", lam, a)

    scale = _checks.finite_float("scale", scale)
    if scale <= 0:
        raise NNGPInputError(f"scale must be > 0, got {scale}")
    q, r = _rule_params(d_in, nodes, ratio)
    plans = _plans(splits, lam, scale, q, r)
    rules = [_axis_rule(p, lam, np) for p in plans]
    grids = np.meshgrid(*[n for n, _ in rules], indexing="ij")
    pts = np.stack([g.ravel() for g in grids], axis=-1)
    w = np.ones(1)
    for _, wi in rules:
        w = np.multiply.outer(w, wi).ravel()
    return Lattice(pts, w, "gauss_legendre", lam, None)


def vertex_integral_function(
    net,
    X,
    rows,
    propagator: str = "full",
    loops: int = 0,
    *,
    max_cutoff: float | None = None,
    nodes: int | None = None,
    ratio: float | None = None,
):
    """Pure JAX function ``cutoff -> (T,)`` of the vertex integrals :math:`I_t^{(\\ell)}(\\Lambda)`.

    The returned function can be jit-compiled, vmapped over cutoffs and differentiated in the
    cutoff (the derivative is the exact surface term of the module docstring). ``rows``
    (T, m) lists the input indices joined to the vertex, ``loops`` its self-loops. The
    geometric panels are sized for cutoffs up to ``max_cutoff`` (default 10^6); beyond it
    the panels only get wider and the accuracy degrades gracefully. The cutoff must be at
    least the inputs' extent (checked by :func:`vertex_integrals`, not inside traces).
    """
    check_propagator(propagator)
    X = _checks.inputs("X", X, net.d_in)
    rows = _rows(rows, X.shape[0])
    loops = _loops(loops)
    cmax = _TRACED_MAX_CUTOFF if max_cutoff is None else float(check_cutoffs(max_cutoff).max())
    q, r = _rule_params(net.d_in, nodes, ratio)
    plans = _plans(X, cmax, kernel_scale(net), q, r)
    integral = _integral_kernel(net, propagator, plans, loops)
    Xj, rj = jnp.asarray(X), jnp.asarray(rows)

    @jax.jit
    def vertex_integral(cutoff):
        return integral(jnp.asarray(cutoff, dtype=jnp.float64), Xj, rj)

    return vertex_integral


def vertex_integrals(
    net,
    X,
    rows,
    cutoff,
    propagator: str = "full",
    loops: int = 0,
    lattice: Lattice | None = None,
    *,
    nodes: int | None = None,
    ratio: float | None = None,
):
    """Vertex integrals :math:`\\int_{[-\\Lambda,\\Lambda]^{d}} \\prod_{a\\in t}
    \\tilde K(x_a, y)\\, \\tilde K(y,y)^{\\ell}\\, dy` for every row ``t`` of ``rows``.

    ``cutoff`` a scalar gives (T,); a 1-d array of cutoffs gives (C, T) in one vectorised,
    jit-compiled call. A traced cutoff (inside ``jax.grad``/``jit``) is allowed; then the
    panels are sized for cutoffs up to 10^6 (use :func:`vertex_integral_function` with
    ``max_cutoff`` to control this). With an explicit ``lattice`` the integral is the
    weighted sum over its points, and ``cutoff`` must be ``None`` or the lattice's cutoff.
    """
    check_propagator(propagator)
    X = _checks.inputs("X", X, net.d_in)
    rows = _rows(rows, X.shape[0])
    loops = _loops(loops)
    if lattice is not None:
        if not isinstance(lattice, Lattice):
            raise NNGPInputError(f"lattice must be a Lattice (see box_lattice), got {lattice!r}")
        if lattice.d_in != net.d_in:
            raise NNGPInputError(f"lattice has d_in={lattice.d_in} but the net has "
                                 f"d_in={net.d_in}")
        if cutoff is not None and lattice.cutoff is not None:
            given = check_cutoffs(cutoff)
            if given.size != 1 or not np.isclose(given.item(), lattice.cutoff, rtol=1e-12):
                raise NNGPInputError(
                    f"cutoff {given.ravel().tolist()} does not match the lattice's cutoff "
                    f"{lattice.cutoff:g}; pass cutoff=None to use the lattice as it is"
                )
        cross, diag = propagator_kernels(net, check_propagator(propagator))
        return _weighted_products(cross, diag, jnp.asarray(X), jnp.asarray(rows), loops,
                                  jnp.asarray(lattice.points), jnp.asarray(lattice.weights))

    extent = float(np.max(np.abs(X)))
    concrete = _concrete(cutoff)
    q, r = _rule_params(net.d_in, nodes, ratio)
    if concrete is None:
        plans = _plans(X, _TRACED_MAX_CUTOFF, kernel_scale(net), q, r)
        integral = _integral_kernel(net, propagator, plans, loops)
        Xj, rj = jnp.asarray(X), jnp.asarray(rows)
        lam = jnp.asarray(cutoff, dtype=jnp.float64)
        if lam.ndim == 0:
            return integral(lam, Xj, rj)
        return jax.vmap(integral, in_axes=(0, None, None))(lam, Xj, rj)
    lam = check_cutoffs(concrete, extent)
    if lam.ndim > 1:
        raise NNGPInputError(f"cutoff must be a number or a 1-d array, got shape {lam.shape}")
    out = _concrete_integrals(net, X.tobytes(), X.shape, rows.tobytes(), rows.shape,
                              lam.reshape(-1).tobytes(), propagator, loops, q, r)
    _finite_integrals(out, lam.reshape(-1))
    return jnp.asarray(out[0] if lam.ndim == 0 else out)


@lru_cache(maxsize=256)
def _concrete_integrals(net, xbytes, xshape, rbytes, rshape, lbytes, propagator, loops, q, r):
    """Vertex integrals at concrete cutoffs, memoised: the 4- and 6-pt designs and the fits
    of every width share the same integrals, which are costly for d_in = 3.

    For d_in <= 2 one panel layout (sized for the largest cutoff) serves every cutoff in one
    compiled call. For d_in = 3 the cost grows like the cube of the panels per axis, so
    cutoffs are grouped by the layout each needs and each group is one call (one compile
    per group, repaid by the smaller boxes).
    """
    X = np.frombuffer(xbytes, dtype=np.float64).reshape(xshape)
    rows = np.frombuffer(rbytes, dtype=np.int32).reshape(rshape)
    lam = np.frombuffer(lbytes, dtype=np.float64)
    out = np.empty((len(lam), len(rows)))
    for plans, idx in _layout_groups(net, X, lam, q, r).items():
        out[idx] = np.asarray(_batched(net, propagator, plans, loops)(
            jnp.asarray(lam[idx]), jnp.asarray(X), jnp.asarray(rows)
        ))
    out.setflags(write=False)
    return out


def _layout_groups(net, X, lam, q, r) -> dict:
    """{panel layout: indices of the cutoffs that use it} (see _concrete_integrals)."""
    scale = kernel_scale(net)
    if net.d_in < 3:
        return {_plans(X, float(lam.max()), scale, q, r): np.arange(len(lam))}
    groups: dict = {}
    for i, c in enumerate(lam):
        groups.setdefault(_plans(X, float(c), scale, q, r), []).append(i)
    return {k: np.asarray(v) for k, v in groups.items()}


def vertex_integral_exponents(net, X, rows, cutoffs, propagator: str = "full", loops: int = 0):
    """Local exponents :math:`\\gamma_t(\\Lambda) = d\\log I_t / d\\log\\Lambda`, shape (C, T).

    Computed as :math:`\\Lambda\\, I_t'(\\Lambda) / I_t(\\Lambda)` with the exact surface
    term; at first order with one coupling, :math:`\\lambda_t \\propto 1/I_t` so the
    β-function is :math:`\\beta_t = -\\gamma_t \\lambda_t` (physics.md §8).
    """
    check_propagator(propagator)
    X = _checks.inputs("X", X, net.d_in)
    lam = check_cutoffs(cutoffs, float(np.max(np.abs(X)))).reshape(-1)
    rows = _rows(rows, X.shape[0])
    q, r = _rule_params(net.d_in, None, None)
    out = np.empty((len(lam), len(rows)))
    for plans, idx in _layout_groups(net, X, lam, q, r).items():
        fn = _exponent_fn(net, propagator, plans, _loops(loops))
        out[idx] = np.asarray(fn(jnp.asarray(lam[idx]), jnp.asarray(X), jnp.asarray(rows)))
    return out


@cache
def _exponent_fn(net, propagator, plans, loops):
    integral = _integral_kernel(net, propagator, plans, loops)

    def one(lam, X, rows):
        val, dval = jax.jvp(lambda c: integral(c, X, rows), (lam,), (jnp.ones_like(lam),))
        return lam * dval / val

    return jax.jit(jax.vmap(one, in_axes=(0, None, None)))
