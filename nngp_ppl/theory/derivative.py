r"""First-order diagrams of a derivative operator, :math:`g_\partial \int f^2 (\partial f)^2`.

The operator (:data:`nngp_ppl.theory.operators.DERIVATIVE`, name ``"gd"``, kind
``derivative``) is

.. math:: \mathcal O(y) = f(y)^2 \sum_{\mu=1}^{d_{in}} \big(\partial_\mu f(y)\big)^2,
    \qquad S = S_{GP} + g_\partial \int_{[-\Lambda,\Lambda]^{d_{in}}} d^{d_{in}}y\;
    \mathcal O(y),

with :math:`P \propto e^{-S}` and a unit coefficient, as for the local operators
(physics.md §4, §6c).

**Derivation.** To first order,

.. math:: \Delta G^{(n)} = -g_\partial \int dy\,\big(\langle F\,\mathcal O(y)\rangle_{GP}
    - \langle F\rangle_{GP}\langle \mathcal O(y)\rangle_{GP}\big),\qquad
    F = f(x_1)\cdots f(x_n).

:math:`\partial_\mu f(y)` is a linear functional of the Gaussian field, so Isserlis'
theorem applies to the n + 4 fields :math:`f(x_1)..f(x_n), f(y), f(y), \partial_\mu f(y),
\partial_\mu f(y)` with the covariances obtained by differentiating the kernel:

* plain leg to external point: :math:`\tilde K(x_a, y)`;
* derivative leg to external point: :math:`\partial_{y_\mu} \tilde K(x_a, y)`;
* plain-plain self-loop: :math:`\tilde K(y, y)`;
* plain-derivative self-loop: :math:`M_\mu(y) = \partial_{y'_\mu}\tilde K(y, y')|_{y'=y}`
  (zero for a translation-invariant kernel);
* derivative-derivative self-loop: :math:`T(y) = \sum_\mu \partial_{y_\mu}\partial_{y'_\mu}
  \tilde K(y, y')|_{y'=y}` (:math:`\sigma_W^4` for the Gauss-net);

and the two derivative legs share the index μ, summed: a diagram with both derivative legs
on external points carries :math:`\nabla\tilde K_{ay}\cdot\nabla\tilde K_{by}`. All factors
are JAX derivatives of the ensemble's ``traced_kernel`` (the kernel must be differentiable;
non-finite factors are refused). :math:`\tilde K = K` or :math:`K - c` (``propagator``);
the constant c drops out of every derivative (:math:`\partial f = \partial\phi` for
:math:`f = \phi + b_1`).

The rules are those of the local vertex (:mod:`nngp_ppl.theory.diagrams`): enumerate the
perfect matchings of the n + 4 legs; drop vacuum bubbles (no external point on the vertex:
they are the subtracted :math:`\langle F\rangle\langle\mathcal O\rangle`); by the paper's
rule 4.5 (default; ``drop_two_point=False`` keeps them) drop the diagrams whose vertex
touches exactly two external points — corrections of the 2-pt function, which K already
is; with ``centred=True`` also those on one external point (none exist here: the vertex is
even and the ensembles zero-mean). Each kept diagram is :math:`-\text{mult}\, g_\partial
\int dy` times its factors. The vertex is even, so odd n get nothing; with rule 4.5::

    ΔG2 = 0
    ΔG4 = -4 g∂ ∫ Σ_6 Kay Kby ∂Kcy·∂Kdy
    ΔG6 = -4 g∂ ∫ Σ_90 Kay Kby ∂Kcy·∂Kdy Kef

(4 = 2!·2!: the two points on the plain legs in either order, likewise on the derivative
legs; Σ_6 over which pair sits on the plain legs; Σ_90 = 15 external pairs × 6.)
Without rule 4.5, e.g. ``ΔG2 = -2 g∂ ∫ T K1y K2y - 2 g∂ ∫ Kyy ∂K1y·∂K2y - 4 g∂ ∫
(K1y ∂K2y + K2y ∂K1y)·M``.

Integrals: on an explicit :class:`~nngp_ppl.theory.lattice.Lattice` its weighted sums,
otherwise on the cutoff box's Gauss–Legendre rule
(:func:`nngp_ppl.theory.lattice.box_lattice`, one per cutoff, the inputs as panel edges).
For a translation-invariant kernel that decays (Gauss-net), every ∂K̃ decays, so the
derivative vertex integrals converge as Λ → ∞ even with the full propagator: g∂ stops
running where λ (γ = d_in) does not.

Checked (tests/test_derivative_operator.py) against full Wick sums of the lattice model
exp(-S_GP - Σ_j w_j g f_j² ((f_{j+1} - f_{j-1})/2h)²), whose -∂_g<Π f> converges to the
design as h² (Richardson-extrapolated to 1e-7), and on the Gauss-net's box against the
closed-form Gaussian integrals.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import cache

import jax
import jax.numpy as jnp
import numpy as np

from .. import _checks
from .. import tuples as _tuples
from .._checks import NNGPInputError
from ..vocabulary import propagator_shift
from . import diagrams as _diagrams
from . import lattice as _lattice
from . import operators as _operators

#: Entries of one (tuples x points) integrand table (32 MiB of float64).
_CHUNK = 2**22


@dataclass(frozen=True)
class DerivativeDiagram:
    """One labelled first-order diagram of a derivative vertex: ``coefficient`` =
    -multiplicity; external points on the plain legs (``plain``) and on the derivative legs
    (``deriv``), external-external lines (``pairs``), plain-plain loops (``loops``),
    plain-derivative loops (``mixed``) and whether the derivative legs close on each other
    (``dd``)."""

    coefficient: int
    n: int
    plain: tuple[int, ...]
    deriv: tuple[int, ...]
    pairs: tuple[tuple[int, int], ...]
    loops: int
    mixed: int
    dd: bool
    symbol: str = "g∂"

    @property
    def attached(self) -> int:
        return len(self.plain) + len(self.deriv)

    def __str__(self) -> str:
        lab = (lambda a: str(a + 1)) if self.n <= 9 else (lambda a: f"({a + 1})")
        terms = ["T"] if self.dd else []
        if self.loops:
            terms.append("Kyy" if self.loops == 1 else f"Kyy^{self.loops}")
        terms += [f"K{lab(a)}y" for a in self.plain]
        vec = [f"∂K{lab(a)}y" for a in self.deriv] + ["M"] * self.mixed
        if vec:
            terms.append("·".join(vec))
        terms += [f"K{lab(a)}{lab(b)}" for a, b in self.pairs]
        return f"{self.coefficient} {self.symbol} ∫ " + " ".join(terms)


@cache
def _contraction_counts(n: int, derivatives: tuple[int, ...]):
    """Wick contractions of n external legs with the vertex legs (derivative count each),
    counted by labelled structure."""
    counts: Counter = Counter()
    legs = n + len(derivatives)
    for matching in _tuples.pairings(legs) if legs % 2 == 0 else ():
        plain, deriv, pairs, loops, mixed, dd = [], [], [], 0, 0, False
        for a, b in matching:  # a < b
            if b < n:
                pairs.append((a, b))
            elif a < n:
                (deriv if derivatives[b - n] else plain).append(a)
            else:
                kinds = derivatives[a - n] + derivatives[b - n]
                loops += kinds == 0
                mixed += kinds == 1
                dd = dd or kinds == 2
        counts[(tuple(sorted(plain)), tuple(sorted(deriv)), tuple(sorted(pairs)), loops,
                mixed, dd)] += 1
    return tuple(sorted(counts.items(), key=lambda kv: (-len(kv[0][0]) - len(kv[0][1]),
                                                          kv[0])))


def first_order_diagrams(n: int, coupling="gd", drop_two_point: bool = True, *,
                         centred: bool = False) -> list[DerivativeDiagram]:
    """All labelled first-order diagrams of the n-pt function with one derivative vertex
    (module docstring: vacuum bubbles dropped; rule 4.5 unless ``drop_two_point=False``;
    ``centred`` drops diagrams on one external point)."""
    n = _diagrams._check_n(n)
    op = _derivative_operator(coupling)
    if n + op.legs > _diagrams._MAX_LEGS:
        raise NNGPInputError(f"n must be <= {_diagrams._MAX_LEGS - op.legs} for literal Wick "
                             f"enumeration with a {op.legs}-leg vertex, got {n}")
    out = []
    for (plain, deriv, pairs, loops, mixed, dd), mult in _contraction_counts(
            n, op.derivatives):
        d = DerivativeDiagram(-mult, n, plain, deriv, pairs, loops, mixed, dd, op.symbol)
        if d.attached == 0 or (drop_two_point and d.attached == 2) or (
                centred and d.attached == 1):
            continue
        out.append(d)
    return out


def first_order_expression(n: int, coupling="gd", drop_two_point: bool = True) -> str:
    """Readable correction, labelled diagrams grouped by shape with a count, e.g.
    ``ΔG4 = -4 g∂ ∫ Σ_6 Kay Kby ∂Kcy·∂Kdy``."""
    groups: dict[tuple, list[DerivativeDiagram]] = {}
    for d in first_order_diagrams(n, coupling, drop_two_point):
        key = (d.coefficient, len(d.plain), len(d.deriv), len(d.pairs), d.loops, d.mixed, d.dd)
        groups.setdefault(key, []).append(d)
    letters = "abcdefghijklmnop"
    terms = []
    for ds in groups.values():
        d = ds[0]
        if len(ds) > 1:
            it = iter(range(d.n))
            plain = tuple(next(it) for _ in d.plain)
            deriv = tuple(next(it) for _ in d.deriv)
            pairs = tuple((next(it), next(it)) for _ in d.pairs)
            shape = DerivativeDiagram(d.coefficient, 99, plain, deriv, pairs, d.loops,
                                      d.mixed, d.dd, d.symbol)
            text = str(shape)
            for i in range(d.n):  # positional labels -> letters
                text = text.replace(f"({i + 1})", letters[i])
            head, body = text.split("∫ ")
            text = f"{head}∫ Σ_{len(ds)} {body}"
        else:
            text = str(d)
        terms.append(text)
    if not terms:
        return f"ΔG{n} = 0"
    body = " ".join(t if i == 0 else ("- " + t[1:] if t.startswith("-") else "+ " + t)
                    for i, t in enumerate(terms))
    return f"ΔG{n} = {body}"


def _derivative_operator(coupling):
    op = _operators.operator(coupling)
    if op.kind != "derivative":
        raise NNGPInputError(f"couplings: {op.name!r} is of kind {op.kind!r}; this engine is "
                             f"for derivative operators (e.g. 'gd')")
    return op


# --- leg factors: JAX derivatives of the traced kernel ---------------------------------------


def leg_factors(net, X, Y, propagator: str = "full") -> dict[str, np.ndarray]:
    """The vertex-leg factors at the points ``Y`` (P, d_in), from JAX derivatives of
    ``net.traced_kernel``: ``K`` (k, P) = K̃(x_a, y); ``dK`` (k, P, d_in) = ∂_y K̃(x_a, y);
    ``Kyy`` (P,) = K̃(y, y); ``M`` (P, d_in) = ∂_{y'} K̃(y, y')|_{y'=y};
    ``T`` (P,) = Σ_μ ∂_{y_μ} ∂_{y'_μ} K̃(y, y')|_{y'=y}."""
    shift = propagator_shift(net, propagator)
    Xj = jnp.asarray(X)

    def column(y):
        return net.traced_kernel(Xj, y[None, :])[:, 0]

    def pair(y, z):
        return net.traced_kernel(y[None, :], z[None, :])[0, 0]

    @jax.jit
    def factors(Y):
        same = jax.vmap(lambda y: (pair(y, y), jax.grad(pair, 1)(y, y),
                                   jnp.trace(jax.jacfwd(jax.grad(pair, 0), 1)(y, y))))
        Kyy, M, T = same(Y)
        return (jax.vmap(column)(Y).T, jnp.moveaxis(jax.vmap(jax.jacfwd(column))(Y), 0, 1),
                Kyy, M, T)

    K, dK, Kyy, M, T = (np.asarray(a, dtype=np.float64) for a in factors(jnp.asarray(Y)))
    out = {"K": K - shift, "dK": dK, "Kyy": Kyy - shift, "M": M, "T": T}
    for name, a in out.items():
        if not np.all(np.isfinite(a)):
            raise NNGPInputError(
                f"net: the derivative operator's leg factor {name} is not finite on the "
                f"vertex points (is {type(net).__name__}'s kernel differentiable there?)")
    return out


def _integrand(d: DerivativeDiagram, rows: np.ndarray, f: dict) -> np.ndarray:
    """(T, P) integrand of diagram ``d`` on the tuples ``rows``, without its coefficient and
    external lines."""
    P = f["Kyy"].shape[0]
    out = np.ones((len(rows), P)) * f["Kyy"] ** d.loops
    if d.dd:
        out = out * f["T"]
    for a in d.plain:
        out = out * f["K"][rows[:, a]]
    vec = [f["dK"][rows[:, a]] for a in d.deriv] + [np.broadcast_to(f["M"], (len(rows),)
                                                                     + f["M"].shape)] * d.mixed
    if vec:
        out = out * np.sum(vec[0] * vec[1], axis=-1)
    return out


def _lattice_design(d_list, K, rows, f, weights):
    out = np.zeros(len(rows))
    for d in d_list:
        ext = np.full(len(rows), float(d.coefficient))
        for a, b in d.pairs:
            ext = ext * K[rows[:, a], rows[:, b]]
        out += ext * (_integrand(d, rows, f) @ weights)
    return out


def first_order_design(net, X, n: int, cutoffs, couplings=("gd",), propagator: str = "full",
                       drop_two_point: bool = True, lattice=None, *,
                       centred: bool = False) -> np.ndarray:
    """Design array (n_cutoffs, T_n, n_couplings) of the first-order correction,
    :math:`\\Delta G^{(n)}_t = \\sum_c g_c\\, D[\\Lambda, t, c]` on
    ``tuples.distinct_tuples(k, n)``, for a basis that may mix derivative operators
    (``"gd"``, this module) with local ones (``"lambda"``..., whose columns are
    :func:`nngp_ppl.theory.diagrams.first_order_design`'s). Arguments as there: ``cutoffs``
    a number or 1-d array (the box's Gauss–Legendre rule per cutoff), or ``lattice`` an
    explicit rule (``cutoffs`` then may be ``None``)."""
    names = _operators.coupling_names(couplings)
    n = _diagrams._check_n(n)
    X = _checks.inputs("X", X, net.d_in)
    centred = _checks.boolean("centred", centred)
    drop_two_point = _checks.boolean("drop_two_point", drop_two_point)
    if lattice is None:
        lam = _lattice.check_cutoffs(cutoffs, float(np.max(np.abs(X))), "cutoffs")
        if lam.ndim > 1:
            raise NNGPInputError(f"cutoffs must be a number or a 1-d array, got {lam.shape}")
        lam = lam.reshape(-1)
        rules = [_lattice.box_lattice(net.d_in, float(c), "gauss_legendre", split_points=X,
                                      scale=_lattice.kernel_scale(net)) for c in lam]
    else:
        if not isinstance(lattice, _lattice.Lattice) or lattice.d_in != net.d_in:
            raise NNGPInputError(f"lattice must be a nngp_ppl.theory.lattice.Lattice of "
                                 f"d_in = {net.d_in}, got {lattice!r}")
        rules = [lattice]
    rows = _tuples.distinct_tuples(X.shape[0], n)
    out = np.zeros((len(rules), len(rows), len(names)))
    local = [c for c, name in enumerate(names) if _operators.operator(name).local]
    if local:
        out[..., local] = _diagrams.first_order_design(
            net, X, n, None if lattice is not None else lam, [names[c] for c in local],
            propagator, drop_two_point, lattice, centred=centred)
    K = np.asarray(net.kernel(X))
    for c, name in enumerate(names):
        if c in local:
            continue
        d_list = first_order_diagrams(n, name, drop_two_point, centred=centred)
        if not d_list:
            continue
        for i, rule in enumerate(rules):
            # In chunks of points: the integrands are (tuples x points) tables, and a
            # d_in = 3 box has ~1.6e6 points.
            step = max(1, _CHUNK // len(rows))
            for j in range(0, len(rule), step):
                f = leg_factors(net, X, rule.points[j:j + step], propagator)
                out[i, :, c] += _lattice_design(d_list, K, rows, f, rule.weights[j:j + step])
    return out


__all__ = ["DerivativeDiagram", "first_order_design", "first_order_diagrams",
           "first_order_expression", "leg_factors"]
