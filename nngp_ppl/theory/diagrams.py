r"""First-order Feynman diagrams of the NGP effective action (physics.md §5–§6).

The action is :math:`S = S_{GP} + \sum_k g_k \int_{[-\Lambda,\Lambda]^{d_{in}}} dy\, f(y)^k`
with :math:`P[f] \propto e^{-S}` and unit coefficients (no :math:`1/k!`); the quartic and
sextic couplings are :math:`g_4 = \lambda`, :math:`g_6 = \kappa`. To first order in one
coupling,

.. math:: \Delta G^{(n)}(x_1..x_n) = -g_k \int dy\,\Big(\langle f(x_1)\cdots f(x_n)\,
    f(y)^k\rangle_{GP} - \langle f(x_1)\cdots f(x_n)\rangle_{GP}\,\langle f(y)^k\rangle_{GP}
    \Big),

and Isserlis' theorem turns the first term into a sum over the Wick contractions of the
:math:`n` external legs with the :math:`k` vertex legs. The engine follows the talk's rules
literally:

1. enumerate every perfect matching of the :math:`n + k` legs;
2. drop vacuum bubbles (no external leg on the vertex; they are exactly the subtracted
   :math:`\langle f\cdots f\rangle\langle V\rangle`);
3. by default drop the diagrams in which the vertex touches exactly two external points
   (rule 4.5: they correct the 2-pt function, which in these ensembles is already exact, so
   counterterms cancel them); ``drop_two_point=False`` keeps them;
4. group contractions with the same labelled structure; the multiplicity is their number
   and each diagram is :math:`-\text{mult}\; g_k \int dy` times a propagator per line and
   :math:`\tilde K(y, y)` per self-loop.

Propagators. A line between two external points is the full kernel :math:`K(x_a, x_b)`; a
line to the vertex is :math:`\tilde K(x_a, y)` and a self-loop :math:`\tilde K(y, y)`, with
:math:`\tilde K = K` for ``propagator="full"`` and :math:`\tilde K = K - \sigma_b^2` for
``"bias_subtracted"``. Derivation of the mixed rule (derived): write
:math:`f = \phi + b_1` with :math:`b_1 \sim N(0, \sigma_b^2)` independent and exactly
Gaussian, and let the interaction act on :math:`\phi` only. Then
:math:`\mathrm{Cov}(f(x), \phi(y)) = K - \sigma_b^2` and :math:`\mathrm{Cov}(f(x), f(x')) = K`,
so Isserlis' theorem applied to :math:`\langle f\cdots f\, \phi(y)^k\rangle` gives exactly
the rule above (the brute-force test checks it). For ``"full"`` all lines are :math:`K`.

Results (physics.md §6, reproduced term by term in tests/test_diagrams.py)::

    ΔG4 = -24 λ ∫ K1y K2y K3y K4y  - 360 κ ∫ Kyy K1y K2y K3y K4y
    ΔG6 = -24 λ ∫ Σ_15 Kay Kby Kcy Kdy Kef - 720 κ ∫ K1y...K6y - 360 κ ∫ Kyy Σ_15 Kay..Kdy Kef

The correction is linear in the couplings, so the engine returns a *design*: per cutoff,
per distinct tuple and per coupling, the coefficient of that coupling.

Operators (:mod:`nngp_ppl.theory.operators`). Any local operator :math:`g_k f^k`, k >= 1,
may be named (``"g3"``, ``"lambda"`` = ``"g4"``, ``"g5"``, ``"kappa"`` = ``"g6"``). Odd k
break f -> -f: with one odd vertex only odd correlators are corrected, e.g.
``ΔG3 = -6 g₃ ∫ K1y K2y K3y - 3 g₃ ∫ Kyy Σ_3 Kay Kbc``.

The 1-pt function. The expansion is around the zero-mean GP, and the designs are of the
moments :math:`\langle f(x_1)\cdots f(x_n)\rangle`. Convention (default): the 1-pt
function is *a prediction of the odd couplings*, a source the vertices create — the
tadpoles ``ΔG1 = -3 g₃ ∫ Kyy K1y - 15 g₅ ∫ Kyy² K1y`` — and every tadpole stays in
every correlator: on an external point (a factor :math:`\langle f\rangle`, e.g.
``-3 g₃ ∫ Kyy Kay Kbc`` in G3; two unjoined tadpoles, ``+9 g₃² ∫∫ Kyy Kay Kzz Kbz``, in
G2) and on a vertex (a vertex of k legs with one leg on :math:`\langle f\rangle` acts as
a (k-1)-leg vertex, e.g. the g₃λ term of G3 with λ's vertex on three points). Rule 4.5
keeps K the exact *covariance*: it drops the 2-pt insertions — including a tadpole on a
vertex that touches two external points, a correction of the covariance through the
mean — and never a tadpole by itself (tests/test_odd_diagrams.py checks this against a
model whose counterterms keep the covariance exact). The alternative, ``centred=True``,
*expands around the mean* :math:`f = \langle f\rangle + \phi`: the designs are of the
centred moments :math:`\langle \prod_a (f(x_a) - \langle f(x_a)\rangle)\rangle`, which
drops exactly the diagrams with a connected piece on one external point
(:attr:`Diagram.external_tadpole`), while tadpoles on vertices stay (they are the shifted
vertices :math:`k g_k \langle f\rangle \phi^{k-1}` of :math:`S[\langle f\rangle + \phi]`);
then the 4-pt function at :math:`g_3^2` is the three exchange channels alone,
``+36 g₃² ∫∫ Σ_3 Kay Kby Kyz Kcz Kdz``. Both are checked against full Wick sums.

Second order (two vertices; :func:`second_order_diagrams`, :func:`second_order_design`).
:math:`\tfrac12 \partial_c\partial_d G` at :math:`g = 0` is the sum over the Wick
contractions of the n external legs with a :math:`k_c`- and a :math:`k_d`-leg vertex in
which *both* vertices are linked to the external points (derivation beside the code), sign
+1, each a double integral over the two vertex positions
(:mod:`nngp_ppl.theory.second_order`). Rule 4.5 drops every diagram with a 2-pt
insertion. With :math:`D1` and :math:`D2` the two designs,
:math:`G = G_{GP} + D1\,g + g^{\mathsf T} D2\, g + O(g^3)`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache

import jax
import jax.numpy as jnp
import numpy as np
from scipy import sparse as _sparse

from .. import _checks
from .. import tuples as _tuples
from .._checks import NNGPInputError
from . import lattice as _lattice
from . import operators as _operators
from . import second_order as _second_order
from .wick import gp_correlator

COUPLING_ORDERS = _operators.ALIASES
_SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")
# Literal enumeration visits (n + k - 1)!! matchings: 135135 at n + k = 14.
_MAX_LEGS = 14
_MAX_N = 10


# --- couplings: the records of nngp_ppl.theory.operators ----------------------------------


def check_vertex_order(k_vertex) -> int:
    """A vertex order k >= 1: the local operator f^k, odd or even.

    Odd k (f³, f⁵) break f -> -f and give odd correlators and a 1-pt function (module
    docstring: the 1-pt function); k = 1 is a source and k = 2 a mass term, whose diagrams
    are all tadpoles or 2-pt insertions."""
    if isinstance(k_vertex, bool) or not isinstance(k_vertex, (int, np.integer)) \
            or k_vertex < 1:
        raise NNGPInputError(f"k_vertex must be an integer >= 1 (the legs of the local "
                             f"vertex f^k), got {k_vertex!r}")
    return int(k_vertex)


def coupling_order(name) -> int:
    """Vertex order k of a coupling: ``"lambda"`` -> 4, ``"kappa"`` -> 6, ``"g3"`` -> 3
    (:func:`nngp_ppl.theory.operators.coupling_order`)."""
    return _operators.require_local(_operators.operator(name), "diagrams").legs


def coupling_names(couplings) -> tuple[str, ...]:
    """Validated, duplicate-free tuple of coupling names (a single name is accepted):
    :func:`nngp_ppl.theory.operators.coupling_names`, the package's one validation."""
    names = _operators.coupling_names(couplings)
    for name in names:
        coupling_order(name)
    return names


