r"""One coupling problem: the data, the theory and the declared estimand of a fit, built once.

Every consumer of a first-order fit — the paper's point estimates (:mod:`nngp_ppl.inference.eft`),
the numpyro posterior (:mod:`nngp_ppl.inference.couplings`), the β-functions
(:mod:`nngp_ppl.inference.flow`) and the report — reads the same :class:`EFTTheory` (inputs,
GP correlators, the first-order design :math:`D(\Lambda)` and its derivative, the estimand's
weights) and, for sampled data, the same :class:`EFTData` (observed correlators, the noise
model and its name).

The estimand
------------
With :math:`r = G - G_{free}` the noise-free non-Gaussian deviations on the distinct tuples
of the fitted orders (:math:`G_{free}` the Wick sums of K, or, for an ensemble whose
finite-width 2-pt function is not K, of that 2-pt function: :mod:`nngp_ppl.inference.two_point`),
:math:`D(\Lambda)` the first-order design (physics.md §6, rule 4.5,
:math:`\Delta G = D g`) and the fixed scales :math:`s_t(\Lambda) = |D_{t\lambda}(\Lambda)|`
(the size of λ's first-order correction to tuple t), the coupling at cutoff Λ is

.. math:: g^*(\Lambda) = \arg\min_g \sum_t \Big(\frac{r_t - D_t(\Lambda)\, g}{s_t(\Lambda)}
    \Big)^2 = B(\Lambda)\, r, \qquad B = (A^\top A)^{-1} A^\top S^{-1},\quad A = S^{-1} D .

For λ alone this is :math:`\bar\lambda(\Lambda) = \frac1T\sum_t \lambda_t(\Lambda)` with
:math:`\lambda_t = r_t / D_{t\lambda}` — the paper's equal-weight mean over tuples (§7) —
and for (λ, κ) jointly the least-squares couplings in units of each tuple's own λ
sensitivity. The weights depend on the design alone: not on the number of networks, on the
noise model, on eigenvalue floors or on the data. The posterior is for :math:`g^*` evaluated
on the *exact* correlators; its calibration is measured against
:func:`nngp_ppl.theory.exact.exact_correlator_tuples` (``benchmarks/calibration.py``).

What a single coupling cannot describe — the spread of the per-tuple couplings, the model
discrepancy — is not averaged into the interval: it is reported beside it as
:math:`\tau = \big[\frac1T\sum_t ((r_t - D_t g^*)/s_t)^2\big]^{1/2}` (for λ alone the
standard deviation of :math:`\lambda_t` over tuples).

The running follows from the same map: :math:`\beta = dg^*/d\log\Lambda =
(dB/d\log\Lambda)\, r`, differentiated by JAX through the vertex integrals (whose cutoff
derivative is the exact surface term). With one coupling it is
:math:`-\frac1T\sum_t\gamma_t\lambda_t`, so :math:`\gamma = -\beta/\bar\lambda` is the
:math:`\lambda_t`-weighted mean of the per-tuple exponents :math:`\gamma_t = d\log
I_t/d\log\Lambda`: it depends on the data only through how the non-Gaussianity is shared
between tuples.
"""

from __future__ import annotations

import functools
import json
import warnings
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from .. import _checks
from .._checks import NNGPInputError
from ..sampling.stats import MIN_EFFECTIVE_NETWORKS, square_index, union_index
from ..theory import exact
from ..theory import operators as _operators
from ..theory.diagrams import (
    first_order_design_function,
    second_order_design,
    second_order_design_slope,
)
from ..theory.exact import exact_correlator_tuples
from ..theory.wick import gp_correlator_tuples
from ..tuples import distinct_tuples, expand
from ..vocabulary import NOISE_MODELS, check_propagator
from . import centring as _centring_mod
from .estimators import estimand
from .two_point import free_part

__all__ = [
    "FIT_ORDERS",
    "ODD_FIT_ORDERS",
    "ALL_FIT_ORDERS",
    "NOISE_MODELS",
    "coupling_names",
    "basis",
    "odd_couplings",
    "default_data_orders",
    "perturbative_order",
    "default_orders",
    "design_function",
    "EFTTheory",
    "estimand_projection",
    "noise_covariance",
    "exact_noise_available",
    "choose_noise",
    "TAIL_MASS_RATIO",
    "missed_tail_mass",
    "HEAVY_TAIL_DF",
    "likelihood_df",
    "NORMAL_DF",
    "gaussian_moments",
    "estimator_covariance",
    "CENTRED_FIT_ORDERS",
    "centred_raw_covariance",
    "centred_observation",
    "centred_raw_vector",
]

#: Even correlator orders a first-order coupling fit can use (the default data orders).
FIT_ORDERS = (4, 6)
#: Odd correlator orders a fit with odd couplings (g3, g5) uses as well: the 1-pt function
#: (g3's and g5's tadpoles) and the 3- and 5-pt functions.
ODD_FIT_ORDERS = (1, 3, 5)
#: Every correlator order a fit can use.
ALL_FIT_ORDERS = tuple(sorted(FIT_ORDERS + ODD_FIT_ORDERS))



