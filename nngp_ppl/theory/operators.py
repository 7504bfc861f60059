r"""Operators of the effective action as objects: one record per operator.

The effective action (physics.md §4) is

.. math:: S[f] = S_{GP}[f] + \sum_c g_c \int_{[-\Lambda,\Lambda]^{d_{in}}} d^{d_{in}}y\;
    \mathcal O_c(y),

with :math:`P[f] \propto e^{-S}` and unit coefficients (no :math:`1/k!`). An
:class:`Operator` records everything the stages need to know about one
:math:`\mathcal O_c`:

* ``legs`` — the number of fields k it multiplies (the legs of its vertex);
* ``derivatives`` — its derivative structure, the number of input derivatives on each leg
  (``()`` for a local operator :math:`f^k`; see :data:`KINDS`);
* ``name``, ``symbol`` — the coupling's name (``"lambda"``, ``"g3"``) and its printed
  symbol (``"λ"``, ``"g₃"``);
* ``parity`` — its sign under :math:`f \to -f`, :math:`(-1)^k`: odd operators are
  forbidden by the symmetry of zero-mean ensembles and allowed once it is broken;
* ``size_power`` — the expected size of the coupling in 1/N,
  :math:`g \sim N^{-p}` with :math:`p = (k - 2)/2` (the connected k-pt function of a
  width-N network is :math:`O(N^{-(k-2)/2})`: λ ~ 1/N, κ ~ 1/N²; for odd k this is the
  counting when the f → -f breaking is itself :math:`O(N^{-1/2})`, the case where the
  :math:`g_3^2` exchange enters the 4-pt function at the order of λ);
* :meth:`Operator.density` — its density on a lattice: the value of
  :math:`\mathcal O_c` at a site given the field there, so that the discretised
  interaction is :math:`\sum_j w_j \sum_c g_c\, \mathcal O_c(f_j)`
  (:mod:`nngp_ppl.inference.models.field`).

Names. ``g<k>`` (k >= 1) is the local operator :math:`f^k`; ``lambda`` = ``g4`` and
``kappa`` = ``g6`` are aliases, and the alias is the name a validated basis carries (so
files, columns and CLI flags that say "lambda" keep working). :func:`coupling_names` is the
one validation function for coupling names; layers that fit only some bases restrict them
through it (``fit_orders``), with one message.

Adding a local operator is nothing: every ``g<k>`` has its record (:func:`operator`); a
named alias is an entry of :data:`ALIASES` (and its symbol). A new *kind* of operator
is one :class:`Kind` in :data:`KINDS` (its leg factor: what replaces the
propagator :math:`\tilde K(x, y)` on a vertex leg) plus its records; the local diagram
engine (:mod:`nngp_ppl.theory.diagrams`) refuses any other kind by name
(:func:`require_local`).

The ``derivative`` kind: ``gd`` (symbol g∂) is :math:`f^2 (\partial f)^2 =
f^2 \sum_\mu (\partial_\mu f)^2`, summed over the input directions; its legs carry the
derivative counts (0, 0, 1, 1). Its first-order diagrams, with the leg factors from JAX
derivatives of the ensemble's traced kernel, are :mod:`nngp_ppl.theory.derivative`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

import numpy as np

from .._checks import NNGPInputError

_SUBSCRIPT = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


@dataclass(frozen=True)
class Kind:
    """A kind of operator: its ``name``, and its ``leg_factor`` — in words, the factor a
    vertex leg carries in a diagram (what the vertex integrals must integrate)."""

    name: str
    leg_factor: str
    #: Legs that carry one input derivative ∂_μ (their directions summed in pairs); 0 for
    #: a kind whose records may give any derivative structure.
    derivative_legs: int = 0


#: The kinds of operator: ``local`` (nngp_ppl.theory.diagrams, second order too) and
#: ``derivative`` (first order, nngp_ppl.theory.derivative).
KINDS = {
    "local": Kind("local", "K̃(x, y): the vertex-leg propagator of nngp_ppl.theory.lattice"),
    "derivative": Kind(
        "derivative",
        "∂_μ K̃(x, y) (d/dy of the traced kernel) on a derivative leg joined to x; "
        "∂'_μ K̃(y, y') at y' = y on a loop from a plain to a derivative leg; "
        "Σ_μ ∂_μ ∂'_μ K̃(y, y') at y' = y on a loop between the two derivative legs "
        "(nngp_ppl.theory.derivative)", derivative_legs=2),
}

#: Named couplings: alias -> vertex order k of the local operator f^k.
ALIASES = {"lambda": 4, "kappa": 6}
_SYMBOLS = {4: "λ", 6: "κ"}


@dataclass(frozen=True)
class Operator:
    """One operator of the effective action (module docstring).

    ``legs``: vertex legs k; ``derivatives``: input derivatives per leg (``()`` when local);
    ``kind``: a key of :data:`KINDS`; ``name``: the coupling's name (the alias when there is
    one); ``symbol``: its printed symbol."""

    legs: int
    name: str
    symbol: str
    kind: str = "local"
    derivatives: tuple[int, ...] = ()

    def __post_init__(self):
        if isinstance(self.legs, bool) or not isinstance(self.legs, int) or self.legs < 1:
            raise NNGPInputError(f"an operator needs legs >= 1, got {self.legs!r}")
        if self.kind not in KINDS:
            raise NNGPInputError(f"operator kind must be one of {sorted(KINDS)}, got "
                                 f"{self.kind!r}")
        if self.derivatives and len(self.derivatives) != self.legs:
            raise NNGPInputError(f"derivatives must give one count per leg ({self.legs}), "
                                 f"got {self.derivatives!r}")
        need = KINDS[self.kind].derivative_legs
        if need and (sorted(self.derivatives) != [0] * (self.legs - need) + [1] * need):
            raise NNGPInputError(
                f"an operator of kind {self.kind!r} needs derivatives: one count per leg, "
                f"{need} legs with one input derivative and the rest none, got "
                f"{self.derivatives!r}")

    @property
    def parity(self) -> int:
        """Sign under f -> -f: (-1)^legs (derivatives do not change it)."""
        return -1 if self.legs % 2 else 1

    @property
    def even(self) -> bool:
        return self.parity == 1

    @property
    def size_power(self) -> float:
        """p in the expected size g ~ N^-p of the coupling: (legs - 2) / 2 (module
        docstring). A counting for k >= 3; the source (k = 1) and mass (k = 2) terms are
        fixed by the GP's mean and kernel, and the value says nothing about them."""
        return (self.legs - 2) / 2

    @property
    def local(self) -> bool:
        return self.kind == "local"

    @property
    def dimension(self) -> int:
        """Field dimension counted as the number of legs plus derivatives (the Wilsonian
        recipe's bound k on the operators' dimension)."""
        return self.legs + sum(self.derivatives)

    def density(self, f):
        """The operator's density at lattice sites, given the field there: f^k for the
        local kind (NumPy or JAX arrays alike)."""
        if not self.local:
            raise NNGPInputError(f"operator {self.name!r} ({self.kind}) has no lattice "
                                 f"density here (its derivatives need the neighbouring "
                                 f"sites); only local operators do")
        return f**self.legs

    def __str__(self) -> str:
        if self.local:
            return f"{self.symbol} f^{self.legs}"
        plain = self.derivatives.count(0)
        return f"{self.symbol} f^{plain}(∂f)^{self.legs - plain}"