def coupling_symbol(k_vertex: int) -> str:
    return _operators.coupling_symbol(k_vertex)


def _check_n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= _MAX_N:
        raise NNGPInputError(f"n (number of external points) must be an integer in "
                             f"1..{_MAX_N}, got {n!r}")
    return int(n)


# --- diagrams -------------------------------------------------------------------------------


def _label(a: int, n: int) -> str:
    return str(a + 1) if n <= 9 else f"({a + 1})"


def _power(symbol: str, p: int) -> str:
    return symbol if p == 1 else symbol + str(p).translate(_SUPERSCRIPT)


@dataclass(frozen=True)
class Diagram:
    """One labelled first-order diagram: coefficient ``-multiplicity`` (times its coupling),
    the external positions on the vertex (``attached``, 0-based), the external-external
    lines (``pairs``) and the number of vertex self-loops."""

    coefficient: int
    n: int
    k_vertex: int
    attached: tuple[int, ...]
    pairs: tuple[tuple[int, int], ...]
    loops: int

    @property
    def multiplicity(self) -> int:
        """Number of Wick contractions with this structure."""
        return -self.coefficient

    @property
    def coupling(self) -> str:
        return _operators.local(self.k_vertex).name

    @property
    def corrects_two_point(self) -> bool:
        """True for the rule-4.5 diagrams: the vertex touches exactly two external points."""
        return len(self.attached) == 2

    @property
    def external_tadpole(self) -> bool:
        """True when a connected piece holds exactly one external point (the vertex on one
        external leg: a factor of the 1-pt function); the centred convention drops it."""
        return len(self.attached) == 1

    def __str__(self) -> str:
        terms = []
        if self.loops:
            terms.append(_power("Kyy", self.loops))
        terms += [f"K{_label(a, self.n)}y" for a in self.attached]
        terms += [f"K{_label(a, self.n)}{_label(b, self.n)}" for a, b in self.pairs]
        return f"{self.coefficient} {coupling_symbol(self.k_vertex)} ∫ " + " ".join(terms)

    def evaluate(self, net, X, cutoff=None, propagator: str = "full", lattice=None):
        """Value of this diagram (its coupling set to 1) on the distinct n-tuples of the
        inputs: shape (T_n,), or (C, T_n) for an array of cutoffs."""
        X = _checks.inputs("X", X, net.d_in)
        K = np.asarray(net.kernel(X))
        matrix = _diagram_matrix(self, K)
        rows = _tuples.distinct_tuples(X.shape[0], len(self.attached))
        ints = _lattice.vertex_integrals(net, X, rows, cutoff, propagator, self.loops, lattice)
        return np.einsum("tu,...u->...t", matrix, np.asarray(ints))


@dataclass(frozen=True)
class Topology:
    """Diagrams of one shape, summed: ``count`` labelled diagrams, each with ``coefficient``."""

    coefficient: int
    count: int
    n: int
    k_vertex: int
    n_attached: int
    n_pairs: int
    loops: int

    def __str__(self) -> str:
        letters = "abcdefghijklmnopqrstuvw"
        terms = []
        if self.loops:
            terms.append(_power("Kyy", self.loops))
        if self.count > 1:
            terms.append(f"Σ_{self.count}")
            legs = [f"K{letters[i]}y" for i in range(self.n_attached)]
            j = self.n_attached
            legs += [f"K{letters[j + 2 * i]}{letters[j + 2 * i + 1]}" for i in range(self.n_pairs)]
        else:
            legs = [f"K{_label(i, self.n)}y" for i in range(self.n_attached)]
            j = self.n_attached
            legs += [f"K{_label(j + 2 * i, self.n)}{_label(j + 2 * i + 1, self.n)}"
                     for i in range(self.n_pairs)]
        return f"{self.coefficient} {coupling_symbol(self.k_vertex)} ∫ " + " ".join(terms + legs)


