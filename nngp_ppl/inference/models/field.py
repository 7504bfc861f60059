r"""The effective action on a discretised input lattice, sampled non-perturbatively.

physics.md §5: :math:`P[f] \propto e^{-S[f]}`,

.. math:: S[f] = \tfrac12 \iint f\,\Xi\, f + \int_{[-\Lambda,\Lambda]^{d_{in}}} d^{d_{in}}y
    \,\big(\lambda f(y)^4 + \kappa f(y)^6\big).

Discretised: the field lives on the k inputs :math:`x_a` and the P sites :math:`y_j` of a
:class:`~nngp_ppl.theory.lattice.Lattice` with weights :math:`w_j`, and the interaction
integral becomes :math:`\sum_j w_j(\lambda f_j^4 + \kappa f_j^6)`. The free part restricted
to these points is exactly the GP marginal :math:`\tfrac12 f^\top K^{-1} f` with
:math:`K` the kernel on all k + P points, written non-centred: :math:`f = L z`,
:math:`z \sim \mathcal N(0, I)`, :math:`K = L L^\top`, and the interaction enters through
``numpyro.factor``. At :math:`\lambda = \kappa = 0` the model *is* the GP, so its correlators
are Wick's; to first order in the couplings its correlators are the first-order Feynman
diagrams evaluated with the same lattice sum in place of the vertex integral (with the
two-point corrections of rule 4.5 included: a lattice model has no counterterms).

With ``propagator="bias_subtracted"`` the self-interacting field is
:math:`\tilde f \sim GP(K - \sigma_b^2)` and the output adds the free Gaussian bias,
:math:`f = \tilde f + b_1`, :math:`b_1 \sim \mathcal N(0, \sigma_b^2)` (the paper's revised
EFT, physics.md §6).

The action must be bounded below for the measure to exist: with :math:`\kappa > 0`, or
:math:`\kappa = 0` and :math:`\lambda \ge 0`. Fitted quartic couplings are negative
(physics.md §5), so a non-perturbative check of them needs :math:`\kappa > 0`; anything
else is refused.

Divergences. The sextic wall makes the potential's curvature grow as :math:`f^4`: a NUTS
step size tuned in the bulk is too large where a trajectory climbs the wall, and the
trajectory is cut short (a "divergence"). The field has no funnel or other region the
sampler cannot reach, and the measurements agree with this reading. On three hard
settings (Erf-net, Λ = 2, 8 sites, (λ, κ) = (-0.01, 0.001) and (0, 1); Gauss-net, Λ = 5,
16 sites, (-0.01, 0.01); two seeds each, 4 × 2000 draws), at the former target acceptance 0.9 the
runs had 9-217 divergences; sampling in the kernel's eigenbasis, a dense mass matrix, or
both, still left 0-22; a target acceptance of 0.99 (about twice the leapfrog steps) left
none in any of them. So :data:`TARGET_ACCEPT` is 0.99, and a divergence that remains means
the wall is steeper still: raise ``target_accept`` towards 1.

Perturbativity. First-order perturbation theory expands :math:`e^{-V}` to first order in
the lattice interaction :math:`V = \sum_j w_j(\lambda f_j^4 + \kappa f_j^6)`; the next
term is smaller by about the spread of V over the free theory's draws,
:math:`\sigma_V = \mathrm{sd}_{GP}(V)` (:func:`interaction_spread`). At
:math:`\sigma_V = 0.07` the sampled theory matches first order within its Monte Carlo
errors; at :math:`\sigma_V = 0.30` it departs from it by more than five of them
(``tests/test_models.py``). :func:`field_correlators` records :math:`\sigma_V` and marks
first order unreliable above :data:`PERTURBATIVE_SPREAD` = 0.2.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import arviz_stats
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import xarray as xr
from numpyro.infer.hmc import hmc
from numpyro.infer.util import potential_energy

from ..._checks import NNGPInputError, finite_float, inputs, positive_int
from ..._checks import orders as _orders
from ..._checks import seed as _seed
from ..._progress import run_nuts
from ...theory import operators as _operators
from ...theory.diagrams import first_order_design
from ...theory.lattice import Lattice
from ...theory.wick import gp_correlator_tuples
from ...tuples import distinct_tuples, pairings
from ...vocabulary import check_propagator, propagator_shift
from .couplings import stable_cholesky

__all__ = [
    "TARGET_ACCEPT",
    "PERTURBATIVE_SPREAD",
    "MAX_INTERACTION_SPREAD",
    "MAX_FIELD_POINTS",
    "FIELD_OPERATORS",
    "bounded_below",
    "interaction_density",
    "check_bounded",
    "check_field_size",
    "interaction_spread",
    "check_strength",
    "FieldArrays",
    "FieldLattice",
    "field_model",
    "sample_field",
    "field_correlators",
]

#: NUTS target acceptance of the field model (module docstring: divergences).
TARGET_ACCEPT = 0.99

#: Above this spread of the interaction over the free theory, first order is unreliable.
PERTURBATIVE_SPREAD = 0.2

#: Largest interaction spread σ_V (:func:`interaction_spread`) NUTS is asked to sample.
#: The field at the sites shrinks like σ_V^(-1/4) while the directions the interaction
#: leaves alone keep the free theory's scale, so the posterior's condition number grows
#: like σ_V^(1/2): beyond 1e12 (1e6, about a thousand leapfrog steps across it at NUTS's
#: deepest tree of 1023) the chains cannot mix. Measured on a 4-site Gauss-net lattice
#: (σ_W = 1, σ_b = 0.5, Λ = 1, 4 chains x 300 draws, κ = 0): max R-hat 1.003-1.011 for
#: σ_V = 25 .. 2.5e9, 1.034 at 2.5e13 and 3.4 at 2.5e21 (λ = 1e20).
MAX_INTERACTION_SPREAD = 1e12

#: Most field points (inputs + lattice sites). The model holds a dense (k+P) x (k+P)
#: float64 kernel and its factor, and every leapfrog step multiplies by the factor:
#: 4096 points are 128 MiB per matrix and already hours of NUTS on a CPU; far more made XLA
#: abort the process instead of raising.
MAX_FIELD_POINTS = 4096

#: The operators of the sampled action, in the order of :attr:`FieldArrays.couplings`.
FIELD_OPERATORS = _operators.operators(("lambda", "kappa"))
_LEGS = tuple(op.legs for op in FIELD_OPERATORS)


def bounded_below(couplings) -> bool:
    r"""Whether :math:`\sum_c g_c f^{k_c}` is bounded below: the operator of most legs
    with a non-zero coupling has an even number of them and a positive coupling (or every
    coupling is zero). ``couplings`` maps coupling names to values."""
    live = [(_operators.operator(n).legs, float(g)) for n, g in couplings.items() if g != 0]
    if not live:
        return True
    k, g = max(live)
    return k % 2 == 0 and g > 0


def interaction_density(couplings, legs, sites):
    r""":math:`\sum_c g_c\, \mathcal O_c(f_j)` per site: each operator's lattice density
    (:meth:`nngp_ppl.theory.operators.Operator.density`) times its coupling."""
    return sum(couplings[c] * _operators.local(k).density(sites)
               for c, k in enumerate(legs))


def check_bounded(lam, kappa) -> tuple[float, float]:
    """Validated couplings of an action that is bounded below, else a clear error.

    Bounded iff κ > 0, or κ = 0 and λ >= 0 (physics.md §5).
    """
    lam = finite_float("lambda", lam)
    kappa = finite_float("kappa", kappa)
    if not bounded_below({"lambda": lam, "kappa": kappa}):
        raise NNGPInputError(
            f"the action with lambda={lam:g}, kappa={kappa:g} is unbounded below "
            "(exp(-S) cannot be normalised): lambda < 0 needs kappa > 0, and kappa must not be "
            "negative. Such an action exists only perturbatively; use the first-order "
            "diagrams (nngp_ppl.theory.diagrams) for it, or add a positive kappa"
        )
    return lam, kappa


def check_field_size(n_sites: int, n_inputs: int, name: str = "lattice") -> None:
    """Refuse a field of more than :data:`MAX_FIELD_POINTS` points, naming ``name``."""
    total = int(n_sites) + int(n_inputs)
    if total > MAX_FIELD_POINTS:
        raise NNGPInputError(
            f"{name}: the field model holds dense ({total:,} x {total:,}) float64 matrices "
            f"({8 * total**2 / 2**30:.3g} GiB each) for {n_sites:,} sites and {n_inputs} "
            f"inputs; at most {MAX_FIELD_POINTS} points in all are allowed (for a uniform "
            f"lattice: at most {MAX_FIELD_POINTS - n_inputs} sites in d_in = 1, "
            f"{int((MAX_FIELD_POINTS - n_inputs) ** 0.5)} per axis in d_in = 2, "
            f"{int(round((MAX_FIELD_POINTS - n_inputs) ** (1 / 3), 6))} per axis in d_in = 3)"
        )


def interaction_spread(field, lam, kappa, *, n_draws: int = 1 << 14, seed: int = 0) -> float:
    r""":math:`\sigma_V`: the standard deviation of the lattice interaction
    :math:`V = \sum_j w_j(\lambda f_j^4 + \kappa f_j^6)` over draws of the free theory.

    The size of the next term of the perturbative expansion relative to the first-order
    one (module docstring). Estimated from ``n_draws`` exact GP draws (relative error about
    :math:`1/\sqrt{2 n}` for a normal V, under 1% by default; seeded, so reproducible).
    """
    g = np.asarray(check_bounded(lam, kappa))
    z = np.random.default_rng(seed).standard_normal((n_draws, field.chol.shape[0]))
    sites = z @ field.chol[field.n_inputs:].T
    V = interaction_density(g, _LEGS, sites) @ np.asarray(field.lattice.weights)
    return float(np.std(V))


def check_strength(field, lam, kappa, *, n_draws: int = 4096, seed: int = 0) -> None:
    """Refuse couplings NUTS cannot sample on this lattice: a term whose interaction spread
    over the free theory exceeds :data:`MAX_INTERACTION_SPREAD` (or overflows), naming the
    coupling and about the largest size it may have here. σ_V is linear in each coupling,
    so it is estimated once per term from ``n_draws`` free draws (the sd of heavy-tailed
    f⁴ sums, within some 10-20%: enough for a bound of orders of magnitude)."""
    lam, kappa = check_bounded(lam, kappa)
    z = np.random.default_rng(seed).standard_normal((n_draws, field.chol.shape[0]))
    f2 = (z @ field.chol[field.n_inputs:].T) ** 2
    w = np.asarray(field.lattice.weights)
    for name, g, term in (("lambda", lam, (f2 * f2) @ w), ("kappa", kappa, (f2**3) @ w)):
        unit = float(np.std(term))
        with np.errstate(over="ignore"):
            spread = abs(g) * unit
        if g != 0 and not spread <= MAX_INTERACTION_SPREAD:
            raise NNGPInputError(
                f"{name} = {g:g} is too strong to sample on this lattice: its interaction "
                f"varies by {spread:.3g} over the free theory's draws, and NUTS mixes only up "
                f"to {MAX_INTERACTION_SPREAD:g} (the field's scales then differ by more than a "
                f"thousandfold); |{name}| must be at most about "
                f"{MAX_INTERACTION_SPREAD / unit:.2g} here")


class FieldArrays(NamedTuple):
    """Arrays the field model reads (a pytree: couplings change without recompiling)."""

    chol: jnp.ndarray  # (k + P, k + P) Cholesky factor of the free kernel on inputs + sites
    weights: jnp.ndarray  # (P,) lattice weights w_j
    bias_sd: jnp.ndarray  # () sd of the free output bias (0 for the full propagator)
    couplings: jnp.ndarray  # (len(FIELD_OPERATORS),): λ, κ


@dataclass(frozen=True, eq=False)
class FieldLattice:
    """The discretised free theory: inputs, lattice, and the kernel's Cholesky factor.

    Build with :meth:`build`; :meth:`arrays` adds couplings; :attr:`model` is
    :func:`field_model` with the number of inputs bound.
    """

    net: object
    X: np.ndarray  # (k, d_in)
    lattice: object  # nngp_ppl.theory.lattice.Lattice
    propagator: str
    chol: np.ndarray
    n_floored: int  # kernel eigenvalues (correlation scale) raised to 1e-12 of the largest

    @classmethod
    def build(cls, net, X, lattice, propagator: str = "full") -> FieldLattice:
        """Factorise the free kernel (``K`` or ``K - σ_b²``) on the inputs and lattice sites."""

        X = inputs("X", X, net.d_in)
        if not isinstance(lattice, Lattice):
            raise NNGPInputError(
                f"lattice must be a Lattice (nngp_ppl.theory.lattice.box_lattice), got "
                f"{type(lattice).__name__}"
            )
        if lattice.d_in != net.d_in:
            raise NNGPInputError(f"lattice has d_in={lattice.d_in}, the net d_in={net.d_in}")
        if np.any(lattice.weights < 0):
            raise NNGPInputError("lattice weights must be non-negative for a field model")
        check_propagator(propagator)
        check_field_size(len(lattice), len(X))
        extent = float(np.max(np.abs(X)))
        if lattice.cutoff is not None and extent > lattice.cutoff * (1 + 1e-12):
            # The interaction acts only inside the box: inputs outside it would see a
            # different theory than the one whose cutoff the user named.
            raise NNGPInputError(
                f"cutoff must be at least the inputs' extent max|x_i| = {extent:g} so that the "
                f"box [-Λ, Λ]^d_in contains every input; got {lattice.cutoff:g}"
            )
        pts = np.concatenate([X, lattice.points])
        K = np.asarray(net.kernel(pts), dtype=np.float64)
        K = K - propagator_shift(net, propagator)
        # The kernel is exact, not estimated: floor only what float64 cannot factorise (a
        # smooth kernel on a fine lattice is numerically singular).
        chol, n_floored = stable_cholesky(K, "the kernel on inputs and lattice sites", 1e-12)
        return cls(
            net=net, X=X, lattice=lattice, propagator=propagator, chol=chol, n_floored=n_floored
        )

    @property
    def n_inputs(self) -> int:
        return int(self.X.shape[0])

    def arrays(self, lam, kappa) -> FieldArrays:
        lam, kappa = check_bounded(lam, kappa)
        bias = _bias_sd(self.net) if self.propagator == "bias_subtracted" else 0.0
        return FieldArrays(
            chol=jnp.asarray(self.chol),
            weights=jnp.asarray(self.lattice.weights),
            bias_sd=jnp.asarray(float(bias)),
            couplings=jnp.asarray([lam, kappa]),
        )

    @property
    def model(self):
        return functools.partial(
            field_model,
            n_inputs=self.n_inputs,
            free_bias=self.propagator == "bias_subtracted" and _bias_sd(self.net) > 0,
        )


def _bias_sd(net) -> float:
    """Standard deviation of the free Gaussian bias: sqrt of the constant part of K that
    the bias-subtracted propagator removes (the ensemble's ``kernel_constant``)."""
    return math.sqrt(float(net.kernel_constant()))


def field_model(arrays: FieldArrays, n_inputs: int, free_bias: bool = False):
    r"""numpyro model of the lattice field theory (module docstring).

    Sites: ``z`` (standard normal, k + P), ``b1`` (the free output bias in units of σ_b,
    only with ``free_bias``: the bias-subtracted propagator), the factor ``interaction``
    :math:`= -\sum_j w_j \sum_c g_c \mathcal O_c(f_j)` over :data:`FIELD_OPERATORS`
    (:math:`\lambda f_j^4 + \kappa f_j^6`), and the deterministic ``f``, the field at the
    k inputs.
    """
    n = arrays.chol.shape[0]
    z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([n]).to_event(1))
    field = arrays.chol @ z
    sites = field[n_inputs:]
    numpyro.factor(
        "interaction",
        -jnp.sum(arrays.weights * interaction_density(arrays.couplings, _LEGS, sites)),
    )
    out = field[:n_inputs]
    if free_bias:
        b1 = numpyro.sample("b1", dist.Normal(0.0, 1.0))
        out = out + arrays.bias_sd * b1
    numpyro.deterministic("f", out)