def coupling_names(couplings, name: str = "couplings") -> tuple[str, ...]:
    """Validated couplings of a fit: ``("lambda",)`` or ``("lambda", "kappa")``, either
    with ``g3`` or ``g3, g5`` (in order of expected size, e.g. ``("g3", "lambda")``);
    ``name`` is the argument the messages name.

    The one validation of coupling names (:func:`nngp_ppl.theory.operators.coupling_names`)
    restricted to the bases a fit to :data:`FIT_ORDERS` holds: nested by the operators'
    expected size, so κ alone is refused (λ ~ 1/N is the leading coupling, an action with κ
    and without λ describes no finite-width ensemble, and the estimand's scales are λ's
    sensitivities); the odd operators are nested the same way (g₃ ~ N^-1/2 before
    g₅ ~ N^-3/2) and are fitted to the odd correlators (:data:`ODD_FIT_ORDERS`).
    """
    return _operators.coupling_names(couplings, fit_orders=ALL_FIT_ORDERS, name=name)


def basis(max_dimension: int, symmetry: str | None = None) -> tuple[str, ...]:
    """The Wilsonian recipe's basis of a fit: every local operator f^k with
    3 <= k <= ``max_dimension`` that respects the declared ``symmetry`` (``"z2"``: f -> -f
    prunes the odd operators; ``None``: none declared), as validated coupling names in
    order of expected size (:func:`nngp_ppl.theory.operators.up_to_dimension`).

    ``basis(4, "z2")`` = (λ,), ``basis(6, "z2")`` = (λ, κ), ``basis(4)`` = (g3, λ),
    ``basis(6)`` = (g3, λ, g5, κ). A fit holds even orders up to 6 and odd ones up to 5
    (:data:`ALL_FIT_ORDERS`), so ``max_dimension`` is 4, 5 or 6.
    """
    if isinstance(max_dimension, bool) or not isinstance(max_dimension, (int, np.integer)) \
            or not 4 <= max_dimension <= max(ALL_FIT_ORDERS):
        raise NNGPInputError(f"max_dimension must be an integer in 4..{max(ALL_FIT_ORDERS)} "
                             f"(λ = f^4 is the leading operator; the fits reach the "
                             f"{max(ALL_FIT_ORDERS)}-pt function), got {max_dimension!r}")
    ops = _operators.up_to_dimension(int(max_dimension), symmetry)
    return coupling_names(tuple(o.name for o in ops))


def odd_couplings(couplings) -> tuple[str, ...]:
    """The odd operators (g3, g5) among validated ``couplings``."""
    return tuple(c for c in couplings if not _operators.operator(c).even)


def default_data_orders(couplings) -> tuple[int, ...]:
    """:data:`FIT_ORDERS`, with the odd orders an odd basis needs (1 and 3 for g3, also 5
    for g5), sorted (the order :func:`nngp_ppl.infer_couplings` stacks them in)."""
    odd = odd_couplings(couplings)
    top = max((_operators.operator(c).legs for c in odd), default=0)
    return tuple(sorted(tuple(n for n in ODD_FIT_ORDERS if n <= top) + FIT_ORDERS))


def perturbative_order(order) -> int:
    """Validated perturbative order of the EFT prediction: 1 (first order in the couplings,
    the paper's) or 2 (adds the λ² two-vertex diagrams, consistent at O(1/N²);
    :mod:`nngp_ppl.inference.estimators`)."""
    if isinstance(order, bool) or order not in (1, 2):
        raise NNGPInputError(f"order must be 1 or 2 (the perturbative order in the "
                             f"couplings), got {order!r}")
    return int(order)


def default_orders(couplings, available) -> tuple[int, ...]:
    """The paper's choice: λ alone from the 4-pt function (the 6-pt function then tests the
    prediction out of sample); κ needs the 6-pt function as well. An odd basis adds the
    odd orders up to its highest odd operator's legs (g3: the 1- and 3-pt functions;
    g5: the 5-pt function too)."""
    even = tuple(c for c in couplings if c not in odd_couplings(couplings))
    wanted = (4,) if even == ("lambda",) else (4, 6)
    wanted = wanted + tuple(n for n in default_data_orders(couplings) if n % 2)
    return tuple(n for n in available if n in wanted)


def design_function(net, X, orders, couplings, propagator: str = "full", max_cutoff=None,
                    centred: bool = False):
    r"""Pure JAX function ``cutoff -> (T, C)``: the first-order design of physics.md §6.

    Rule 4.5 on (no two-point corrections); vertex legs carry ``propagator``, external lines
    the full K. Rows: the distinct tuples of each order in ``orders``, concatenated;
    columns: ``couplings``:

    .. math::
        \Delta G_4 &= -24\lambda\, I^{(0)}_{1234} - 360\kappa\, I^{(1)}_{1234} \\
        \Delta G_6 &= -24\lambda \textstyle\sum_{15} I^{(0)}_{abcd} K_{ef}
            - 720\kappa\, I^{(0)}_{123456} - 360\kappa \sum_{15} I^{(1)}_{abcd} K_{ef}

    with :math:`I^{(\ell)}_t = \int_{box} \prod_{a\in t}\tilde K(x_a,y)\,\tilde K(y,y)^\ell dy`.
    ``centred``: the designs of the centred moments (physics.md §6b; :mod:`.centred`).
    """

    fns = [
        first_order_design_function(
            net, X, n, couplings, propagator, drop_two_point=True, max_cutoff=max_cutoff,
            centred=centred)
        for n in orders
    ]

    def design(cutoff):
        return jnp.concatenate([fn(cutoff) for fn in fns], axis=0)

    return design