@cache
def _contraction_counts(n: int, k: int) -> tuple[tuple[tuple, int], ...]:
    """Wick contractions of n external + k vertex legs, counted by labelled structure."""
    counts: Counter = Counter()
    # An odd number of legs has no perfect matching (and no first-order contraction).
    for matching in _tuples.pairings(n + k) if (n + k) % 2 == 0 else ():
        attached, pairs, loops = [], [], 0
        for a, b in matching:  # a < b always
            if b < n:
                pairs.append((a, b))
            elif a < n:
                attached.append(a)
            else:
                loops += 1
        counts[(tuple(sorted(attached)), tuple(sorted(pairs)), loops)] += 1
    return tuple(sorted(counts.items(), key=lambda kv: (-len(kv[0][0]), kv[0])))


def first_order_diagrams(n: int, k_vertex: int, drop_two_point: bool = True, *,
                         centred: bool = False) -> list[Diagram]:
    """All labelled first-order diagrams of the n-point function with one k-leg vertex.

    Vacuum bubbles are dropped; the 2-pt corrections of rule 4.5 too unless
    ``drop_two_point=False``; with ``centred=True`` the tadpoles on an external leg too
    (the centred moments; module docstring, the 1-pt function). Ordered by the number of
    legs on the vertex (most first), then lexicographically. ``str()`` of a diagram is
    e.g. ``-24 λ ∫ K1y K2y K3y K4y``; odd vertices give e.g. ``-3 g₃ ∫ Kyy K1y``.
    """
    n = _check_n(n)
    k = check_vertex_order(k_vertex)
    if n + k > _MAX_LEGS:
        raise NNGPInputError(
            f"n + k_vertex must be <= {_MAX_LEGS} for literal Wick enumeration "
            f"((n+k-1)!! matchings), got n={n}, k_vertex={k}"
        )
    out = []
    for (attached, pairs, loops), mult in _contraction_counts(n, k):
        if not attached:
            continue  # vacuum bubble: cancelled by the normalisation <V>
        if drop_two_point and len(attached) == 2:
            continue  # rule 4.5: K is already the exact 2-pt function
        if centred and len(attached) == 1:
            continue  # a factor <f>: subtracted with the mean
        out.append(Diagram(-mult, n, k, attached, pairs, loops))
    return out


def group_topologies(diagrams: Sequence[Diagram]) -> list[Topology]:
    """Group labelled diagrams by shape (legs on the vertex, external lines, loops)."""
    groups: dict[tuple, list[Diagram]] = {}
    for d in diagrams:
        key = (d.k_vertex, len(d.attached), len(d.pairs), d.loops, d.coefficient, d.n)
        groups.setdefault(key, []).append(d)
    return [
        Topology(coef, len(ds), n, k, m, p, loops)
        for (k, m, p, loops, coef, n), ds in groups.items()
    ]


def first_order_expression(n: int, couplings=("lambda", "kappa"),
                           drop_two_point: bool = True, *, centred: bool = False) -> str:
    """Readable first-order correction, e.g. ``ΔG4 = -24 λ ∫ K1y K2y K3y K4y - 360 κ ...``."""
    terms = []
    for name in coupling_names(couplings):
        topo = group_topologies(first_order_diagrams(n, coupling_order(name), drop_two_point,
                                                     centred=centred))
        terms += [str(t) for t in topo]
    if not terms:
        return f"ΔG{n} = 0"
    body = " ".join(t if i == 0 else ("- " + t[1:] if t.startswith("-") else "+ " + t)
                    for i, t in enumerate(terms))
    return f"ΔG{n} = {body}"


# --- evaluation -------------------------------------------------------------------------------


def _diagram_matrix(diagram: Diagram, K: np.ndarray) -> np.ndarray:
    """(T_n, T_m) matrix: entry (t, u) = coefficient x Π_{ext lines} K[t_a, t_b] when the
    sorted inputs of tuple t on the vertex legs form the m-multiset u, else 0."""
    k = K.shape[0]
    rows = _tuples.distinct_tuples(k, diagram.n)
    m = len(diagram.attached)
    out = np.zeros((len(rows), math.comb(k + m - 1, m)))
    value = np.full(len(rows), float(diagram.coefficient))
    for a, b in diagram.pairs:
        value = value * K[rows[:, a], rows[:, b]]
    sub = np.sort(rows[:, list(diagram.attached)], axis=1)
    cols = np.array([_tuples.tuple_row(k, r) for r in sub.tolist()], dtype=np.int64)
    np.add.at(out, (np.arange(len(rows)), cols), value)
    return out


def _design_matrices(K: np.ndarray, n: int, names: tuple[str, ...], drop_two_point: bool,
                     centred: bool = False):
    """{(m, loops): array (n_couplings, T_n, T_m)}: the design is Σ_key A_key @ I_key."""
    out: dict[tuple[int, int], np.ndarray] = {}
    T_n = len(_tuples.distinct_tuples(K.shape[0], n))
    for j, name in enumerate(names):
        for diagram in first_order_diagrams(n, coupling_order(name), drop_two_point,
                                            centred=centred):
            key = (len(diagram.attached), diagram.loops)
            if key not in out:
                T_m = math.comb(K.shape[0] + key[0] - 1, key[0])
                out[key] = np.zeros((len(names), T_n, T_m))
            out[key][j] += _diagram_matrix(diagram, K)
    return out


def _prepare(net, X, n, couplings, propagator, drop_two_point, centred=False):
    _lattice.check_propagator(propagator)
    n = _check_n(n)
    names = coupling_names(couplings)
    X = _checks.inputs("X", X, net.d_in)
    K = np.asarray(net.kernel(X))
    return n, names, X, K, _design_matrices(K, n, names, bool(drop_two_point),
                                            _checks.boolean("centred", centred))


