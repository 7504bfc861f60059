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
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache

import jax
import jax.numpy as jnp
import numpy as np

from .. import _checks
from .. import tuples as _tuples
from .._checks import NNGPInputError
from . import lattice as _lattice
from .wick import gp_correlator

COUPLING_ORDERS = {"lambda": 4, "kappa": 6}
_SYMBOLS = {4: "λ", 6: "κ"}
_SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")
# Literal enumeration visits (n + k - 1)!! matchings: 135135 at n + k = 14.
_MAX_LEGS = 14
_MAX_N = 10


# --- couplings ------------------------------------------------------------------------------


def check_vertex_order(k_vertex) -> int:
    """An even vertex order >= 4 (odd couplings vanish by the f -> -f symmetry)."""
    if isinstance(k_vertex, bool) or not isinstance(k_vertex, (int, np.integer)):
        raise NNGPInputError(f"k_vertex must be an even integer >= 4, got {k_vertex!r}")
    if k_vertex < 4 or k_vertex % 2:
        raise NNGPInputError(
            f"k_vertex must be an even integer >= 4 (odd couplings vanish by the f -> -f "
            f"symmetry of zero-mean ensembles; k = 2 is a mass term already in the GP), "
            f"got {k_vertex}"
        )
    return int(k_vertex)


def coupling_order(name: str) -> int:
    """Vertex order k of a coupling: ``"lambda"`` -> 4, ``"kappa"`` -> 6, ``"g8"`` -> 8."""
    if isinstance(name, str):
        if name in COUPLING_ORDERS:
            return COUPLING_ORDERS[name]
        match = re.fullmatch(r"g(\d+)", name)
        if match and int(match.group(1)) >= 8 and int(match.group(1)) % 2 == 0:
            return int(match.group(1))
    raise NNGPInputError(
        f"coupling names must be 'lambda' (the f^4 vertex), 'kappa' (f^6) or 'g<k>' for an "
        f"even k >= 8; got {name!r}"
    )


def coupling_names(couplings) -> tuple[str, ...]:
    """Validated, duplicate-free tuple of coupling names (a single name is accepted)."""
    if isinstance(couplings, str):
        couplings = (couplings,)
    names = tuple(couplings)
    if not names:
        raise NNGPInputError("couplings must name at least one coupling, e.g. ('lambda',)")
    for name in names:
        coupling_order(name)
    if len(set(names)) != len(names):
        raise NNGPInputError(f"couplings must not repeat a name, got {names}")
    return names


def coupling_symbol(k_vertex: int) -> str:
    return _SYMBOLS.get(k_vertex, f"g{k_vertex}")


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
        inverse = {v: k for k, v in COUPLING_ORDERS.items()}
        return inverse.get(self.k_vertex, f"g{self.k_vertex}")

    @property
    def corrects_two_point(self) -> bool:
        """True for the rule-4.5 diagrams: the vertex touches exactly two external points."""
        return len(self.attached) == 2

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


def _matchings(legs: tuple[int, ...]):
    """Every perfect matching of ``legs`` (the first leg paired with each other in turn)."""
    if not legs:
        yield ()
        return
    first = legs[0]
    for j in range(1, len(legs)):
        rest = legs[1:j] + legs[j + 1 :]
        for tail in _matchings(rest):
            yield ((first, legs[j]),) + tail


@cache
def _contraction_counts(n: int, k: int) -> tuple[tuple[tuple, int], ...]:
    """Wick contractions of n external + k vertex legs, counted by labelled structure."""
    counts: Counter = Counter()
    for matching in _matchings(tuple(range(n + k))):
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


def first_order_diagrams(n: int, k_vertex: int, drop_two_point: bool = True) -> list[Diagram]:
    """All labelled first-order diagrams of the n-point function with one k-leg vertex.

    Vacuum bubbles are dropped; the 2-pt corrections of rule 4.5 too unless
    ``drop_two_point=False``. Ordered by the number of legs on the vertex (most first),
    then lexicographically. ``str()`` of a diagram is e.g. ``-24 λ ∫ K1y K2y K3y K4y``.
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
                           drop_two_point: bool = True) -> str:
    """Readable first-order correction, e.g. ``ΔG4 = -24 λ ∫ K1y K2y K3y K4y - 360 κ ...``."""
    terms = []
    for name in coupling_names(couplings):
        topo = group_topologies(first_order_diagrams(n, coupling_order(name), drop_two_point))
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


def _design_matrices(K: np.ndarray, n: int, names: tuple[str, ...], drop_two_point: bool):
    """{(m, loops): array (n_couplings, T_n, T_m)}: the design is Σ_key A_key @ I_key."""
    out: dict[tuple[int, int], np.ndarray] = {}
    T_n = len(_tuples.distinct_tuples(K.shape[0], n))
    for j, name in enumerate(names):
        for diagram in first_order_diagrams(n, coupling_order(name), drop_two_point):
            key = (len(diagram.attached), diagram.loops)
            if key not in out:
                T_m = math.comb(K.shape[0] + key[0] - 1, key[0])
                out[key] = np.zeros((len(names), T_n, T_m))
            out[key][j] += _diagram_matrix(diagram, K)
    return out


def _prepare(net, X, n, couplings, propagator, drop_two_point):
    _lattice.check_propagator(propagator)
    n = _check_n(n)
    names = coupling_names(couplings)
    X = _checks.inputs("X", X, net.d_in)
    K = np.asarray(net.kernel(X))
    return n, names, X, K, _design_matrices(K, n, names, bool(drop_two_point))


def first_order_design_function(
    net,
    X,
    n: int,
    couplings=("lambda", "kappa"),
    propagator: str = "full",
    drop_two_point: bool = True,
    *,
    max_cutoff: float | None = None,
):
    """Pure JAX function ``cutoff -> (T_n, n_couplings)`` with
    :math:`\\Delta G^{(n)}_t = \\sum_c g_c\\, D_{tc}(\\Lambda)` on the distinct tuples.

    Traceable, vmappable over cutoffs and differentiable in the cutoff (the vertex integrals
    carry their exact surface-term derivative), e.g. for β-functions by automatic
    differentiation. ``max_cutoff`` sizes the quadrature panels (see
    :func:`nngp_ppl.theory.lattice.vertex_integral_function`).
    """
    n, names, X, K, mats = _prepare(net, X, n, couplings, propagator, drop_two_point)
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
) -> np.ndarray:
    """Design array (n_cutoffs, T_n, n_couplings) of the first-order correction.

    .. math:: \\Delta G^{(n)}_t(\\Lambda) = \\sum_c g_c\\, \\mathrm{design}[\\Lambda, t, c]

    on ``tuples.distinct_tuples(k, n)``; ``couplings`` names the columns (``"lambda"`` the
    :math:`f^4` vertex, ``"kappa"`` the :math:`f^6` vertex). ``cutoffs`` is a number or a
    1-d array; with an explicit ``lattice`` (e.g. the uniform lattice of a field model) the
    integrals are its weighted sums and ``cutoffs`` may be ``None``.
    """
    n, names, X, K, mats = _prepare(net, X, n, couplings, propagator, drop_two_point)
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
]