def _name(k: int) -> str:
    inverse = {v: a for a, v in ALIASES.items()}
    return inverse.get(k, f"g{k}")


def local(k: int) -> Operator:
    """The local operator f^k (k >= 1) and its coupling's record."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise NNGPInputError(f"a local operator f^k needs an integer k >= 1, got {k!r}")
    return _local(int(k))


@cache
def _local(k: int) -> Operator:
    return Operator(k, _name(k), _SYMBOLS.get(k, "g" + str(k).translate(_SUBSCRIPT)))


#: The derivative operators by name: gd = f²(∂f)², summed over the input directions.
DERIVATIVE = {"gd": Operator(4, "gd", "g∂", "derivative", (0, 0, 1, 1))}

_NAMES_ALLOWED = ("'g<k>' for the local operator f^k (any integer k >= 1, e.g. 'g3'), "
                  "'lambda' (= g4), 'kappa' (= g6) or 'gd' (f²(∂f)²)")


def operator(name) -> Operator:
    """The record of a coupling name: ``"g3"`` -> f³, ``"lambda"``/``"g4"`` -> f⁴,
    ``"kappa"``/``"g6"`` -> f⁶, ``"gd"`` -> f²(∂f)². An :class:`Operator` is returned as
    it is."""
    if isinstance(name, Operator):
        return name
    if isinstance(name, str):
        if name in ALIASES:
            return local(ALIASES[name])
        if name in DERIVATIVE:
            return DERIVATIVE[name]
        match = re.fullmatch(r"g([1-9]\d{0,2})", name)
        if match:
            return local(int(match.group(1)))
    raise NNGPInputError(f"coupling names must be {_NAMES_ALLOWED}; got {name!r}")


def coupling_order(name) -> int:
    """Vertex order k (number of legs) of a coupling name."""
    return operator(name).legs


def _fit_bases(fit_orders) -> list[tuple[str, ...]]:
    """Nested bases a fit to the correlators of ``fit_orders`` can hold: the even local
    operators with 4 <= k <= the highest even order, in order of their expected size, the
    leading one (λ) always present (it carries the leading 1/N deviation); where odd
    correlators are fitted too, each even basis also with the nested odd operators
    (g₃, then g₅) with 3 <= k <= the highest odd order (an odd operator's first-order
    diagrams are in the odd correlators only). A basis is returned in order of expected
    size (g₃ ~ N^-1/2, λ ~ 1/N, g₅ ~ N^-3/2, κ ~ 1/N²)."""
    def nested(parity, top):
        ops = [local(k) for k in range(3, top + 1) if local(k).parity == parity
               and local(k).legs >= (4 if parity == 1 else 3)]
        ops.sort(key=lambda o: o.size_power)
        return [ops[:m] for m in range(1, len(ops) + 1)]

    evens = [n for n in fit_orders if n % 2 == 0]
    odds = [n for n in fit_orders if n % 2]
    even_bases = nested(1, max(evens)) if evens else []
    odd_bases = [[]] + (nested(-1, max(odds)) if odds else [])
    out = []
    for odd in odd_bases:
        for even in even_bases:
            ops = sorted(even + odd, key=lambda o: o.size_power)
            out.append(tuple(o.name for o in ops))
    return out


def coupling_names(couplings, *, fit_orders=None, name: str = "couplings") -> tuple[str, ...]:
    """The one validation of coupling names: a validated, duplicate-free tuple of names.

    ``couplings``: names (``"g3"``, ``"lambda"``, ``"g4"``...), a single name, or a
    comma-separated string (``"lambda,kappa"``). Aliases are normalised to their name
    (``"g4"`` -> ``"lambda"``), so ``("lambda", "g4")`` repeats a coupling and is refused.

    ``fit_orders``: the correlator orders of a coupling fit. Then the basis must also be
    one the fit holds (:func:`_fit_bases`: with even orders up to 6, ``("lambda",)`` or
    ``("lambda", "kappa")``; with odd orders up to 5 as well, either of them with g3 or
    g3 and g5; in any order of naming, returned in order of size).
    κ alone is refused: λ ~ 1/N carries the leading deviation of the 4-pt function, so an
    action with κ and without λ describes no finite-width ensemble. ``name`` is the argument
    the messages name (``"--couplings"`` on the command line).
    """
    if isinstance(couplings, str):
        couplings = tuple(c.strip() for c in couplings.split(",") if c.strip())
    elif isinstance(couplings, Operator):
        couplings = (couplings,)
    try:
        raw = tuple(couplings)
    except TypeError:
        raise NNGPInputError(f"couplings must be coupling names ({_NAMES_ALLOWED}); got "
                             f"{couplings!r}") from None
    if not raw:
        raise NNGPInputError("couplings must name at least one coupling, e.g. ('lambda',)")
    try:
        names = tuple(operator(c).name for c in raw)
    except NNGPInputError as err:
        raise NNGPInputError(f"{name}: {err}") from None
    if len(set(names)) != len(names):
        raise NNGPInputError(f"couplings must not repeat a coupling (lambda = g4, kappa = g6), "
                             f"got {raw}")
    if fit_orders is None:
        return names
    bases = _fit_bases(fit_orders)
    for basis in bases:
        if set(basis) == set(names):
            return basis
    shown = " or ".join(",".join(b) for b in bases)
    given = ",".join(str(getattr(c, "name", c)) for c in raw)
    raise NNGPInputError(
        f"{name} must be {shown}, got {given!r}: for a fit to the orders {tuple(fit_orders)} "
        f"the basis is nested by expected size (g_k ~ N^-(k-2)/2), so it always holds the "
        f"leading lambda ~ 1/N, and odd operators need odd correlators"
    )


def check_visible(couplings, orders) -> tuple[str, ...]:
    """``couplings`` validated, each with a first-order diagram in one of the correlator
    ``orders`` (n + k even: an odd operator needs an odd correlator), else a clear error:
    a fit would hold a coupling no data constrain."""
    names = coupling_names(couplings)
    orders = tuple(int(n) for n in orders)
    for name in names:
        op = operator(name)
        if not any((n + op.legs) % 2 == 0 for n in orders):
            raise NNGPInputError(
                f"couplings: {name} ({op}, parity {op.parity:+d}) has no first-order diagram "
                f"in the correlators of orders {orders}; an operator of odd legs needs odd "
                f"orders")
    return names


def operators(couplings) -> tuple[Operator, ...]:
    """Records of validated coupling names (see :func:`coupling_names`)."""
    return tuple(operator(n) for n in coupling_names(couplings))


def coupling_symbol(k_vertex: int) -> str:
    """Printed symbol of the local f^k coupling: λ, κ, g₃..."""
    return local(k_vertex).symbol


def require_local(op: Operator, what: str) -> Operator:
    """``op`` if it is local, else a clear error: ``what`` exists for local operators only."""
    if not op.local:
        raise NNGPInputError(f"{what} exist for local operators f^k only; {op.name!r} is of "
                             f"kind {op.kind!r}")
    return op


def up_to_dimension(k_max: int, symmetry: str | None = None) -> tuple[Operator, ...]:
    """Every local operator f^k with 3 <= k <= ``k_max`` (the Wilsonian recipe's basis;
    k = 1, 2 are the source and mass terms, already fixed by the GP's mean and kernel) that
    respects ``symmetry``: ``None`` (no symmetry) or ``"z2"`` (f -> -f: even k only)."""
    if isinstance(k_max, bool) or not isinstance(k_max, (int, np.integer)) or k_max < 3:
        raise NNGPInputError(f"k_max must be an integer >= 3, got {k_max!r}")
    if symmetry not in (None, "z2"):
        raise NNGPInputError(f"symmetry must be None or 'z2' (f -> -f), got {symmetry!r}")
    ops = (local(k) for k in range(3, int(k_max) + 1))
    return tuple(o for o in ops if symmetry is None or o.even)


__all__ = ["ALIASES", "DERIVATIVE", "KINDS", "Kind", "Operator", "check_visible", "coupling_names",
           "coupling_order",
           "coupling_symbol", "local", "operator", "operators", "require_local",
           "up_to_dimension"]