def first_order_design_function(
    net,
    X,
    n: int,
    couplings=("lambda", "kappa"),
    propagator: str = "full",
    drop_two_point: bool = True,
    *,
    max_cutoff: float | None = None,
    centred: bool = False,
):
    """Pure JAX function ``cutoff -> (T_n, n_couplings)`` with
    :math:`\\Delta G^{(n)}_t = \\sum_c g_c\\, D_{tc}(\\Lambda)` on the distinct tuples.

    Traceable, vmappable over cutoffs and differentiable in the cutoff (the vertex integrals
    carry their exact surface-term derivative), e.g. for β-functions by automatic
    differentiation. ``max_cutoff`` sizes the quadrature panels (see
    :func:`nngp_ppl.theory.lattice.vertex_integral_function`); ``centred`` as in
    :func:`first_order_design`.
    """
    n, names, X, K, mats = _prepare(net, X, n, couplings, propagator, drop_two_point,
                                    centred)
    k = X.shape[0]
    T_n = len(_tuples.distinct_tuples(k, n))
    parts = []
    for (m, loops), A in mats.items():
        rows = _tuples.distinct_tuples(k, m)
        fn = _lattice.vertex_integral_function(net, X, rows, propagator, loops,
                                               max_cutoff=max_cutoff)
        parts.append((fn, jnp.asarray(A)))

    @jax.jit
    def design(cutoff):
        out = jnp.zeros((T_n, len(names)))
        for fn, A in parts:
            out = out + jnp.einsum("jtu,u->tj", A, fn(cutoff))
        return out

    return design


def first_order_design(
    net,
    X,
    n: int,
    cutoffs,
    couplings=("lambda", "kappa"),
    propagator: str = "full",
    drop_two_point: bool = True,
    lattice=None,
    *,
    centred: bool = False,
) -> np.ndarray:
    """Design array (n_cutoffs, T_n, n_couplings) of the first-order correction.

    .. math:: \\Delta G^{(n)}_t(\\Lambda) = \\sum_c g_c\\, \\mathrm{design}[\\Lambda, t, c]

    on ``tuples.distinct_tuples(k, n)``; ``couplings`` names the columns (``"lambda"`` the
    :math:`f^4` vertex, ``"kappa"`` the :math:`f^6` vertex). ``cutoffs`` is a number or a
    1-d array; with an explicit ``lattice`` (e.g. the uniform lattice of a field model) the
    integrals are its weighted sums and ``cutoffs`` may be ``None``.

    Any local operator ``g<k>`` may be named, odd ones included (``"g3"``: f³). By default
    the design is of the moments <f(x_1)...f(x_n)> with the 1-pt function a prediction of
    the odd couplings (tadpoles kept); ``centred=True`` gives the centred moments
    <Π_a (f(x_a) - <f(x_a)>)>
    (expansion around the mean; module docstring, the 1-pt function).
    """
    n, names, X, K, mats = _prepare(net, X, n, couplings, propagator, drop_two_point,
                                    centred)
    k = X.shape[0]
    T_n = len(_tuples.distinct_tuples(k, n))
    if lattice is None:
        lam = _lattice.check_cutoffs(cutoffs, float(np.max(np.abs(X))), "cutoffs")
        if lam.ndim > 1:
            raise NNGPInputError(f"cutoffs must be a number or a 1-d array, got {lam.shape}")
        lam = lam.reshape(-1)
    else:
        lam = np.array([np.nan])
    out = np.zeros((len(lam), T_n, len(names)))
    for (m, loops), A in mats.items():
        rows = _tuples.distinct_tuples(k, m)
        if lattice is None:
            ints = np.asarray(_lattice.vertex_integrals(net, X, rows, lam, propagator, loops))
        else:
            ints = np.asarray(_lattice.vertex_integrals(net, X, rows, cutoffs, propagator,
                                                        loops, lattice))[None, :]
        out += np.einsum("jtu,cu->ctj", A, ints)
    return out


def _coupling_values(couplings) -> tuple[tuple[str, ...], np.ndarray]:
    if not isinstance(couplings, Mapping):
        raise NNGPInputError(
            "couplings must map coupling names to values, e.g. {'lambda': -0.01, 'kappa': 0.0}"
        )
    names = coupling_names(tuple(couplings))
    vals = np.array([_checks.finite_float(f"couplings[{k!r}]", couplings[k]) for k in names])
    return names, vals


def first_order_correction(net, X, n: int, couplings, cutoff, propagator: str = "full",
                           lattice=None, drop_two_point: bool = True) -> np.ndarray:
    """First-order correction :math:`\\Delta G^{(n)}` as the full symmetric (k,)*n array.

    ``couplings`` maps names to values, e.g. ``{"lambda": -1e-3, "kappa": 0.0}``; the sign
    convention is :math:`P \\propto e^{-S}` with :math:`+g\\int f^k` in S (physics.md §5), so
    a positive coupling lowers the correlators. Rule 4.5 (no 2-pt corrections) applies
    unless ``drop_two_point=False``.
    """
    names, vals = _coupling_values(couplings)
    if lattice is None and np.ndim(cutoff) != 0:
        raise NNGPInputError(f"cutoff must be a single number here, got {cutoff!r}; use "
                             "first_order_design for several cutoffs")
    design = first_order_design(net, X, n, cutoff, names, propagator, drop_two_point, lattice)
    k = _checks.inputs("X", X, net.d_in).shape[0]
    return _tuples.expand(design[0] @ vals, k, n)


def ngp_correlator(net, X, n: int, couplings, cutoff, propagator: str = "full",
                   lattice=None, drop_two_point: bool = True) -> np.ndarray:
    """GP plus first-order correlator, :math:`G^{(n)}_{GP} + \\Delta G^{(n)}`, full array."""
    X = _checks.inputs("X", X, net.d_in)
    delta = first_order_correction(net, X, n, couplings, cutoff, propagator, lattice,
                                   drop_two_point)
    return gp_correlator(np.asarray(net.kernel(X)), n) + delta