@functools.lru_cache(maxsize=8)
def _runner(n_inputs, free_bias, num_warmup):
    """Compiled NUTS in pieces: ``init(keys (chains,), x0 (chains, d), arrays, target
    acceptance) -> state`` and ``advance(state, arrays, length) -> (state, (latent
    draws, diverging, steps))``.

    numpyro's functional NUTS on the potential energy of :func:`field_model`, chains
    vectorised with ``vmap``, warmup and sampling as ``lax.scan``: compiled once per shape,
    so a scan over couplings (model arguments) does not recompile, unlike
    ``MCMC(chain_method="vectorized")``, which traces again at every run. The scan runs in
    pieces only to move a progress bar (:func:`nngp_ppl._progress.run_nuts`); the state
    carries the key and the adaptation, so the pieces make the same chain.
    """

    model = functools.partial(field_model, n_inputs=n_inputs, free_bias=free_bias)

    def potential_fn_gen(arrays):
        n = arrays.chol.shape[0]

        def potential(x):
            params = {"z": x[:n]}
            if free_bias:
                params["b1"] = x[n]
            return potential_energy(model, (arrays,), {}, params)

        return potential

    init_kernel, sample_kernel = hmc(potential_fn_gen=potential_fn_gen, algo="NUTS")

    def init_one(key, x0, arrays, target_accept):
        return init_kernel(x0, num_warmup, target_accept_prob=target_accept,
                           model_args=(arrays,), rng_key=key)

    def advance_one(state, arrays, target_accept, length):
        # sample_kernel adapts the step size with the target that init_kernel stored; the
        # target is traced (changing it does not recompile), so init_kernel runs again in
        # this trace to store this trace's target. Its own result is unused (dead code).
        init_one(state.rng_key, state.z, arrays, target_accept)

        def step(st, _):
            st = sample_kernel(st, model_args=(arrays,))
            return st, (st.z, st.diverging, st.num_steps)

        return jax.lax.scan(step, state, None, length=length)

    # The target acceptance is traced, like the couplings: changing it does not recompile.
    init = jax.jit(jax.vmap(init_one, (0, 0, None, None)))

    @functools.partial(jax.jit, static_argnums=(3,))
    def advance(state, arrays, target_accept, length):
        one = functools.partial(advance_one, length=length)
        return jax.vmap(one, (0, None, None))(state, arrays, target_accept)

    return init, advance