@dataclass(frozen=True, eq=False)
class EFTTheory:
    r"""The theory side of a fit: correlators of the data orders, design and estimand weights.

    ``data_orders``: the correlator orders the observation vector holds (concatenated in
    this order); ``orders``: the subset that defines the couplings. Arrays are built lazily
    per cutoff by :meth:`at`.

    ``centred``: the theory expands around the mean (physics.md §6b, §6d;
    :mod:`.centred`): the data are the centred moments of orders 3..6, the designs
    those of the centred moments, and lines carry the covariance of ``kernel_net`` (its
    ``traced_kernel``; by default the limit covariance of a net with non-zero means).
    """

    net: object
    X: np.ndarray
    couplings: tuple[str, ...]
    orders: tuple[int, ...]
    data_orders: tuple[int, ...]
    propagator: str
    max_cutoff: float
    order: int = 1
    centred: bool = False
    kernel_net: object = None

    @classmethod
    def build(cls, net, X, couplings=("lambda",), orders=None, data_orders=None,
              propagator: str = "full", max_cutoff: float | None = None,
              order: int = 1, *, centred: bool | None = None,
              kernel_net=None) -> EFTTheory:
        """Validated theory. ``centred``: expand around the mean (:mod:`.centred`);
        ``None`` (default) chooses it exactly when ``net`` has non-zero means (its mean is
        O(1) at every width, which no zero-mean expansion describes). ``kernel_net``: the
        object whose ``traced_kernel`` is the propagator (default ``net``, or for a net
        with non-zero means its limit covariance, :func:`.centring.propagator_net`).
        """

        X = _checks.inputs("X", X, net.d_in)
        couplings = coupling_names(couplings)
        centred, kernel_net = _centring(net, centred, kernel_net)
        fit_orders = CENTRED_FIT_ORDERS if centred else ALL_FIT_ORDERS
        if data_orders is None:
            data_orders = (_centring_mod.default_centred_orders(couplings) if centred
                           else default_data_orders(couplings))
        data_orders = tuple(data_orders)
        if not data_orders or any(n not in fit_orders for n in data_orders):
            what = "centred data orders" if centred else "data orders"
            raise NNGPInputError(f"{what} must be among {fit_orders}, got {data_orders}")
        if orders is None:
            orders = default_orders(couplings, data_orders)
        orders = tuple(int(n) for n in orders)
        if not orders or any(n not in data_orders for n in orders):
            raise NNGPInputError(
                f"orders must be a non-empty subset of {data_orders}, got {orders}"
            )
        for op in _operators.operators(couplings):
            same = [n for n in orders if (n - op.legs) % 2 == 0]
            if not same or op.legs > max(same):  # its contact diagram needs a k-pt function
                raise NNGPInputError(f"fitting {op.name} needs the {op.legs}-pt function: "
                                     f"orders must include {op.legs}")
        if any(n % 2 for n in orders) and not odd_couplings(couplings):
            raise NNGPInputError(f"orders {orders} hold odd correlators, which no even "
                                 f"coupling predicts at first order: add g3 to the couplings "
                                 f"or fit even orders only")
        check_propagator(propagator)
        extent = float(np.max(np.abs(X)))
        max_cutoff = float(max_cutoff) if max_cutoff is not None else max(10.0, 4 * extent)
        order = perturbative_order(order)
        if order == 2 and odd_couplings(couplings):
            raise NNGPInputError("order 2 holds the lambda^2 diagrams only; a basis with odd "
                                 "couplings (whose g3^2 exchange enters at the order of "
                                 "lambda) is fitted at order 1")
        if order == 2 and centred:
            raise NNGPInputError("order 2 is not built for the centred theory (its second-"
                                 "order designs of the centred moments are not in the "
                                 "estimand); fit it at order 1")
        return cls(net, X, couplings, orders, data_orders, propagator, max_cutoff, order,
                   centred, kernel_net)

    # --- fixed pieces -------------------------------------------------------------------
    @property
    def k(self) -> int:
        return self.X.shape[0]

    @functools.cached_property
    def blocks(self) -> tuple[int, ...]:
        return tuple(len(distinct_tuples(self.k, n)) for n in self.data_orders)

    @functools.cached_property
    def fitted(self) -> np.ndarray:
        """(T,) mask of the observations in the fitted orders."""
        return np.concatenate(
            [np.full(b, n in self.orders) for n, b in zip(self.data_orders, self.blocks,
                                                           strict=True)]
        )

    @functools.cached_property
    def scale_columns(self) -> np.ndarray:
        """(T,) the coupling whose sensitivity scales each observation (the estimand's
        :math:`s_t`): λ on the even orders, g3 (the leading odd operator) on the odd ones,
        where λ has no first-order diagram."""
        odd = odd_couplings(self.couplings)
        lam = self.couplings.index("lambda")
        col = {n: (self.couplings.index(odd[0]) if n % 2 and odd else lam)
               for n in self.data_orders}
        return np.concatenate([np.full(b, col[n]) for n, b in zip(self.data_orders,
                                                                   self.blocks, strict=True)])

    @functools.cached_property
    def propagator_net(self):
        """The object whose ``traced_kernel`` is the propagator (``kernel_net`` or ``net``)."""
        return self.net if self.kernel_net is None else self.kernel_net

    @functools.cached_property
    def kernel(self) -> np.ndarray:
        return np.asarray(self.propagator_net.kernel(self.X), dtype=np.float64)

    @functools.cached_property
    def gp(self) -> np.ndarray:
        """(T,) Wick correlators of the data orders."""
        return np.concatenate([gp_correlator_tuples(self.kernel, n) for n in self.data_orders])

    @functools.cached_property
    def _identity(self):
        """What the theory's arrays depend on, as a hashable key (None for an ensemble that
        cannot describe itself, e.g. a closure-built JaxNetwork: nothing is shared then)."""

        try:
            net = json.dumps(self.net.to_dict(), sort_keys=True)
        except (NNGPInputError, TypeError, ValueError):
            return None
        if self.centred:
            # The propagator: the net's own limit covariance, or a hashable object.
            prop = self.propagator_net
            if isinstance(prop, _centring_mod.LimitCovariance) and prop.base == self.net:
                prop = "limit_covariance"
            try:
                hash(prop)
            except TypeError:
                return None
            net = (net, "centred", prop)
        return (net, self.X.tobytes(), self.X.shape, self.couplings, self.orders,
                self.data_orders, self.propagator, self.max_cutoff)

    @functools.cached_property
    def _design_fn(self):
        # Theories that agree in everything the design depends on share one compiled
        # function (the ELPD's models, calibration's orders, a second-order estimand's
        # leading λ̄): compiling the vertex integrals is the costly part.
        key = None if self._identity is None else ("design", *self._identity)
        return _cached(key, self._compile_design)

    def _compile_design(self):
        # One compiled column per coupling, shared by every theory that needs it: the
        # nested bases an ELPD table ranks (λ; g3 + λ; g3 + λ + κ; ...) hold the same
        # columns, and each column's vertex integrals are the costly part (a coupling with
        # k legs owns the integrals of m legs and (k - m)/2 loops, so no integral is
        # shared between columns). The basis's own part, the projection B, is small.
        columns = [self._column_fn(c) for c in self.couplings]
        fitted = jnp.asarray(self.fitted)
        lam = self.scale_columns

        @jax.jit
        def project(D, dD):
            return jax.jvp(lambda d: estimand_projection(d, fitted, lam, xp=jnp), (D,), (dD,))

        def with_derivative(t):
            parts = [col(t) for col in columns]
            D = jnp.stack([p[0] for p in parts], axis=1)  # (T, C)
            dD = jnp.stack([p[1] for p in parts], axis=1)
            B, dB = project(D, dD)
            return D, B, dD, dB

        return with_derivative

    def _column_fn(self, coupling: str):
        """Compiled ``log Λ -> (D_c, dD_c/dlog Λ)`` of one coupling's design column."""
        ident = self._identity
        key = None if ident is None else (
            "design_column", ident[0], *ident[1:3], *ident[5:8], coupling)

        def make():
            design = design_function(self.propagator_net, self.X, self.data_orders,
                                     (coupling,), self.propagator, self.max_cutoff,
                                     centred=self.centred)

            def column(t):
                return jax.jvp(lambda u: design(jnp.exp(u))[:, 0], (t,), (jnp.ones_like(t),))

            return jax.jit(column)

        return _cached(key, make)

    def at(self, cutoff) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        r"""``(D, B, dD, dB)`` at one cutoff: the design (T, C), the estimand's projection
        (C, T) and their derivatives in :math:`\log\Lambda`."""
        cutoff = _checks.finite_float("cutoff", cutoff, minimum=0.0)
        out = self._design_fn(jnp.log(jnp.asarray(cutoff, dtype=jnp.float64)))
        return tuple(np.asarray(a, dtype=np.float64) for a in out)

    def designs(self, cutoffs) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The arrays of :meth:`at` stacked over ``cutoffs``: (L, T, C), (L, C, T), ..."""
        parts = [self.at(c) for c in cutoffs]
        return tuple(np.stack(p) for p in zip(*parts, strict=True))

    def second_designs(self, cutoffs, *, slope: bool = False) -> np.ndarray:
        r"""Second-order design of the data orders, (L, T, C, C):
        :math:`D_{2,t\lambda\lambda} = \tfrac12\partial_\lambda^2 G_t` (rule 4.5: the λ²
        bubbles and exchange of :func:`nngp_ppl.theory.diagrams.second_order_design`); with
        ``slope``, its derivative :math:`\partial D_2/\partial\log\Lambda`. Every other
        entry is 0.

        Only λ² enters: it is O(1/N²) like κ, while λκ (1/N³) and κ² (1/N⁴) are of the
        order of the three-vertex terms (λ³, λ²κ) that are not computed, so keeping them
        would not be a consistent truncation. They are not small on the lattice either:
        for the Erf-net at N = 5 and Λ = 100, κ² D2_κκ at the first-order κ is comparable
        to the whole deviation (measured), the cutoff growth of the two κ self-loops."""
        cut = tuple(float(c) for c in np.atleast_1d(cutoffs))
        # The λ² coefficients do not depend on the couplings fitted: key without them.
        key = None if self._identity is None else (
            "lambda2", *self._identity[:3], *self._identity[5:7], cut, bool(slope))
        a = _cached(key, lambda: _lambda_squared_design(self.net, self.X, self.data_orders,
                                                        self.propagator, cut, slope))
        c = self.couplings.index("lambda")
        full = np.zeros(a.shape + (len(self.couplings),) * 2)
        full[..., c, c] = a
        return full

    def estimator(self, cutoffs):
        """The estimand's map at ``cutoffs`` at this theory's perturbative order
        (:mod:`nngp_ppl.inference.estimators`)."""

        return estimand(self, cutoffs)

    def scales(self, design, *, fitted_only: bool = True) -> np.ndarray:
        """s_t = |D_tλ| (|D_t,g3| on odd orders) (..., T); with ``fitted_only``, 1 off the
        fitted observations."""
        rows = np.arange(design.shape[-2])
        s = np.abs(design[..., rows, self.scale_columns])
        return np.where(self.fitted, s, 1.0) if fitted_only else s

    def estimand(self, deviation, cutoffs) -> np.ndarray:
        r""":math:`g^*(\Lambda) = B(\Lambda)\, r` for deviations ``r`` (..., T) -> (..., L, C)."""
        _, B, _, _ = self.designs(cutoffs)
        return np.einsum("lct,...t->...lc", B, np.asarray(deviation, dtype=np.float64))

    def spread(self, deviation, couplings, design) -> np.ndarray:
        r"""Model discrepancy :math:`\tau` (module docstring): rms over the fitted tuples of
        :math:`(r_t - D_t g)/s_t`, in coupling units. ``deviation`` (..., T), ``couplings``
        (..., C), ``design`` (T, C)."""
        s = self.scales(design)
        resid = (deviation - couplings @ design.T) / s
        return np.sqrt(np.mean(resid[..., self.fitted] ** 2, axis=-1))

    def exact_deviation(self, width: int, two_point: str | None = None) -> np.ndarray:
        """r = G - G_free of the exact finite-width correlators (needs the exact oracle);
        G_free is Wick(K) (``two_point="kernel"``, the default) or Wick of the exact
        finite-width 2-pt function (``"measured"``: the estimand of a fit that subtracts the
        measured one, :mod:`.two_point`). A centred theory: r of the exact centred
        moments (:mod:`nngp_ppl.inference.centring`, default ``"measured"``)."""

        if self.centred:  # the exact centred moments (nngp_ppl.inference.centring)
            vec = np.concatenate([exact_correlator_tuples(self.net, self.X, width, m)
                                  for m in _centring_mod.raw_orders(self.data_orders)])
            return np.asarray(_centring_mod.deviation_function(
                self.k, self.data_orders, two_point or "measured", self.kernel)(vec))
        two_point = two_point or "kernel"
        G = np.concatenate([exact_correlator_tuples(self.net, self.X, width, n)
                            for n in self.data_orders])
        if two_point == "measured":
            G2 = expand(exact_correlator_tuples(self.net, self.X, width, 2), self.k, 2)
            return G - free_part(G2, self.data_orders)[0]
        return G - self.gp


#: Centred data orders (:mod:`.centred`): no 1-pt function (taken from the data)
#: and no 2-pt function (the free part's).
CENTRED_FIT_ORDERS = _centring_mod.CENTRED_ORDERS


def _centring(net, centred, kernel_net):
    """Resolve ``centred`` (None: exactly when ``net`` has non-zero means) and the
    propagator object of a centred theory; refuse a non-zero-mean net uncentred."""
    zero = bool(getattr(net, "zero_mean", True))
    if centred is None:
        centred = not zero
    centred = _checks.boolean("centred", centred)
    if not centred:
        if not zero:
            raise NNGPInputError(
                "centred: the zero-mean expansion (centred=False) does not describe an "
                "ensemble with non-zero means (mu_w, mu_b), whose mean is O(1) at every "
                "width; fit it centred (centred=True or None, physics.md §6d)")
        if kernel_net is not None:
            raise NNGPInputError("kernel_net is the propagator of a centred theory; pass "
                                 "centred=True with it")
        return False, None
    if kernel_net is None:
        kernel_net = _centring_mod.propagator_net(net)
    if not callable(getattr(kernel_net, "traced_kernel", None)) \
            or not callable(getattr(kernel_net, "kernel", None)):
        raise NNGPInputError(f"kernel_net must be an ensemble-like object with traced_kernel "
                             f"and kernel (the propagator), got {type(kernel_net).__name__}")
    return True, (None if kernel_net is net else kernel_net)


#: Arrays and compiled functions shared between equal theories (:func:`_cached`).
_SHARED: dict = {}


def _cached(key, make):
    """``make()``, kept under ``key`` (the 64 most recent; ``key=None``: not kept)."""
    if key is None:
        return make()
    if key not in _SHARED:
        if len(_SHARED) >= 64:
            _SHARED.pop(next(iter(_SHARED)))
        _SHARED[key] = make()
    return _SHARED[key]


def _lambda_squared_design(net, X, data_orders, propagator, cutoffs, slope) -> np.ndarray:
    """λ² coefficients of the data orders (L, T), or their cutoff slopes."""

    fn = second_order_design_slope if slope else second_order_design
    parts = [fn(net, X, n, np.asarray(cutoffs), ("lambda",), propagator)[..., 0, 0]
             for n in data_orders]
    out = np.concatenate(parts, axis=1)
    out.setflags(write=False)
    return out


def estimand_projection(design, fitted, lam: int = 0, *, xp=np):
    r"""The estimand's linear map :math:`B` (C, T) from the design (T, C) (module docstring):

    .. math:: B = (A^\top A)^{-1} A^\top S^{-1}, \qquad A = S^{-1} D, \quad
        S = \operatorname{diag}|D_{\cdot\lambda}|,

    restricted to the ``fitted`` observations (zero columns elsewhere). ``lam``: the column
    of λ, or (T,) one column per observation (g3's on odd orders: ``EFTTheory.
    scale_columns``). ``xp`` is the array
    namespace (``numpy``, or ``jax.numpy`` to differentiate it in the cutoff). The one
    least-squares weighting of the package: the posteriors, the β-functions and
    ``eft.fit_couplings(weighting="estimand")`` all use it.
    """
    col = design[:, lam] if np.ndim(lam) == 0 else design[np.arange(design.shape[0]), lam]
    s = xp.where(fitted, xp.abs(col), 1.0)
    A = xp.where(fitted[:, None], design / s[:, None], 0.0)
    return xp.linalg.solve(A.T @ A, A.T) / s[None, :]


def noise_covariance(kind: str, theory: EFTTheory, width: int, n_nets: int, stats=None):
    r"""Covariance of the correlator estimates over ``n_nets`` networks (T, T).

    :math:`\mathrm{Cov}(\hat G_s, \hat G_t) = (G_{s\cup t} - G_s G_t)/n`, with the moments

    * ``"exact"``: the exact finite-width moments (:mod:`nngp_ppl.theory.exact`); orders up
      to twice the highest data order (8 for 4-pt fits, 12 with the 6-pt function);
    * ``"sample"``: the sample moments stored in ``stats`` (sampled with
      ``covariance=True``);
    * ``"gp"``: the Gaussian-process moments (Wick); the infinite-width limit, measured 1.1–3.3
      times too narrow at the paper's finite widths.
    """

    if kind == "sample":
        if stats is None or not getattr(stats, "has_covariance", False):
            raise NNGPInputError("covariance='sample' needs statistics sampled with "
                                 "covariance=True")
        return np.asarray(stats.covariance(width, orders=theory.data_orders), dtype=np.float64)
    if kind == "gp":
        return estimator_covariance(lambda m: gaussian_moments(theory.kernel, m), theory.k,
                                    theory.data_orders, n_nets)
    if kind != "exact":
        raise NNGPInputError(f"covariance must be one of {NOISE_MODELS} or 'auto', got {kind!r}")

    return estimator_covariance(lambda m: exact_correlator_tuples(theory.net, theory.X,
                                                                  width, m),
                                theory.k, theory.data_orders, n_nets)


def exact_noise_available(net, data_orders) -> bool:
    """Whether the exact oracle reaches the moments the noise model needs (2 × max order)."""

    return exact.max_exact_order(net) >= 2 * max(data_orders)


def choose_noise(kind: str, net, data_orders, stats=None, widths=None, orders=None) -> str:
    """Resolve ``"auto"`` to the noise model that is calibrated here, and check ``kind``.

    * where the exact moments exist and the run holds its sampled covariance, the two are
      compared on the fitted ``orders`` (default all) at ``widths`` (default all): if the
      median ratio of sampled to exact variances is below :data:`TAIL_MASS_RATIO`, the run
      has missed tail mass the exact variance contains — heavy tails (physics.md §4), where
      the exact variance describes draws too rare to occur in one run (measured on Gauss-net
      σ = 1, N = 100, 10⁵ nets: 90% intervals 7–14 times the seed-to-seed spread, coverage
      0.98–1.00). Then ``"sample"``, with a Student-t likelihood (:func:`likelihood_df`).
    * otherwise ``"exact"`` where the oracle reaches twice the highest order;
    * otherwise ``"sample"`` if the covariance was sampled (Student-t where
      :func:`nngp_ppl.sampling.stats.check_tails` flags the fitted orders);
    * otherwise ``"gp"``, with a warning (too narrow at finite width).
    """
    if kind != "auto":
        if kind not in NOISE_MODELS:
            raise NNGPInputError(
                f"covariance must be 'auto' or one of {NOISE_MODELS}, got {kind!r}"
            )
        return kind
    has_cov = stats is not None and getattr(stats, "has_covariance", False)
    exact = exact_noise_available(net, data_orders)
    if exact and stats is not None and missed_tail_mass(stats, data_orders, widths, orders):
        if has_cov:
            return "sample"
        warnings.warn(
            "this run missed the tail mass of heavy-tailed products (sampled variances far "
            "below the exact ones) but holds no sampled covariance: the exact noise model "
            "is used and its intervals are conservative; sample with covariance=True",
            RuntimeWarning,
            stacklevel=3,
        )
    if exact:
        return "exact"
    if has_cov:
        return "sample"
    warnings.warn(
        "no exact finite-width moments for this ensemble and no sampled covariance: the noise "
        "model falls back to Gaussian-process moments, which understate the error at finite "
        "width; sample with covariance=True",
        RuntimeWarning,
        stacklevel=3,
    )
    return "gp"


#: Below this median ratio of sampled to exact variances a run is taken to have missed the
#: tail mass of heavy-tailed products (:func:`choose_noise`). Light-tailed runs scatter
#: around 1 (Erf, ReLU at 10⁵ nets: 0.9–1.1); Gauss-net σ = 1 sits far below.
TAIL_MASS_RATIO = 0.5


def missed_tail_mass(stats, data_orders, widths=None, orders=None) -> bool:
    """Whether the sampled variances of the fitted correlators fall short of the exact ones
    by more than :data:`TAIL_MASS_RATIO` (median over tuples) at any of ``widths``."""

    if not hasattr(stats, "stderr_tuples"):
        return False
    orders = tuple(data_orders if orders is None else orders)
    for w in (stats.widths if widths is None else widths):
        # Squared standard errors: the sampled variances of the means, with or without the
        # stored covariance.
        sampled = np.concatenate([np.asarray(stats.stderr_tuples(n, w)) ** 2
                                  for n in orders])
        exact = []
        for n in orders:
            g = exact_correlator_tuples(stats.net, stats.X, w, n)
            g2 = exact_correlator_tuples(stats.net, stats.X, w, 2 * n)
            exact.append((g2[square_index(stats.k, n)] - g**2) / stats.n_nets(w))
        ratio = np.median(sampled / np.concatenate(exact))
        if ratio < TAIL_MASS_RATIO:
            return True
    return False


#: Degrees of freedom of the Student-t likelihood where the tails are heavy (Cauchy),
#: chosen by measurement (:func:`likelihood_df`).
HEAVY_TAIL_DF = 1.0


def likelihood_df(stats, width: int, orders, noise: str) -> tuple[float, float]:
    r"""Degrees of freedom of the likelihood and the worst effective number of networks.

    With the sample noise model the interval of a coupling is a studentised mean. Where a
    few networks carry the sample variance — fewer than
    :data:`~nngp_ppl.sampling.stats.MIN_EFFECTIVE_NETWORKS` effective networks in a fitted tuple,
    or a
    run that missed the exact variance's tail mass (:func:`missed_tail_mass`) — the
    studentised mean of heavy-tailed products is skewed and its normal quantiles undercover,
    so the likelihood is multivariate Student-t with :data:`HEAVY_TAIL_DF` = 1 degree of
    freedom. Chosen by measurement on Gauss-net σ = 1, N = 100, paper inputs, 100 seeds ×
    10⁵ networks (``benchmarks/calibration.py``): 90% coverage 0.77 with
    :math:`\nu = n_{\mathrm{eff}} - 1` (the t quantiles of a mean of n_eff comparable
    draws), 0.93 with ν = 1. Otherwise, and with the exact or GP noise models always, the
    likelihood is normal (``NORMAL_DF``). Returns ``(df, n_eff)`` (n_eff NaN without tail
    sums).
    """

    neff = np.nan
    if getattr(stats, "has_tails", False):
        values = np.concatenate([stats.effective_networks(n, width) for n in orders])
        if np.any(np.isfinite(values)):
            neff = float(np.nanmin(values))
    if noise != "sample":
        return NORMAL_DF, neff
    heavy = (np.isfinite(neff) and neff < MIN_EFFECTIVE_NETWORKS) or (
        exact_noise_available(stats.net, orders)
        and missed_tail_mass(stats, orders, [width], orders))
    return (HEAVY_TAIL_DF if heavy else NORMAL_DF), neff


#: Degrees of freedom that stand for the normal likelihood (the Student-t limit).
NORMAL_DF = 1e12


def gaussian_moments(K, n: int) -> np.ndarray:
    r"""Moments :math:`E[\prod_{a\in t} f(x_a)]` of :math:`f \sim GP(0, K)` on the distinct
    n-tuples, for even n up to 12 (Isserlis).

    Up to n = 10 from :func:`nngp_ppl.theory.wick.gp_correlator_tuples`; n = 12 by the
    recursion :math:`E[f_1 \cdots f_{12}] = \sum_{j=2}^{12} K_{1j}\,E[\prod_{a\ne 1,j} f_a]`.
    """
    K = np.asarray(K, dtype=np.float64)
    if n <= 10:
        return gp_correlator_tuples(K, n)
    if n != 12:
        raise NNGPInputError(f"n must be an even order <= 12, got {n}")
    k = K.shape[0]
    rows = distinct_tuples(k, 12)
    lower = gp_correlator_tuples(K, 10)
    weights = k ** np.arange(9, -1, -1, dtype=np.int64)
    table = distinct_tuples(k, 10) @ weights
    total = np.zeros(len(rows))
    for j in range(1, 12):
        rest = np.delete(rows, [0, j], axis=1)  # still sorted
        total += K[rows[:, 0], rows[:, j]] * lower[np.searchsorted(table, rest @ weights)]
    return total


def estimator_covariance(moments, k: int, orders, n_nets: int) -> np.ndarray:
    r"""Covariance of the sample means of the products over ``n_nets`` independent draws:

    .. math:: \mathrm{Cov}(\hat G_s, \hat G_t) = \frac{G_{s\cup t} - G_s G_t}{n_{nets}},

    rows and columns the distinct tuples of ``orders`` concatenated. ``moments(m)`` returns
    the m-point moments on the distinct m-tuples (orders and their pairwise sums are used):
    e.g. :func:`gaussian_moments` of the kernel (the noise-free GP covariance) or the exact
    finite-width correlators of :mod:`nngp_ppl.theory.exact`.
    """
    n_nets = _checks.positive_int("n_nets", n_nets)
    cache = {}

    def moment(m):
        if m not in cache:
            cache[m] = np.asarray(moments(m), dtype=np.float64)
        return cache[m]

    blocks = [
        [
            moment(a + b)[union_index(k, a, b)] - np.outer(moment(a), moment(b))
            for b in orders
        ]
        for a in orders
    ]
    return np.block(blocks) / n_nets


def centred_raw_covariance(kind: str, net, X, width: int, data_orders, n_nets: int,
                           stats=None) -> np.ndarray:
    """Estimator covariance of the raw moments of orders 1..max(``data_orders``) over
    ``n_nets`` networks (the centred theory's data, :mod:`nngp_ppl.inference.centring`):
    ``"exact"`` finite-width moments (up to twice the highest order) or the ``"sample"``d
    covariance of ``stats``."""
    orders = _centring_mod.raw_orders(data_orders)
    if kind == "sample":
        if stats is None or not getattr(stats, "has_covariance", False):
            raise NNGPInputError("covariance='sample' needs statistics sampled with "
                                 "covariance=True")
        return np.asarray(stats.covariance(width, orders=orders), dtype=np.float64)
    if kind != "exact":
        raise NNGPInputError(f"covariance of a centred fit must be 'exact' or 'sample', "
                             f"got {kind!r}")
    return estimator_covariance(lambda m: exact_correlator_tuples(net, X, width, m), len(X),
                                orders, n_nets)


def centred_raw_vector(stats, width: int, data_orders) -> np.ndarray:
    """Sampled raw moments of orders 1..max(``data_orders``) at ``width``, concatenated
    (refused, naming the orders to sample, when the run lacks one)."""
    orders = _centring_mod.raw_orders(data_orders)
    missing = [m for m in orders if m not in tuple(stats.orders)]
    if missing:
        raise NNGPInputError(
            f"stats: the centred moments of orders {tuple(data_orders)} need the raw moments "
            f"of every order {orders} (the mean included), but orders {missing} were not "
            f"sampled (sample with orders={orders})")
    return np.concatenate([np.asarray(stats.correlator_tuples(m, width), np.float64)
                           for m in orders])


def centred_observation(stats, width: int, data_orders, noise: str, *, net=None, X=None,
                        two_point: str = "measured", K=None):
    r"""The sampled centred deviations :math:`\hat r` and their covariance
    :math:`J\Sigma_G J^\top` (delta method, :mod:`nngp_ppl.inference.centring`) at
    ``width``: ``(r, cov)``. The exact noise model linearises at the exact moments of
    ``net`` (default: the run's), the sampled one at the estimates."""
    net = stats.net if net is None else net
    X = stats.X if X is None else X
    vec = centred_raw_vector(stats, width, data_orders)
    r, jac = _centring_mod.deviation_and_jacobian(vec, len(X), data_orders, two_point, K)
    if noise == "exact":
        exact_vec = np.concatenate([exact_correlator_tuples(net, X, width, m)
                                    for m in _centring_mod.raw_orders(data_orders)])
        _, jac = _centring_mod.deviation_and_jacobian(exact_vec, len(X), data_orders,
                                                      two_point, K)
    cov = centred_raw_covariance(noise, net, X, width, data_orders,
                                 int(stats.n_nets(width)), stats)
    out = jac @ cov @ jac.T
    return r, 0.5 * (out + out.T)