# --- second order: two vertices ---------------------------------------------------------------
#
# Derivation (the connected second-order term). With V_c = ∫ f^{k_c} and
# G(g) = <F e^{-Σ g_c V_c}> / <e^{-Σ g_c V_c}>, F = f(x_1)...f(x_n), differentiating twice at
# g = 0 gives
#
#   ∂_c ∂_d G = <F V_c V_d> - <F V_c><V_d> - <F V_d><V_c> - <F><V_c V_d> + 2 <F><V_c><V_d>.
#
# Split the Wick contractions of <F V_c V_d> by which vertices are *linked* to the external
# points (joined to them by lines, directly or through the other vertex): both linked (L);
# only c linked, d a vacuum bubble: (<F V_c> - <F><V_c>) <V_d>; the mirror image; neither:
# <F><V_c V_d>. Substituting, every term with a vacuum piece cancels and ∂_c ∂_d G = L: the
# sum over contractions in which both vertices are linked, with sign (-1)^2 = +1 (the
# linked-cluster theorem at second order).


TOPOLOGIES = ("exchange", "bubble", "melon", "disconnected", "leg", "loop", "two_point",
              "tadpole")
"""Second-order topologies: ``exchange`` (one line between the vertices), ``bubble`` (two),
``melon`` (three or more), ``disconnected`` (none: a product of two first-order pieces),
the 2-pt insertions that rule 4.5 drops: ``leg`` (a vertex on an external leg), ``loop`` (a
vertex on the other vertex's self-loop), ``two_point`` (a correction of a line between two
external points), and, with an odd vertex, ``tadpole`` (an odd vertex joined to the rest by
one line: a 1-pt insertion on an external point or on the other vertex)."""
TWO_POINT_TOPOLOGIES = ("leg", "loop", "two_point")
_MAX_N_SECOND = 8