def _nuts_settings(num_chains, num_samples, num_warmup, seed, target_accept):
    """Validated NUTS settings; R-hat needs two chains and the Monte Carlo errors (split
    chains, arviz-stats) at least four draws per chain."""

    num_chains = positive_int("num_chains", num_chains)
    if num_chains < 2:
        raise NNGPInputError("num_chains must be >= 2 so that R-hat can be computed, got 1")
    num_samples = positive_int("num_samples", num_samples)
    if num_samples < 4:
        raise NNGPInputError(
            f"num_samples must be >= 4 draws per chain (Monte Carlo errors split each chain), "
            f"got {num_samples}")
    num_warmup = positive_int("num_warmup", num_warmup)
    target_accept = finite_float("target_accept", target_accept)
    if not 0 < target_accept < 1:
        raise NNGPInputError(f"target_accept must be in (0, 1), got {target_accept:g}")
    return num_chains, num_samples, num_warmup, _seed("seed", seed), target_accept


def sample_field(
    field: FieldLattice,
    lam: float,
    kappa: float,
    *,
    num_chains: int = 4,
    num_samples: int = 2000,
    num_warmup: int = 1000,
    seed: int = 0,
    target_accept: float = TARGET_ACCEPT,
    progress: bool = False,
):
    """NUTS draws of the field at the inputs: an array (chain, draw, k), plus NUTS stats.

    Returns ``(f, extra)`` with ``extra`` holding ``diverging`` and ``n_steps`` per draw.
    Chains are vectorised and start near the free theory's typical set (z ~ N(0, 1/4)).
    ``target_accept``: NUTS's target acceptance (module docstring: divergences).
    ``progress``: a bar of NUTS steps on a terminal (:mod:`nngp_ppl._progress`).
    """

    num_chains, num_samples, num_warmup, seed, target_accept = _nuts_settings(
        num_chains, num_samples, num_warmup, seed, target_accept)
    check_strength(field, lam, kappa)
    arrays = field.arrays(lam, kappa)
    free_bias = field.propagator == "bias_subtracted" and _bias_sd(field.net) > 0
    init, advance = _runner(field.n_inputs, free_bias, num_warmup)
    key_init, key_run = jax.random.split(jax.random.PRNGKey(seed))
    dim = field.chol.shape[0] + int(free_bias)
    x0 = 0.5 * jax.random.normal(key_init, (num_chains, dim))
    target = jnp.asarray(target_accept)
    state = init(jax.random.split(key_run, num_chains), x0, arrays, target)
    x, diverging, n_steps = run_nuts(
        state, lambda st, n: advance(st, arrays, target, n), num_warmup,
        num_samples, progress, desc="NUTS lattice", draw_axis=1)
    n = field.chol.shape[0]
    f = np.einsum("ij,cdj->cdi", field.chol[: field.n_inputs], x[..., :n])
    if free_bias:
        f = f + _bias_sd(field.net) * x[..., n:]
    return f, {"diverging": np.asarray(diverging), "n_steps": np.asarray(n_steps)}