def _check_n_second(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= _MAX_N_SECOND:
        raise NNGPInputError(f"n (number of external points) must be an integer in "
                             f"1..{_MAX_N_SECOND} at second order, got {n!r}")
    return int(n)


def _topology(m1: int, m2: int, lines: int) -> str:
    """Topology of a linked two-vertex diagram. A 2-pt insertion is a set of vertices joined
    to the rest of the diagram by exactly two lines: both vertices (m1 + m2 = 2, joined to
    each other), or one vertex with m_i + lines = 2 (2 externals: two_point; 1 external
    and 1 line: leg; 2 lines: loop). A tadpole is one vertex joined to the rest by one line
    (m_i + lines = 1; only an odd vertex can be: m_i + lines = k_i mod 2). Two unjoined
    tadpoles (m1 = m2 = 1, no line) are the product of two 1-pt functions, no 2-pt
    insertion."""
    if m1 + m2 == 2 and lines:
        return "two_point"
    for m in (m1, m2):
        if m + lines == 2:
            return {2: "two_point", 1: "leg", 0: "loop"}[m]
    if 1 in (m1 + lines, m2 + lines):
        return "tadpole"
    if lines == 0:
        return "disconnected"
    return {1: "exchange", 2: "bubble"}.get(lines, "melon")


@dataclass(frozen=True)
class SecondOrderDiagram:
    """One labelled two-vertex diagram and its coefficient in the second-order term.

    Vertex 1 (position y, order ``k_vertices[0]``) carries the external positions
    ``attached[0]`` and ``loops[0]`` self-loops; vertex 2 (position z) ``attached[1]`` and
    ``loops[1]``; ``lines`` lines join them and ``pairs`` are external-external lines. The
    diagram contributes ``coefficient`` × (its couplings' product) × ∫∫ dy dz (propagators):
    for two vertices of the same coupling the coefficient is the multiplicity of *one*
    labelling (its mirror image, the vertices swapped, is the same integral and the ½ of the
    expansion cancels the pair); for two different couplings it is the multiplicity of the
    mixed term g_c g_d. Signs: (-1)^2 = +1, so coefficients are positive.
    """

    coefficient: int
    n: int
    k_vertices: tuple[int, int]
    attached: tuple[tuple[int, ...], tuple[int, ...]]
    pairs: tuple[tuple[int, int], ...]
    loops: tuple[int, int]
    lines: int

    @property
    def topology(self) -> str:
        return _topology(len(self.attached[0]), len(self.attached[1]), self.lines)

    @property
    def corrects_two_point(self) -> bool:
        """True for the diagrams rule 4.5 drops (a 2-pt insertion somewhere)."""
        return self.topology in TWO_POINT_TOPOLOGIES

    @property
    def external_tadpole(self) -> bool:
        """True when a connected piece of the diagram holds exactly one external point (a
        factor of the 1-pt function); the centred convention drops it. With a line
        between them the two vertices are one piece, else each is its own."""
        m1, m2 = (len(a) for a in self.attached)
        return m1 + m2 == 1 if self.lines else 1 in (m1, m2)

    @property
    def couplings(self) -> tuple[str, str]:
        return tuple(_operators.local(k).name for k in self.k_vertices)

    @property
    def key(self):
        """Shape of its two-vertex integral, (m1, loops1, m2, loops2, lines)."""
        return _second_order.TwoVertexKey(len(self.attached[0]), self.loops[0],
                                          len(self.attached[1]), self.loops[1], self.lines)

    def __str__(self) -> str:
        k1, k2 = self.k_vertices
        sym = (_power(coupling_symbol(k1), 2) if k1 == k2
               else coupling_symbol(k1) + coupling_symbol(k2))
        terms = []
        for v, name in ((0, "y"), (1, "z")):
            if self.loops[v]:
                terms.append(_power(f"K{name}{name}", self.loops[v]))
            terms += [f"K{_label(a, self.n)}{name}" for a in self.attached[v]]
            if v == 0 and self.lines:
                terms.append(_power("Kyz", self.lines))
        terms += [f"K{_label(a, self.n)}{_label(b, self.n)}" for a, b in self.pairs]
        return f"+{self.coefficient} {sym} ∫∫ " + " ".join(terms)

    def evaluate(self, net, X, cutoff=None, propagator: str = "full", lattice=None):
        """Value of this diagram (couplings set to 1) on the distinct n-tuples: shape
        (T_n,), or (C, T_n) for an array of cutoffs."""
        X = _checks.inputs("X", X, net.d_in)
        K = np.asarray(net.kernel(X))
        key, matrix = _second_order_matrix(self, K)
        ints = _second_order.two_vertex_integrals(net, X, [key], cutoff, propagator,
                                                  lattice)[key]
        out = (matrix @ ints.reshape(ints.shape[0], -1).T).T
        return out[0] if (lattice is not None or np.ndim(cutoff) == 0) else out


@cache
def _two_vertex_counts(n: int, k1: int, k2: int) -> tuple[tuple[tuple, int], ...]:
    """Wick contractions of n external legs with a k1-leg and a k2-leg vertex, counted by
    labelled structure (att1, att2, pairs, loops1, loops2, lines).

    Enumerates the contractions leg by leg: the first open external leg is joined to each
    later external leg, or to one of the free legs of vertex 1 or 2 (as many contractions
    as free legs); then the first free leg of vertex 1 to another of its legs or to one of
    vertex 2's, and finally vertex 2's legs among themselves. Legs of one vertex enter
    only through their number, so each branch stands for exactly the labelled
    contractions it counts; tests check the counts against literal enumeration of all
    (n + k1 + k2 - 1)!! matchings."""
    counts: Counter = Counter()

    def walk(ext, f1, f2, att1, att2, pairs, l1, l2, lines, weight):
        if ext:
            a, rest = ext[0], ext[1:]
            for j, b in enumerate(rest):
                walk(rest[:j] + rest[j + 1:], f1, f2, att1, att2, pairs + ((a, b),),
                     l1, l2, lines, weight)
            if f1:
                walk(rest, f1 - 1, f2, att1 + (a,), att2, pairs, l1, l2, lines, weight * f1)
            if f2:
                walk(rest, f1, f2 - 1, att1, att2 + (a,), pairs, l1, l2, lines, weight * f2)
        elif f1:
            if f1 >= 2:
                walk(ext, f1 - 2, f2, att1, att2, pairs, l1 + 1, l2, lines, weight * (f1 - 1))
            if f2:
                walk(ext, f1 - 1, f2 - 1, att1, att2, pairs, l1, l2, lines + 1, weight * f2)
        elif f2:
            if f2 >= 2:
                walk(ext, f1, f2 - 2, att1, att2, pairs, l1, l2 + 1, lines, weight * (f2 - 1))
        else:
            counts[(att1, att2, tuple(sorted(pairs)), l1, l2, lines)] += weight

    walk(tuple(range(n)), k1, k2, (), (), (), 0, 0, 0, 1)
    return tuple(sorted(counts.items()))


def second_order_diagrams(n: int, k_vertices=(4, 4), drop_two_point: bool = True,
                          topologies=None, *, centred: bool = False
                          ) -> list[SecondOrderDiagram]:
    """All labelled two-vertex diagrams of the n-point function (module section above).

    ``k_vertices`` = (4, 4) for λ², (4, 6) for λκ, (6, 6) for κ². Diagrams with a vacuum
    piece are dropped (they cancel against the normalisation; derivation in the comment
    above). ``drop_two_point=True`` (rule 4.5) drops every diagram with a 2-pt insertion
    (topologies ``leg``, ``loop``, ``two_point``): K is the exact 2-pt function, so the
    2-pt counterterms cancel the whole self-energy order by order and any line dressed
    with one — external leg, internal line or self-loop — is cancelled with it (the
    skeleton expansion with the exact propagator K). ``topologies`` keeps only the named
    ones. ``centred=True`` drops the diagrams with a connected piece on one external
    point (:attr:`SecondOrderDiagram.external_tadpole`; the centred moments). For equal
    vertices each mirror pair is listed once (see :class:`SecondOrderDiagram`). Odd
    vertices are allowed: (3, 3) for g₃², (3, 4) for g₃λ, ...
    """
    n = _check_n_second(n)
    if isinstance(k_vertices, (str, bytes)) or not hasattr(k_vertices, "__len__") or \
            len(k_vertices) != 2:
        raise NNGPInputError(f"k_vertices must be two vertex orders, e.g. (4, 6), got "
                             f"{k_vertices!r}")
    k1, k2 = (check_vertex_order(k) for k in k_vertices)
    k1, k2 = min(k1, k2), max(k1, k2)
    if topologies is not None:
        topologies = (topologies,) if isinstance(topologies, str) else tuple(topologies)
        bad = [t for t in topologies if t not in TOPOLOGIES]
        if bad:
            raise NNGPInputError(f"topologies must be among {TOPOLOGIES}, got {bad}")
    out = []
    for (att1, att2, pairs, l1, l2, lines), mult in _two_vertex_counts(n, k1, k2):
        linked1 = bool(att1) or (lines > 0 and bool(att2))
        linked2 = bool(att2) or (lines > 0 and bool(att1))
        if not (linked1 and linked2):
            continue  # a vacuum piece: cancelled by the normalisation
        if k1 == k2 and (len(att1), l1, att1) < (len(att2), l2, att2):
            continue  # the mirror image of a listed diagram (same integral)
        d = SecondOrderDiagram(mult, n, (k1, k2), (att1, att2), pairs, (l1, l2), lines)
        if drop_two_point and d.corrects_two_point:
            continue
        if centred and d.external_tadpole:
            continue
        if topologies is not None and d.topology not in topologies:
            continue
        out.append(d)
    out.sort(key=lambda d: (TOPOLOGIES.index(d.topology), -len(d.attached[0]),
                            -len(d.attached[1]), d.attached, d.pairs, d.loops))
    return out


@dataclass(frozen=True)
class SecondOrderTopology:
    """Labelled two-vertex diagrams of one shape, summed: ``count`` of them, each with
    ``coefficient``."""

    topology: str
    coefficient: int
    count: int
    k_vertices: tuple[int, int]
    m: tuple[int, int]
    loops: tuple[int, int]
    lines: int
    n_pairs: int

    def __str__(self) -> str:
        k1, k2 = self.k_vertices
        sym = (_power(coupling_symbol(k1), 2) if k1 == k2
               else coupling_symbol(k1) + coupling_symbol(k2))
        letters = iter("abcdefghijklmnop")
        terms = [f"Σ_{self.count}"] if self.count > 1 else []
        for v, name in ((0, "y"), (1, "z")):
            if self.loops[v]:
                terms.append(_power(f"K{name}{name}", self.loops[v]))
            terms += [f"K{next(letters)}{name}" for _ in range(self.m[v])]
            if v == 0 and self.lines:
                terms.append(_power("Kyz", self.lines))
        terms += [f"K{next(letters)}{next(letters)}" for _ in range(self.n_pairs)]
        return f"+{self.coefficient} {sym} ∫∫ " + " ".join(terms) + f"  [{self.topology}]"


def group_second_order(diagrams: Sequence[SecondOrderDiagram]) -> list[SecondOrderTopology]:
    """Group labelled two-vertex diagrams by shape (in the order of first appearance)."""
    groups: dict[tuple, int] = {}
    for d in diagrams:
        key = (d.topology, d.coefficient, d.k_vertices, (len(d.attached[0]),
               len(d.attached[1])), d.loops, d.lines, len(d.pairs))
        groups[key] = groups.get(key, 0) + 1
    return [SecondOrderTopology(t, c, count, k, m, lo, li, p)
            for (t, c, k, m, lo, li, p), count in groups.items()]


def _pairs_of(names: tuple[str, ...]):
    """(i, j, k_i, k_j) for i <= j over the couplings."""
    for i, a in enumerate(names):
        for j in range(i, len(names)):
            yield i, j, coupling_order(a), coupling_order(names[j])


def second_order_expression(n: int, couplings=("lambda", "kappa"),
                            drop_two_point: bool = True, *, centred: bool = False) -> str:
    """Readable second-order term, e.g. ``δ²G4 = +288 λ² ∫∫ Σ_3 Kay Kby Kyz² Kcz Kdz ...``
    (y, z the two vertex positions; each term labelled with its topology)."""
    names = coupling_names(couplings)
    terms = []
    for _, _, ka, kb in _pairs_of(names):
        terms += [str(t) for t in group_second_order(
            second_order_diagrams(n, (ka, kb), drop_two_point, centred=centred))]
    if not terms:
        return f"δ²G{n} = 0"
    return f"δ²G{n} = " + "\n    ".join(terms)


def _second_order_entries(diagram: SecondOrderDiagram, K: np.ndarray):
    """(canonical key, columns (T_n,), values (T_n,)): tuple t picks the entry
    u * T_m2 + v of the key's integral, u and v the multisets of its inputs on the two
    vertices (ordered as the canonical key), with weight coefficient × Π_{ext lines} K."""
    k = K.shape[0]
    rows = _tuples.distinct_tuples(k, diagram.n)
    key = diagram.key
    att1, att2 = diagram.attached
    if key != key.canonical():
        key, att1, att2 = key.canonical(), att2, att1
    T2 = math.comb(k + key.m2 - 1, key.m2)
    value = np.full(len(rows), float(diagram.coefficient))
    for a, b in diagram.pairs:
        value = value * K[rows[:, a], rows[:, b]]
    u, v = (_tuples.rows_of(k, np.sort(rows[:, list(att)], axis=1)) for att in (att1, att2))
    return key, u * T2 + v, value


def _second_order_matrix(diagram: SecondOrderDiagram, K: np.ndarray):
    """(canonical key, sparse (T_n, T_m1 T_m2) matrix) of one diagram (see
    :func:`_second_order_entries`)."""
    key, cols, vals = _second_order_entries(diagram, K)
    k = K.shape[0]
    shape = (len(cols), math.comb(k + key.m1 - 1, key.m1) * math.comb(k + key.m2 - 1, key.m2))
    return key, _sparse.csr_matrix((vals, (np.arange(len(cols)), cols)), shape=shape)


def _second_order_matrices(K, n, names, drop_two_point, topologies, centred=False):
    """{key: sparse (nc nc T_n, T_m1 T_m2)}: row (i nc + j) T_n + t holds the D2[t, i, j]
    coefficients of the key's integrals, D2[i, i] the g_i² coefficient and
    D2[i, j] = D2[j, i] half the g_i g_j coefficient. Memoised: fits at many widths share
    the kernel matrix."""
    topologies = None if topologies is None else (
        (topologies,) if isinstance(topologies, str) else tuple(topologies))
    return _second_order_matrices_cached(K.tobytes(), K.shape[0], n, names, drop_two_point,
                                         topologies, centred)


@lru_cache(maxsize=32)
def _second_order_matrices_cached(kbytes, k, n, names, drop_two_point, topologies, centred):
    K = np.frombuffer(kbytes, dtype=np.float64).reshape(k, k)
    nc = len(names)
    T_n = math.comb(k + n - 1, n)
    parts: dict = {}
    for i, j, ka, kb in _pairs_of(names):
        half = 1.0 if i == j else 0.5
        targets = [(i, j)] if i == j else [(i, j), (j, i)]
        for d in second_order_diagrams(n, (ka, kb), drop_two_point, topologies,
                                       centred=centred):
            key, cols, vals = _second_order_entries(d, K)
            for a, b in targets:
                parts.setdefault(key, []).append(
                    ((a * nc + b) * T_n + np.arange(T_n), cols, half * vals))
    out = {}
    for key, entries in parts.items():
        rows, cols, vals = (np.concatenate(x) for x in zip(*entries, strict=True))
        shape = (nc * nc * T_n, math.comb(k + key.m1 - 1, key.m1)
                 * math.comb(k + key.m2 - 1, key.m2))
        out[key] = _sparse.csr_matrix((vals, (rows, cols)), shape=shape)
    return out


def second_order_design(
    net,
    X,
    n: int,
    cutoffs,
    couplings=("lambda", "kappa"),
    propagator: str = "full",
    drop_two_point: bool = True,
    lattice=None,
    *,
    topologies=None,
    centred: bool = False,
) -> np.ndarray:
    """Quadratic design array (n_cutoffs, T_n, n_couplings, n_couplings).

    Convention (physics.md §5): :math:`P \\propto e^{-S}`,
    :math:`S = S_{GP} + \\int (\\lambda f^4 + \\kappa f^6)` with unit vertex coefficients;
    to second order in the couplings, on ``tuples.distinct_tuples(k, n)`` (the tuple order
    of :func:`first_order_design`),

    .. math:: G^{(n)}_t(g) = G^{(n)}_{GP,t} + \\sum_c D1_{tc}\\, g_c
        + \\sum_{c,d} g_c\\, D2_{tcd}\\, g_d,\\qquad
        D2_{tcd} = \\tfrac12 \\partial_c\\partial_d G^{(n)}_t\\big|_{g=0},

    with D1 = :func:`first_order_design` and D2 this array (symmetric in c, d). D2 is the
    sum of the linked two-vertex diagrams of :func:`second_order_diagrams` (rule 4.5 unless
    ``drop_two_point=False``), each integrated over both vertex positions by
    :func:`nngp_ppl.theory.second_order.two_vertex_integrals`; ``topologies`` restricts
    the sum (e.g. ``("exchange",)``). With an explicit ``lattice`` both vertices run over
    its points and ``cutoffs`` may be ``None``. Odd couplings (``"g3"``, ``"g5"``) are
    allowed; ``centred=True`` gives the design of the centred moments (module docstring,
    the 1-pt function).
    """
    _lattice.check_propagator(propagator)
    n = _check_n_second(n)
    names = coupling_names(couplings)
    X = _checks.inputs("X", X, net.d_in)
    K = np.asarray(net.kernel(X))
    mats = _second_order_matrices(K, n, names, bool(drop_two_point), topologies,
                                  _checks.boolean("centred", centred))
    k = X.shape[0]
    T_n = len(_tuples.distinct_tuples(k, n))
    if lattice is None:
        lam = _lattice.check_cutoffs(cutoffs, float(np.max(np.abs(X))), "cutoffs")
        if lam.ndim > 1:
            raise NNGPInputError(f"cutoffs must be a number or a 1-d array, got {lam.shape}")
        C = lam.size
    else:
        lam, C = None, 1
    nc = len(names)
    flat = np.zeros((nc * nc * T_n, C))
    if mats:
        ints = _second_order.two_vertex_integrals(net, X, list(mats), lam, propagator, lattice)
        for key, A in mats.items():
            flat += A @ ints[key].reshape(C, -1).T
    return flat.reshape(nc, nc, T_n, C).transpose(3, 2, 0, 1)


def second_order_design_slope(
    net,
    X,
    n: int,
    cutoffs,
    couplings=("lambda", "kappa"),
    propagator: str = "full",
    drop_two_point: bool = True,
    *,
    topologies=None,
    rel_step: float = 1e-4,
    centred: bool = False,
) -> np.ndarray:
    r""":math:`\partial D2 / \partial \log\Lambda`, shape (n_cutoffs, T_n, n_c, n_c), for
    the second-order flow (β-functions at second order; D1's slope is exact, see
    :func:`first_order_design_function`); ``centred`` as in :func:`second_order_design`.

    Central differences in :math:`\log\Lambda` with steps h and 2h (h = ``rel_step``),
    Richardson-extrapolated, so the truncation error is O(h⁴); the two-vertex integrals are
    accurate to ~1e-13 (1e-12 for ridge kernels), which bounds the slope's error by about
    1e-13 / h relative. On the degenerate ReLU net, where the exchange integral is exactly
    ∝ Λ^10, it returns 10 to 1e-8 (tests/test_second_order.py).
    """
    h = _checks.finite_float("rel_step", rel_step)
    if not 0 < h < 0.1:
        raise NNGPInputError(f"rel_step must be in (0, 0.1), got {rel_step!r}")
    X = _checks.inputs("X", X, net.d_in)
    lam = _lattice.check_cutoffs(cutoffs, float(np.max(np.abs(X))), "cutoffs").reshape(-1)
    if np.any(lam * np.exp(-2 * h) < float(np.max(np.abs(X)))):
        raise NNGPInputError("cutoffs must exceed the inputs' extent by twice the relative "
                             f"step {h:g} to take the slope; got {lam.tolist()}")
    steps = np.concatenate([lam * np.exp(s * h) for s in (1, -1, 2, -2)])
    D = second_order_design(net, X, n, steps, couplings, propagator, drop_two_point,
                            topologies=topologies, centred=centred)
    D = D.reshape(4, len(lam), -1)
    s1 = (D[0] - D[1]) / (2 * h)
    s2 = (D[2] - D[3]) / (4 * h)
    nc = len(coupling_names(couplings))
    return ((4 * s1 - s2) / 3).reshape(len(lam), -1, nc, nc)


def second_order_correction(net, X, n: int, couplings, cutoff, propagator: str = "full",
                            lattice=None, drop_two_point: bool = True) -> np.ndarray:
    """Second-order term :math:`g^{\\mathsf T} D2\\, g` as the full symmetric (k,)*n array
    (couplings a mapping of names to values; see :func:`second_order_design`)."""
    names, vals = _coupling_values(couplings)
    if lattice is None and np.ndim(cutoff) != 0:
        raise NNGPInputError(f"cutoff must be a single number here, got {cutoff!r}; use "
                             "second_order_design for several cutoffs")
    D2 = second_order_design(net, X, n, cutoff, names, propagator, drop_two_point, lattice)
    k = _checks.inputs("X", X, net.d_in).shape[0]
    return _tuples.expand(np.einsum("tij,i,j->t", D2[0], vals, vals), k, n)


__all__ = [
    "COUPLING_ORDERS",
    "Diagram",
    "Topology",
    "coupling_order",
    "first_order_correction",
    "first_order_design",
    "first_order_design_function",
    "first_order_diagrams",
    "first_order_expression",
    "group_topologies",
    "ngp_correlator",
    "SecondOrderDiagram",
    "SecondOrderTopology",
    "TOPOLOGIES",
    "group_second_order",
    "second_order_correction",
    "second_order_design",
    "second_order_design_slope",
    "second_order_diagrams",
    "second_order_expression",
]