def field_correlators(
    field: FieldLattice,
    lam: float,
    kappa: float,
    orders=(2, 4),
    *,
    num_chains: int = 4,
    num_samples: int = 2000,
    num_warmup: int = 1000,
    seed: int = 0,
    target_accept: float = TARGET_ACCEPT,
    progress: bool = False,
):
    r"""Non-perturbative correlators of the lattice theory, with Monte Carlo errors.

    Returns an xarray Dataset with, for each order n, ``G{n}`` (the mean over the NUTS draws
    of :math:`\prod_{a\in t} f(x_a)` on the distinct tuples), ``G{n}_mcse`` (its Monte Carlo
    standard error, from the effective sample size of each product, arviz-stats) and
    ``G{n}_gp`` (Wick with the free kernel); with order 4 also the connected function
    ``connected4`` :math:`= G_4 - \sum_{3\,\text{pairings}} G_2 G_2` with the model's own
    :math:`G_2`, and its error ``connected4_mcse`` by the delta method (the MC error of the
    per-draw linearisation :math:`\prod f - \sum (G_{ab} f_c f_d + G_{cd} f_a f_b)`).
    With order 4, the first-order perturbative predictions on the same lattice
    (:func:`nngp_ppl.theory.diagrams.first_order_design` with ``lattice``):
    ``G4_first_order`` (Wick + first-order diagrams with the two-point corrections of rule
    4.5 kept: the lattice model has no counterterms) and ``connected4_first_order`` (the
    connected diagrams alone). Attributes record couplings, lattice, propagator, the
    divergences and the worst R-hat and bulk ESS of the products, the NUTS target
    acceptance, and with order 4 ``interaction_sd`` (:func:`interaction_spread`) and
    ``first_order_reliable`` (1 when it is at most :data:`PERTURBATIVE_SPREAD`, else 0).
    ``progress``: a bar of NUTS steps on a terminal.
    """

    orders = _orders("orders", orders)
    lam, kappa = check_bounded(lam, kappa)
    num_chains, num_samples, num_warmup, seed, target_accept = _nuts_settings(
        num_chains, num_samples, num_warmup, seed, target_accept)
    f, extra = sample_field(
        field, lam, kappa, num_chains=num_chains, num_samples=num_samples,
        num_warmup=num_warmup, seed=seed, target_accept=target_accept, progress=progress,
    )
    data, means, worst_rhat, worst_ess = _moments(field, f, orders)
    extra_attrs = {}
    if 4 in orders:
        data.update(_connected4(f, means, field.n_inputs))
        data.update(_first_order(field, lam, kappa, data["G4_gp"][1]))
        spread = interaction_spread(field, lam, kappa, seed=seed)
        extra_attrs = {"interaction_sd": spread,
                       "first_order_reliable": int(spread <= PERTURBATIVE_SPREAD)}
    return xr.Dataset(
        data,
        attrs={
            "lambda": lam,
            "kappa": kappa,
            "propagator": field.propagator,
            "lattice": repr(field.lattice),
            "lattice_sites": len(field.lattice),
            "kernel_eigenvalues_floored": field.n_floored,
            "num_chains": num_chains,
            "num_samples": num_samples,
            "num_warmup": num_warmup,
            "seed": int(seed),
            "divergences": int(np.sum(extra["diverging"])),
            "max_r_hat": worst_rhat,
            "min_ess_bulk": worst_ess,
            "mean_n_steps": float(np.mean(extra["n_steps"])),
            "target_accept": float(target_accept),
            **extra_attrs,
        },
    )


def _moments(field: FieldLattice, f, orders):
    """Per order n: the mean of the products over the draws, its Monte Carlo error and the
    Wick sum of the free kernel on the distinct tuples; also the worst R-hat and bulk ESS of
    the products. The 2-pt means are kept for the connected 4-pt function."""

    k = field.n_inputs
    K = np.asarray(field.net.kernel(field.X))
    data, means, worst_rhat, worst_ess = {}, {}, 1.0, np.inf
    for n in sorted(set(orders) | ({2} if 4 in orders else set())):
        rows = distinct_tuples(k, n)
        prod = np.prod(f[..., rows], axis=-1)  # (chain, draw, T)
        means[n] = prod.mean(axis=(0, 1))
        if n not in orders:
            continue
        data[f"G{n}"] = ([f"tuple_{n}"], means[n])
        data[f"G{n}_mcse"] = ([f"tuple_{n}"], arviz_stats.mcse(prod))
        data[f"G{n}_gp"] = ([f"tuple_{n}"], gp_correlator_tuples(K, n))
        data[f"tuples_{n}"] = ([f"tuple_{n}", f"position_{n}"], np.asarray(rows))
        worst_rhat = max(worst_rhat, float(np.nanmax(arviz_stats.rhat(prod))))
        worst_ess = min(worst_ess, float(np.nanmin(arviz_stats.ess(prod, method="bulk"))))
    return data, means, worst_rhat, worst_ess


def _connected4(f, means, k: int) -> dict:
    r"""``connected4`` :math:`= G_4 - \sum_{3\,\text{pairings}} G_2 G_2` with the model's own
    :math:`G_2`, and its delta-method Monte Carlo error ``connected4_mcse`` (the error of the
    per-draw linearisation :math:`\prod f - \sum (G_{ab} f_c f_d + G_{cd} f_a f_b)`)."""

    rows = distinct_tuples(k, 4)
    full2 = np.zeros((k, k))
    r2 = distinct_tuples(k, 2)
    full2[r2[:, 0], r2[:, 1]] = means[2]
    full2[r2[:, 1], r2[:, 0]] = means[2]
    prod = np.prod(f[..., rows], axis=-1)
    gauss = np.zeros(len(rows))
    lin = prod.copy()
    for (a, b), (c, d) in pairings(4):
        gab = full2[rows[:, a], rows[:, b]]
        gcd = full2[rows[:, c], rows[:, d]]
        gauss += gab * gcd
        lin -= gab * f[..., rows[:, c]] * f[..., rows[:, d]]
        lin -= gcd * f[..., rows[:, a]] * f[..., rows[:, b]]
    return {"connected4": (["tuple_4"], means[4] - gauss),
            "connected4_mcse": (["tuple_4"], arviz_stats.mcse(lin))}


def _first_order(field: FieldLattice, lam: float, kappa: float, g4_gp) -> dict:
    """First-order perturbation theory on the field's own lattice: ``G4_first_order`` keeps
    the two-point corrections of rule 4.5 (the lattice model has no counterterms),
    ``connected4_first_order`` is the connected diagrams alone."""

    g = np.array([lam, kappa])
    full, conn = (first_order_design(
        field.net, field.X, 4, None, tuple(op.name for op in FIELD_OPERATORS), field.propagator,
        drop_two_point=drop, lattice=field.lattice)[0] for drop in (False, True))
    return {"G4_first_order": (["tuple_4"], g4_gp + full @ g),
            "connected4_first_order": (["tuple_4"], conn @ g)}
