r"""Coupling posteriors: NUTS on the latent correlators, the couplings at every cutoff from them.

For each width N the measured deviations :math:`\hat r = \hat G - G_{GP}` of
:class:`nngp_ppl.sampling.stats.CorrelatorStats` condition
:func:`nngp_ppl.inference.models.coupling_model`; the
posterior of the noise-free deviations :math:`r` is mapped to the declared estimand
:math:`g^*(\Lambda) = B(\Lambda) r` at every cutoff (:mod:`nngp_ppl.inference.problem`). One NUTS
run
per width serves all cutoffs, the β-functions (:func:`~nngp_ppl.beta_function`) and the
comparison of models (GP only, λ, λ + κ), with the correlations between them intact.

The sampler is numpyro's NUTS with the chains vectorised by ``vmap``, warmup and sampling
as ``lax.scan``, compiled once per problem size instead of at every ``MCMC.run``. It runs in
whitened coordinates :math:`r = Lz` (:math:`LL^\top = \Sigma`), where the posterior is close
to a standard normal whatever the conditioning of :math:`\Sigma`, so a diagonal mass matrix
suffices. Every random draw derives from ``seed`` by ``fold_in`` on the width; all widths run
as one batch of the compiled sampler.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json

import arviz_base
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from numpyro.infer.hmc import hmc
from numpyro.infer.util import potential_energy

from .. import _checks
from .._checks import NNGPInputError, finite_float, positive_int
from .._progress import run_nuts
from .._version import __version__
from ..sampling.stats import CorrelatorStats, check_tails
from ..theory.operators import fit_bases, operator, operators
from ..tuples import distinct_tuples
from . import centring as _centring
from . import diagnostics as _diag
from . import two_point as _two_point
from .compare import elpd_table_and_choice, problem_key
from .evidence import conditional_loglik, discrepancy_variance
from .models.couplings import (
    NORMAL_DF,
    RCOND,
    coupling_model,
    latent_arrays,
    latent_draws,
    stable_cholesky,
)
from .problem import (
    ALL_FIT_ORDERS,
    FIT_ORDERS,
    EFTTheory,
    centred_observation,
    choose_noise,
    coupling_names,
    default_orders,
    likelihood_df,
    noise_covariance,
    odd_couplings,
)

__all__ = [
    "ESTIMANDS",
    "MODELS",
    "MODEL_COUPLINGS",
    "model_bases",
    "model_couplings_of",
    "sample_latent",
    "infer_couplings",
]

# numpyro's names for NUTS diagnostics -> ArviZ's names in sample_stats.
_EXTRA_FIELDS = ("diverging", "acceptance_rate", "n_steps", "step_size", "energy", "lp")

#: The declared estimand at each perturbative order (:mod:`nngp_ppl.inference.problem`,
#: :mod:`nngp_ppl.inference.estimators`), as stored in the ``estimand`` attribute.
ESTIMANDS = {
    1: "g*(cutoff) = argmin_g sum_t ((r_t - D_t g)/|D_t,lambda|)^2 over the distinct tuples "
    "of the fitted orders, r = G_exact - G_free (G_free: Wick sums of {free}; for lambda "
    "alone the equal-weight mean of lambda_t, the paper's lambda-bar); see "
    "nngp_ppl.inference.problem",
    2: "g*(cutoff) = B(cutoff) [r - lambda1^2 d2]: the first-order estimand's map B applied "
    "to the deviations with the two-vertex (lambda^2) diagrams d2 removed at the "
    "leading-order lambda1 = lambda-bar of the 4-pt function (consistent at O(1/N^2)), "
    "r = G_exact - G_free "
    "(G_free: Wick sums of {free}); see nngp_ppl.inference.estimators",
}

#: The models ranked by expected log predictive density (ELPD) on even data: name ->
#: couplings. With odd correlators every nested odd basis joins them (:func:`model_bases`).
MODELS = {"gp": (), "lambda": ("lambda",), "lambda+kappa": ("lambda", "kappa"),
          "g3+lambda": ("g3", "lambda"), "g3+lambda+kappa": ("g3", "lambda", "kappa")}
#: Every coupling a compared model may have on even data (``constant_data/model_couplings``);
#: the odd ones are added where the odd correlators are conditioned on
#: (:func:`_model_couplings`).
MODEL_COUPLINGS = ("lambda", "kappa")


def model_bases(data_orders) -> dict[str, tuple[str, ...]]:
    """The models ranked by ELPD on correlators of ``data_orders``: ``"gp"`` (no coupling)
    and every fit basis those orders hold (:func:`nngp_ppl.theory.operators.coupling_names`
    with ``fit_orders``: the nested even bases λ, λ + κ and, with odd orders, each of them
    with g₃ or g₃ + g₅), named by their couplings in order of expected size joined by
    ``+`` (``"g3+lambda+kappa"``); a model's couplings are the name split at ``+``."""
    return {"gp": (), **{"+".join(b): tuple(b) for b in fit_bases(tuple(data_orders))}}


def model_couplings_of(name: str) -> tuple[str, ...]:
    """The couplings of a compared model's name (``"gp"``: none; ``"lambda+kappa@2"``:
    ``("lambda", "kappa")``)."""
    base = name.partition("@")[0]
    return () if base == "gp" else tuple(base.split("+"))


def _model_couplings(theory) -> tuple[str, ...]:
    """The couplings of the compared models (:func:`_model_names`) of ``theory``, in order
    of expected size."""
    names = {c for b in model_bases(theory.data_orders).values() for c in b}
    names |= set(MODEL_COUPLINGS)
    return tuple(sorted(names, key=lambda c: (operator(c).size_power, c)))


@functools.lru_cache(maxsize=16)
def _runner(num_warmup, student):
    """Compiled NUTS in pieces: ``init(keys (P, chains), start (P, chains, T[+1]), arrays)
    -> state`` and ``advance(state, arrays, length) -> (state, draws)``, numpyro's
    functional NUTS (``numpyro.infer.hmc.hmc``) on the potential energy of
    :func:`~nngp_ppl.inference.models.coupling_model` in its unconstrained coordinates (``xi`` and,
    with a Student-t likelihood, log ``precision``), problems and chains vectorised,
    ``length`` steps scanned. A run of warm-up and draws in several ``advance`` calls is
    the same chain, step for step, as one scan (the state carries the key and the
    adaptation); the pieces let a progress bar move between them, and warm-up and draws
    share one program (:func:`nngp_ppl._progress.pieces`)."""

    model = functools.partial(coupling_model, student=student)

    def params(q):
        return {"xi": q[:-1], "precision": q[-1]} if student else {"xi": q}

    def potential_fn_gen(arrays):
        def potential(q):
            return potential_energy(model, (arrays,), {}, params(q))

        return potential

    # One hmc() pair: sample_kernel reads the settings init_kernel stored (num_warmup, tree
    # depth), Python values, not traced ones.
    init_kernel, sample_kernel = hmc(potential_fn_gen=potential_fn_gen, algo="NUTS")

    def init_one(key, q0, arrays):
        return init_kernel(q0, num_warmup, dense_mass=False, model_args=(arrays,),
                           rng_key=key)

    def advance_one(state, arrays, length):
        def step(st, _):
            st = sample_kernel(st, model_args=(arrays,))
            stats = (st.diverging, st.accept_prob, st.num_steps, st.adapt_state.step_size,
                     st.energy, -st.potential_energy)
            q = st.z
            z = (latent_draws(arrays, q[:-1], jnp.exp(q[-1])) if student
                 else latent_draws(arrays, q))
            return st, (z, stats)

        return jax.lax.scan(step, state, None, length=length)

    @jax.jit
    def init(keys, starts, arrays):
        return _over_chains(init_one, keys, starts, arrays)

    @functools.partial(jax.jit, static_argnums=(2,))
    def advance(state, arrays, length):
        one = functools.partial(advance_one, length=length)
        return _over_chains(one, state, arrays)

    return init, advance


def _over_chains(fn, *args):
    """``fn(*per_chain, arrays)`` over every (problem, chain) pair: ``args`` but the last
    have leading axes (P, chains), the last (the problem's arrays) a leading axis P; the
    result has leading axes (P, chains).

    One ``vmap`` over the P · chains pairs, not a ``vmap`` over chains inside one over
    problems: batching NUTS's nested while loops is most of its tracing, and each vmap level
    batches them again (a batch of 3 problems x 2 chains: 2.5 -> 1.6 s to trace and
    compile). Every pair computes alone either way: the draws are the bits of the nested
    form (measured), and tests/test_user_path.py checks that a problem draws the same in a
    batch as alone."""
    *per_chain, arrays = args
    chains = jax.tree.leaves(per_chain)[0].shape[1]
    flat = jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:]), tuple(per_chain))
    each = jax.tree.map(lambda a: jnp.repeat(a, chains, axis=0), arrays)
    out = jax.vmap(fn)(*flat, each)
    return jax.tree.map(lambda a: a.reshape((-1, chains) + a.shape[1:]), out)


def sample_latent(arrays, scale_tril, rng_key, *, num_chains: int = 4,
                  num_samples: int = 1000, num_warmup: int = 500, problem_ids=None,
                  progress: bool = False):
    """NUTS draws of the noise-free deviations, :math:`r = L z`.

    ``arrays`` is one :class:`~nngp_ppl.inference.models.LatentArrays` or a batch of independent
    problems of equal size (leading axis P on every field and on ``scale_tril``), sampled
    in one compiled call; problem p uses the key ``fold_in(rng_key, problem_ids[p])``
    (default: p), so a problem's draws do not depend on its companions. A batch with any
    Student-t problem samples all with the scale-mixture model (a normal problem's
    precision then stays at 1 to ~1e-6). Chains start dispersed (2 standard deviations in
    each whitened direction), so that R-hat can detect chains that have not mixed.
    ``progress`` draws a bar of NUTS steps on a terminal (:mod:`nngp_ppl._progress`); the
    scan then runs in about 30 compiled pieces (:func:`nngp_ppl._progress.run_nuts`), the
    same draws. Returns
    ``(r, stats)``: r of shape (chain, draw, T), or (P, chain, draw, T) for a batch, and the
    NUTS statistics alike.
    """

    batched = np.ndim(arrays.whitened) == 2
    if not batched:
        arrays = type(arrays)(*(jnp.asarray(f)[None] for f in arrays))
    student = arrays.student
    init, advance = _runner(num_warmup, student)
    w = arrays.whitened
    L = np.asarray(scale_tril) if batched else np.asarray(scale_tril)[None]
    ids = range(w.shape[0]) if problem_ids is None else [int(i) for i in problem_ids]
    keys, starts = [], []
    size = w.shape[1] + int(student)
    for pid in ids:
        key_init, key_run = jax.random.split(jax.random.fold_in(rng_key, pid))
        keys.append(jax.random.split(key_run, num_chains))
        start = 2.0 * jax.random.normal(key_init, (num_chains, size))
        # The precision starts at 1: for a normal problem in a Student-t batch it is pinned
        # there to ~1e-6, and a dispersed start would begin far out on its Gamma wall.
        starts.append(start.at[:, -1].set(0.0) if student else start)
    state = init(jnp.stack(keys), jnp.stack(starts), arrays)
    z, stats = run_nuts(state, lambda st, n: advance(st, arrays, n), num_warmup,
                        num_samples, progress)
    r = np.einsum("pcdt,pst->pcds", z, L)
    stats = {n: np.asarray(v) for n, v in zip(_EXTRA_FIELDS, stats, strict=True)}
    if not batched:
        return r[0], {n: v[0] for n, v in stats.items()}
    return r, stats


def infer_couplings(
    stats,
    net=None,
    X=None,
    cutoffs=(10.0,),
    couplings=("lambda",),
    widths=None,
    num_chains: int = 4,
    num_samples: int = 1000,
    seed: int = 0,
    *,
    orders=None,
    propagator: str = "full",
    num_warmup: int = 500,
    prior_width: float = 10.0,
    covariance: str = "auto",
    rcond: float = RCOND,
    compare: bool = True,
    predictive_draws: int = 100,
    progress: bool = False,
    two_point: str = "auto",
    order: int = 1,
):
    r"""Posterior of the couplings at every width and cutoff, as an ArviZ DataTree.

    Parameters
    ----------
    stats : CorrelatorStats or path
        Sampled correlators (a netCDF path is read with ``CorrelatorStats.from_netcdf``).
    net, X : ensemble and (k, d_in) inputs; default: those of ``stats`` (must agree).
    cutoffs : cutoffs :math:`\Lambda` of the vertex box :math:`[-\Lambda, \Lambda]^{d_{in}}`.
    couplings : ``("lambda",)`` or ``("lambda", "kappa")``, either with ``g3`` (or
        ``g3, g5``): the odd couplings are fitted to the odd correlators (orders 1, 3, 5:
        sample them with ``orders=(1, 2, 3, 4, 6)``) (:func:`nngp_ppl.inference.problem.basis`
        builds a basis by dimension and symmetry). A net with non-zero means is fitted
        centred, to its centred moments of orders 3..6 (every raw order 1..n sampled;
        :mod:`nngp_ppl.inference.centred`; root attribute ``centred``).
    widths : widths to fit (default: all in ``stats``).
    orders : correlator orders that define the couplings (the estimand,
        :mod:`nngp_ppl.inference.problem`). Default: (4,) for λ alone (the paper's choice; the 6-pt
        function then tests the prediction out of sample), (4, 6) with κ. The posterior
        conditions on every sampled order among (4, 6), so that the models can be
        compared on the same data.
    propagator : ``"full"`` (K on vertex legs) or ``"bias_subtracted"`` (K - σ_b²).
    covariance : the noise model (:func:`nngp_ppl.inference.problem.choose_noise`): ``"auto"``
        (default), ``"exact"``, ``"sample"`` or ``"gp"``; stored as ``covariance``.
    rcond : eigenvalue floor of the covariance's correlation matrix, relative to its
        largest eigenvalue (:func:`~nngp_ppl.inference.models.stable_cholesky`); it only widens.
    compare : rank the GP, λ and (with the 6-pt function) λ + κ models by the PSIS-LOO ELPD
        of their ``log_likelihood`` variables (:func:`~nngp_ppl.inference.model_loo`) per
        width and cutoff (``constant_data/elpd``, the root attributes ``elpd_best`` and
        ``elpd_kept``).
    predictive_draws : draws per chain kept in the pointwise groups (``log_likelihood``,
        ``posterior_predictive``, ``prior``, ``prior_predictive``), thinned evenly.
    two_point : the free part of :math:`r = G - G_{free}` (:mod:`nngp_ppl.inference.two_point`):
        ``"kernel"`` (Wick sums of K, rule 4.5), ``"measured"`` (of the sampled 2-pt
        function, its noise propagated) or ``"auto"`` (measured where the 2-pt function is
        not K); a Monte Carlo kernel's error enters the noise (attribute ``kernel_noise``).

    order : perturbative order of the estimand (:mod:`nngp_ppl.inference.estimators`): 1, or 2
        (the λ² diagrams removed at the leading-order λ̄; adds ``second_order_share`` and
        ranks every model at both orders).

    Returns
    -------
    DataTree (layout: docs/file_formats.md, "Posterior file"): ``posterior`` — each coupling
    and ``spread`` (the model discrepancy τ) per (chain, draw, width, cutoff), and
    ``deviation``, the noise-free deviations r of the fitted orders (what
    :func:`~nngp_ppl.beta_function` differentiates); ``sample_stats`` (NUTS, per width);
    ``log_likelihood``, ``posterior_predictive``, ``prior``, ``prior_predictive`` (thinned);
    ``observed_data``; ``constant_data`` (inputs, free part, designs, noise factor, plug-in
    estimates, ELPD table, every model's couplings); provenance at the root, including
    ``estimand``, ``order``, ``covariance``, ``orders`` and ``data_orders``. The diagnostics
    gate (:func:`~nngp_ppl.inference.diagnostics_gate`) is applied; its verdict is the root
    attribute ``diagnostics_passed`` and a failure warns, naming width and cutoff.
    """

    setup = _validate(stats, net, X, cutoffs, couplings, widths, orders, num_chains,
                      num_samples, num_warmup, prior_width, covariance, predictive_draws)
    stats, net, X, cutoffs, couplings, widths, orders, data_orders, noise = setup
    centred = not getattr(net, "zero_mean", True)
    mode = (_centred_mode(two_point) if centred
            else _two_point.resolve(net, two_point, 2 in stats.orders))
    theory, est = _theory(net, X, couplings, orders, data_orders, propagator, cutoffs, order)
    _warn_heavy_tails(stats, widths)

    with _two_point.handled():
        runs = [_width_data(stats, theory, width, noise, rcond, mode) for width in widths]
    _sample_widths(runs, widths, prior_width, seed, num_chains, num_samples, num_warmup,
                   _checks_progress(progress))

    thin = max(1, num_samples // predictive_draws)
    derived = _derive(theory, runs, est, thin, seed)
    kernel_design = _kernel_design_error(theory, runs, derived, cutoffs, seed)
    with _two_point.handled():
        elpd = _compare_models(theory, runs, est, thin) if compare else None
    dt = _datatree(theory, est, runs, derived, elpd, widths, cutoffs, thin, attrs={
        "propagator": propagator, "prior_width": float(prior_width), "covariance": noise,
        "covariance_rcond": float(rcond), "seed": int(seed), "num_chains": num_chains,
        "num_samples": num_samples, "num_warmup": num_warmup, "predictive_thin": thin,
        "stats_seed": int(getattr(stats, "seed", -1)), "two_point": mode,
        "centred": int(theory.centred),
        "free_part": (_centring.describe(mode) if theory.centred
                      else _two_point.DESCRIPTION[mode]),
        "kernel_noise": _kernel_noise_note(runs, kernel_design),
    })
    gate = _diag.diagnostics_gate(dt, warn=True)
    dt.attrs["diagnostics_passed"] = int(gate.passed)
    return dt


# --- steps ----------------------------------------------------------------------------------
def _sample_widths(runs, widths, prior_width, seed, num_chains, num_samples, num_warmup,
                   progress) -> None:
    """One batched NUTS call over the widths; each run gains its draws of r (chain, draw,
    T), its NUTS statistics and its prior scale."""
    arrays = [latent_arrays(run["residual"], run["tril"], prior_width, run["df"])
              for run in runs]
    batch = type(arrays[0])(*(jnp.stack(f) for f in zip(*arrays, strict=True)))
    if progress:
        print(f"NUTS: {len(widths)} width(s) x {num_chains} chains, "
              f"{num_warmup} + {num_samples} steps, {batch.whitened.shape[1]} latent "
              "correlators ...", flush=True)
    r, sstats = sample_latent(batch, np.stack([run["tril"] for run in runs]),
                              jax.random.PRNGKey(seed), num_chains=num_chains,
                              num_samples=num_samples, num_warmup=num_warmup,
                              problem_ids=widths, progress=progress)
    for p, run in enumerate(runs):
        run.update(r=r[p], sstats={n: v[p] for n, v in sstats.items()},
                   prior_scale=float(batch.prior_scale[p]))


def _validate(stats, net, X, cutoffs, couplings, widths, orders, num_chains, num_samples,
              num_warmup, prior_width, covariance, predictive_draws):
    stats = _load_stats(stats)
    net, X = _checks.sampled_at(stats, net, X)
    cutoffs = _cutoffs(cutoffs, X)
    couplings = coupling_names(couplings)
    available = tuple(int(n) for n in np.atleast_1d(stats.orders))
    # Even bases condition on the even orders only (as before odd orders were sampled); an
    # odd basis on the odd ones too.
    data_orders = tuple(n for n in (ALL_FIT_ORDERS if odd_couplings(couplings) else FIT_ORDERS)
                        if n in available)
    if not getattr(net, "zero_mean", True):
        data_orders = _centred_data_orders(couplings, available)
    if orders is None:
        # Name what the statistics lack, not the orders option the caller never gave.
        _checks.sampled_orders("stats", available, (4, 6) if "kappa" in couplings else (4,),
                               f"inferring {' and '.join(couplings)}")
        orders = default_orders(couplings, data_orders)
    orders = tuple(int(n) for n in np.atleast_1d(orders))
    if not orders or any(n not in data_orders for n in orders):
        raise NNGPInputError(
            f"orders must be among {data_orders or FIT_ORDERS} and sampled (the statistics hold "
            f"{available}); got {orders}"
        )
    all_widths = tuple(int(w) for w in np.atleast_1d(stats.widths))
    if widths is None:
        widths = all_widths
    else:
        widths = tuple(positive_int("widths", w) for w in np.atleast_1d(widths))
        if not widths:
            raise NNGPInputError(f"widths must name at least one of {all_widths}")
        missing = [w for w in widths if w not in all_widths]
        if missing:
            raise NNGPInputError(f"widths {missing} were not sampled; available: {all_widths}")
    num_chains = positive_int("num_chains", num_chains)
    num_samples = positive_int("num_samples", num_samples)
    positive_int("num_warmup", num_warmup)
    positive_int("predictive_draws", predictive_draws)
    if num_chains < 2:
        raise NNGPInputError("num_chains must be >= 2 so that R-hat can be computed")
    finite_float("prior_width", prior_width, minimum=0.0)
    noise = choose_noise(covariance, net, data_orders, stats, widths, orders)
    return stats, net, X, cutoffs, couplings, widths, orders, data_orders, noise


def _theory(net, X, couplings, orders, data_orders, propagator, cutoffs, order):
    """The problem's theory and its estimand's map at the cutoffs."""
    theory = EFTTheory.build(net, X, couplings, orders, data_orders, propagator,
                             max_cutoff=max(cutoffs), order=order)
    with _two_point.handled():  # resolve() has warned where K stands in for G2
        est = theory.estimator(cutoffs)
        theory.gp  # noqa: B018  (cached here, used below as the GP reference)
    return theory, est


def _centred_mode(two_point: str) -> str:
    """The centred free part (:mod:`nngp_ppl.inference.centred`): ``"auto"`` is the measured centred
    2-pt function (with μ_W ≠ 0 the finite-width covariance is not K)."""
    if two_point not in _two_point.TWO_POINT:
        raise NNGPInputError(f"two_point must be one of {_two_point.TWO_POINT}, got "
                             f"{two_point!r}")
    return "measured" if two_point == "auto" else two_point


def _centred_data_orders(couplings, available) -> tuple[int, ...]:
    """The centred orders a net with means conditions on: those whose raw orders 1..n were
    all sampled (odd ones with an odd basis); refused without the 4-pt function."""
    out = tuple(n for n in _centring.CENTRED_ORDERS
                if (n % 2 == 0 or odd_couplings(couplings))
                and all(m in available for m in range(1, n + 1)))
    if 4 not in out:
        raise NNGPInputError(
            f"stats: a net with non-zero means is fitted to its centred moments, which need "
            f"the raw moments of every order 1..4 (the mean included), but the statistics "
            f"hold {available}; sample with orders=(1, 2, 3, 4)")
    return out


def _warn_heavy_tails(stats, widths):

    if isinstance(stats, CorrelatorStats):
        bad = check_tails(stats, warn=False)
        if any(w in widths for w, _ in bad):
            check_tails(stats, warn=True, stacklevel=4)


def _width_data(stats, theory, width, noise, rcond, mode="kernel") -> dict:
    """Observed correlators, their deviations from the free part (``mode``,
    :mod:`nngp_ppl.inference.two_point`) and the noise factor of one width."""
    y = np.concatenate([np.asarray(stats.correlator_tuples(n, width), dtype=np.float64)
                        for n in theory.data_orders])
    n_nets = int(stats.n_nets(width))
    if n_nets < 2:
        raise NNGPInputError(f"width {width} has {n_nets} network(s): the noise of the "
                             "correlators needs at least two")
    kernel_var = np.zeros(len(y))
    if theory.centred:
        # The centred moments and their deviations (delta method, nngp_ppl.inference.centring).
        r, cov = centred_observation(stats, width, theory.data_orders, noise,
                                     net=theory.net, X=theory.X, two_point=mode,
                                     K=theory.kernel)
        raw = {m: np.asarray(stats.correlator_tuples(m, width), dtype=np.float64)
               for m in _centring.raw_orders(theory.data_orders)}
        y = np.concatenate([_centring.centred_moments(raw, theory.k, n, xp=np)
                            for n in theory.data_orders])
        free = y - r
    elif mode == "measured":
        G2 = _two_point.two_point_matrix(stats, theory.k, width)
        free, jac = _two_point.free_part(G2, theory.data_orders)
        # Ĝ2 comes from the same networks: the noise of (Ĝ2, Ĝ), propagated.
        joint = dataclasses.replace(theory, data_orders=(2, *theory.data_orders))
        cov = _two_point.propagate(noise_covariance(noise, joint, width, n_nets, stats), jac)
    else:
        free = theory.gp
        cov = noise_covariance(noise, theory, width, n_nets, stats)
        extra = _two_point.kernel_noise(theory.net, theory.X, theory.data_orders)
        kernel_var = np.diag(extra).copy()
        cov = cov + extra
    tril, floored = stable_cholesky(cov, f"covariance at width {width}", rcond)
    df, neff = likelihood_df(stats, width, theory.orders, noise)
    return {"observed": y, "residual": y - free, "free": free, "tril": tril,
            "floored": floored, "n_nets": n_nets, "df": df, "n_eff": neff,
            "kernel_var": kernel_var}


def _kernel_noise_note(runs, design: str = "") -> str:
    """The attribute that says whether and where a Monte Carlo kernel's error entered."""
    notes = [design] if design else []
    if any(np.any(run["kernel_var"] > 0) for run in runs):
        ratio = max(float(np.median(run["kernel_var"] / np.sum(run["tril"] ** 2, axis=1)))
                    for run in runs)
        notes.insert(0, "free part: J Sigma_K J^T of the Monte Carlo kernel's Wick sums "
                     "added to the noise covariance (nngp_ppl.inference.two_point.kernel_noise); "
                     f"median share of the variance {ratio:.3g}")
    return "; ".join(notes) or "none (exact kernel)"


def _kernel_design_error(theory, runs, derived, cutoffs, seed) -> str:
    r"""A Monte Carlo kernel's error through the design, for λ alone on the 4-pt function at
    first order: per width the influence :math:`\psi_{jl}` of each kernel network on the
    estimand at every cutoff (:func:`nngp_ppl.inference.two_point.kernel_coupling_influence`, at the
    observed deviations), whose covariance :math:`\mathrm{Cov}_j(\psi)/M` (L, L) is added
    to the λ draws as correlated Gaussian jitter (one draw per posterior draw, the same
    kernel error at every cutoff) and to the point estimate's s.d. (``point_sd``). The
    design depends on the cutoff, so this part cannot enter the per-width noise model of
    r; its correlation with a Wick(K̂) free part's error is dropped. Returns the note."""
    net, X = theory.net, theory.X
    if _two_point.kernel_entry_covariance(net, X) is None:
        return ""
    if (theory.couplings, theory.orders, getattr(theory, "order", 1)) != (("lambda",), (4,), 1):
        return ("design: not propagated (propagated for lambda alone on the 4-pt function at "
                "first order)")
    rng = np.random.default_rng([seed, 3])
    sd = []
    for i, run in enumerate(runs):
        dev = run["residual"][theory.fitted]
        psi = np.stack([_two_point.kernel_coupling_influence(
            net, X, c, dev, None, "measured", theory.propagator) for c in cutoffs], axis=1)
        cov = np.atleast_2d(np.cov(psi, rowvar=False)) / len(psi)
        g = derived["g"]  # (chain, draw, width, cutoff, coupling)
        jitter = rng.multivariate_normal(np.zeros(len(cutoffs)), cov, g.shape[:2],
                                         method="eigh")
        g[:, :, i, :, 0] += jitter
        derived["gsd"][i, :, 0] = np.sqrt(derived["gsd"][i, :, 0] ** 2 + np.diag(cov))
        sd.append(np.sqrt(np.diag(cov)))
    return ("design: linearised per kernel network, added to the lambda draws as jitter "
            "correlated across cutoffs (largest s.d. "
            f"{max(float(np.max(s)) for s in sd):.3g})")


def _thinned(a, thin):
    return a[:, ::thin]


def _derive(theory, runs, est, thin, seed) -> dict:
    """Couplings, spread, pointwise log likelihood, predictive and prior draws per width,
    through the estimand's map ``est`` (:mod:`nngp_ppl.inference.estimators`, first or second
    order)."""
    fit = theory.fitted
    rng = np.random.default_rng([seed, 1])
    out = {name: [] for name in ("g", "spread", "share", "loglik", "ppc", "prior_g",
                                 "prior_pred", "ghat", "gsd")}
    for run in runs:
        r, L, rhat = run["r"], run["tril"], run["residual"]
        g = est.couplings(r)  # (ch, dr, L, C)
        out["g"].append(g)
        out["spread"].append(est.spread(r, g))
        out["share"].append(est.second_order_share(r))
        gt = _thinned(g, thin)
        mean = est.predict(gt, _thinned(r, thin))  # predicted deviations (ch, dr', L, T)
        # The stated discrepancy, net of noise (nngp_ppl.inference.evidence), (L, T).
        extra = discrepancy_variance(est, rhat, L @ L.T)
        out["loglik"].append(np.stack(
            [_pointwise_loglik(L, rhat, mean[:, :, j], extra[j])
             for j in range(len(est.cutoffs))], axis=2))
        noise = rng.standard_normal(mean.shape) @ L.T
        noise += rng.standard_normal(mean.shape) * np.sqrt(extra)
        out["ppc"].append(run["free"] + mean + noise)
        prior_r = (rng.standard_normal(gt.shape[:2] + (rhat.size,)) * run["prior_scale"]) @ L.T
        out["prior_g"].append(est.couplings(prior_r))
        out["prior_pred"].append(prior_r + rng.standard_normal(prior_r.shape) @ L.T)
        out["ghat"].append(est.couplings(rhat))  # (L, C)
        J = est.jacobian(rhat)  # (L, C, T): the plug-in estimate's sensitivity to the data
        cov = np.einsum("lct,ts,lds->lcd", J, L @ L.T, J)
        out["gsd"].append(np.sqrt(np.diagonal(cov, axis1=1, axis2=2)))
        run["deviation"] = r[..., fit].astype(np.float32)
    return {k: np.stack(v, axis=2) if k not in ("ghat", "gsd") else np.stack(v) for k, v
            in out.items()}


def _pointwise_loglik(L, rhat, mean, extra):
    r"""Pointwise log predictive density of the correlators under one EFT draw (..., T):

    .. math:: \hat r_t \sim \mathcal N\big(m_t,\ \Sigma_{tt} + \tau_b^2 s_t^2\big),

    :math:`m = D(\Lambda) g` the draw's prediction (``mean``) and ``extra`` (T,) the
    model's stated discrepancy :math:`\tau_b^2 s_t^2`, net of noise, one τ per parity
    block (:func:`nngp_ppl.inference.evidence.discrepancy_variance`; 0 for the GP): each
    model predicts a tuple up to the noise and the spread of the per-tuple couplings it
    states. PSIS-LOO needs terms that factorise over observations, so each uses its
    marginal noise. Measured on Erf-net N = 5, 10⁵ nets: without any discrepancy term 86%
    of the Pareto k exceeded 1 (a coupling fixed by the correlated 4-pt noise to ±100%
    predicts individual 6-pt tuples many standard errors apart); whitening by the full
    :math:`\Sigma` instead lets the floored smallest-variance directions dominate.
    """
    if LOO_DENSITY == "conditional":
        return conditional_loglik(L, rhat, mean, extra)
    var = np.sum(L**2, axis=1) + np.asarray(extra)
    return -0.5 * (rhat - mean) ** 2 / var - 0.5 * np.log(2 * np.pi * var)


#: Which pointwise density the ELPD uses: "marginal" (each correlator under its own noise,
#: the default) or "conditional" (given the other correlators, under the full noise
#: covariance: :func:`nngp_ppl.inference.evidence.conditional_loglik`), a measurement
#: option of ``benchmarks/basis_elpd.py --density`` (physics.md §6d: fewer unreliable
#: Pareto k on the odd tuples, not yet measured on the paper inputs).
LOO_DENSITY = "marginal"


def _model_names(theory) -> list[str]:
    """The models ranked by ELPD (:func:`model_bases`): GP, λ, λ + κ (with the 6-pt
    function), and with odd correlators every nested odd basis (g3 + λ, g3 + λ + κ, and
    with the 5-pt function g3 + λ + g5 ...); at second order also the even ones at second
    order (suffix ``@2``), on the same data."""
    names = list(model_bases(theory.data_orders))
    if theory.order == 2:
        names += [f"{m}@2" for m in names
                  if m != "gp" and not odd_couplings(model_couplings_of(m))]
    return names


def _compare_models(theory, runs, est, thin) -> dict:
    """Pointwise log predictive densities of the GP, λ and λ + κ models (and, for a
    second-order posterior, both at second order) per width and cutoff, on the thinned draws.

    All are evaluated on the same data (every conditioned order, each correlator under its
    marginal noise) from the same posterior of :math:`r`; each model maps it through its own
    estimand. The GP model has no parameter: its density is one value per observation and
    width (no draw or cutoff dependence). The ELPD of each is PSIS-LOO on these stored
    arrays (:func:`~nngp_ppl.inference.compare.elpd_table`), after the tree is built.
    """
    cutoffs = est.cutoffs
    names = _model_names(theory)
    # Each model's couplings (posterior mean and sd; NaN where it has none), so that models
    # can be compared coupling by coupling and their predictions drawn (e.g. the connected
    # 6-pt function of nngp_ppl.inference.connected).
    model_couplings = _model_couplings(theory)
    shape = (len(runs), len(cutoffs), len(names), len(model_couplings))
    gmean, gsd = np.full(shape, np.nan), np.full(shape, np.nan)
    loglik = {}
    for m, name in enumerate(names):
        if name == "gp":
            ll = [_pointwise_loglik(run["tril"], run["residual"], 0.0, 0.0) for run in runs]
            draws = _thinned(runs[0]["r"], thin).shape[:2]
            loglik[name] = np.broadcast_to(np.stack(ll)[None, None], draws + np.shape(
                np.stack(ll))).astype(np.float32)
            continue
        base, _, order = name.partition("@")
        sub = EFTTheory.build(theory.net, theory.X, model_couplings_of(base), None,
                              theory.data_orders,
                              theory.propagator, theory.max_cutoff, int(order or 1),
                              centred=theory.centred, kernel_net=theory.kernel_net)
        if (sub.couplings, sub.orders, sub.order) == (theory.couplings, theory.orders,
                                                      theory.order):
            sub_est = est  # the fitted model itself: its designs are already built
        else:
            sub_est = sub.estimator(cutoffs)
        per_run = []
        for i, run in enumerate(runs):
            r = _thinned(run["r"], thin)
            g = sub_est.couplings(r)
            for c, cname in enumerate(sub.couplings):
                gmean[i, :, m, model_couplings.index(cname)] = g[..., c].mean(axis=(0, 1))
                gsd[i, :, m, model_couplings.index(cname)] = g[..., c].std(axis=(0, 1))
            mean = sub_est.predict(g, r)
            extra = discrepancy_variance(sub_est, run["residual"], run["tril"] @ run["tril"].T)
            per_run.append(np.stack(
                [_pointwise_loglik(run["tril"], run["residual"], mean[:, :, j], extra[j])
                 for j in range(len(cutoffs))], axis=2))
        loglik[name] = np.stack(per_run, axis=2).astype(np.float32)
    return {"models": names, "loglik": loglik, "couplings_mean": gmean, "couplings_sd": gsd}


def _datatree(theory, est, runs, derived, elpd, widths, cutoffs, thin, attrs):

    couplings, data_orders = theory.couplings, theory.data_orders
    splits = np.cumsum(theory.blocks)[:-1]
    posterior = {name: derived["g"][..., c] for c, name in enumerate(couplings)}
    posterior["spread"] = derived["spread"]
    if theory.order == 2:
        posterior["second_order_share"] = derived["share"]
    posterior["deviation"] = np.stack([run["deviation"] for run in runs], axis=2)
    design = est.D
    sstats = {name: np.stack([run["sstats"][name] for run in runs], axis=-1)
              for name in _EXTRA_FIELDS}
    dims = {name: ["width", "cutoff"] for name in (*couplings, "spread", "second_order_share")}
    dims["deviation"] = ["width", "fit_observation"]
    dims.update({name: ["width"] for name in _EXTRA_FIELDS})
    observed, const, ppc, prior_pred, loglik = {}, {}, {}, {}, {}
    own = derived["loglik"].astype(np.float32)
    tril = np.stack([run["tril"] for run in runs])
    sem = np.sqrt(np.sum(tril**2, axis=2))
    obs = np.stack([run["observed"] for run in runs])
    for n, y, err, g0, des, rep, pri, ll in zip(
        data_orders, np.split(obs, splits, axis=1), np.split(sem, splits, axis=1),
        np.split(theory.gp, splits), np.split(design, splits, axis=1),
        np.split(derived["ppc"], splits, axis=-1),
        np.split(derived["prior_pred"], splits, axis=-1), np.split(own, splits, axis=-1),
        strict=True,
    ):
        # observed_data holds only what a model predicts (ArviZ pairs each of its variables
        # with one in posterior_predictive and log_likelihood); the errors are constants.
        observed[f"G{n}"], const[f"G{n}_se"] = y, err
        dims[f"G{n}"] = dims[f"G{n}_se"] = ["width", f"tuple_{n}"]
        const[f"G{n}_gp"], dims[f"G{n}_gp"] = g0, [f"tuple_{n}"]
        const[f"design{n}"], dims[f"design{n}"] = des, ["cutoff", f"tuple_{n}", "coupling"]
        if theory.order == 2:
            lam = couplings.index("lambda")
            const[f"design2_{n}"] = np.split(est.D2[..., lam, lam], splits, axis=1)[
                data_orders.index(n)]
            dims[f"design2_{n}"] = ["cutoff", f"tuple_{n}"]
        const[f"tuples_{n}"] = np.asarray(distinct_tuples(theory.k, n))
        dims[f"tuples_{n}"] = [f"tuple_{n}", f"position_{n}"]
        ppc[f"G{n}"] = rep.astype(np.float32)
        loglik[f"G{n}"] = ll  # the posterior's own model, per order: what LOO-PIT pairs
        prior_pred[f"deviation{n}"] = pri.astype(np.float32)
    const.update(
        inputs=theory.X,
        scale_tril=tril,
        floored=np.asarray([run["floored"] for run in runs]),
        n_nets=np.asarray([run["n_nets"] for run in runs]),
        likelihood_df=np.asarray([run["df"] for run in runs]),
        effective_networks=np.asarray([run["n_eff"] for run in runs]),
        point_estimate=derived["ghat"],
        point_sd=derived["gsd"],
        fitted=theory.fitted.astype(np.int8),
        free_part=np.stack([run["free"] for run in runs]),
    )
    dims.update(
        inputs=["input", "input_dim"], scale_tril=["width", "observation", "observation_col"],
        floored=["width"], n_nets=["width"], likelihood_df=["width"],
        effective_networks=["width"], point_estimate=["width", "cutoff", "coupling"],
        point_sd=["width", "cutoff", "coupling"], fitted=["observation"],
        free_part=["width", "observation"],
    )
    groups = {"posterior": posterior, "sample_stats": sstats, "observed_data": observed,
              "constant_data": const}
    pdims = {}
    for n in data_orders:
        pdims[f"G{n}"] = ["width", "cutoff", f"tuple_{n}"]
        pdims[f"deviation{n}"] = ["width", f"tuple_{n}"]
    lldims = _model_logliks(loglik, elpd, data_orders)
    pointwise = {
        "posterior_predictive": ppc,
        "log_likelihood": loglik,
        "prior": {name: derived["prior_g"][..., c] for c, name in enumerate(couplings)},
        "prior_predictive": prior_pred,
    }
    _elpd_groups(elpd, const, dims)
    root_attrs = _root_attrs(theory, runs, elpd, "", attrs)
    coords = {
        "width": np.asarray(widths),
        "cutoff": np.asarray(cutoffs),
        "coupling": list(couplings),
        "model": list(elpd["models"]) if elpd is not None else [],
        "model_coupling": list(_model_couplings(theory)),
    }
    main = arviz_base.from_dict(groups, dims={**dims}, coords=coords,
                                attrs={"/": root_attrs})
    # The pointwise groups keep every thin-th draw: their own draw coordinate says which.
    draws = np.arange(0, runs[0]["r"].shape[1], thin)
    for name, group in pointwise.items():
        gdims = lldims if name == "log_likelihood" else {
            **pdims, **{c: ["width", "cutoff"] for c in couplings}}
        extra = arviz_base.from_dict({name: group}, dims=gdims,
                                     coords={**coords, "draw": draws})
        main[name] = extra[name]
    if elpd is not None:
        _store_elpd(main, widths, cutoffs)
    return main


def _model_logliks(loglik, elpd, data_orders) -> dict:
    """Add every compared model's pointwise density over all conditioned correlators to
    ``loglik``, under the model's name (what its ELPD is computed from,
    :func:`~nngp_ppl.inference.compare.elpd_table`); returns the group's dims. Model names
    such as "lambda" are also coupling names, so this group gets dims of its own."""
    lldims = {f"G{n}": ["width", "cutoff", f"tuple_{n}"] for n in data_orders}
    for name, ll in (elpd["loglik"].items() if elpd is not None else ()):
        loglik[name] = ll
        lldims[name] = ["width", "observation"] if name == "gp" else [
            "width", "cutoff", "observation"]
    return lldims


def _elpd_groups(elpd, const, dims) -> None:
    """Put every compared model's couplings into ``const``/``dims`` (no-op without a
    comparison)."""
    if elpd is None:
        return
    const["model_couplings"] = elpd["couplings_mean"]
    const["model_couplings_sd"] = elpd["couplings_sd"]
    dims["model_couplings"] = dims["model_couplings_sd"] = [
        "width", "cutoff", "model", "model_coupling"]


def _store_elpd(tree, widths, cutoffs) -> None:
    """PSIS-LOO of every compared model from the tree's own ``log_likelihood``
    (:func:`~nngp_ppl.inference.compare.elpd_table`: what ``az.loo`` gives on the stored
    file) into ``constant_data``, the best model per width/cutoff into the root attribute
    ``elpd_best`` and the basis the nested rule keeps into ``elpd_kept`` (JSON)."""

    table, kept = elpd_table_and_choice(tree)
    const = tree["constant_data"].to_dataset()
    dims = ("width", "cutoff", "model")
    tree["constant_data"] = const.assign(
        {k: xr.DataArray(v, dims=dims) for k, v in table.items()})
    models = np.asarray(json.loads(tree.attrs["elpd_models"]))
    best = models[np.nanargmax(table["elpd"], axis=-1)]

    def by_problem(names) -> str:
        return json.dumps({problem_key(w, c): str(names[i, j]) for i, w in enumerate(widths)
                           for j, c in enumerate(cutoffs)})

    tree.attrs["elpd_best"] = by_problem(best)
    tree.attrs["elpd_kept"] = by_problem(kept)


def _root_attrs(theory, runs, elpd, elpd_best, attrs) -> dict:
    """Provenance and settings at the root of the posterior DataTree."""

    couplings, orders, data_orders = theory.couplings, theory.orders, theory.data_orders
    return {
        "title": "nngp_ppl coupling posterior",
        "nngp_ppl_version": __version__,
        "ensemble": json.dumps(theory.net.to_dict()),
        "orders": json.dumps(list(orders)),
        "data_orders": json.dumps(list(data_orders)),
        "couplings": json.dumps(list(couplings)),
        "estimand": ESTIMANDS[theory.order].format(free="K" if attrs.get(
            "two_point", "kernel") == "kernel" else "the exact finite-width 2-pt function"),
        "order": theory.order,
        "sampler": "numpyro NUTS on the latent deviations, whitened, diagonal mass, "
        "chains vmapped",
        "model": "nngp_ppl.inference.models.coupling_model",
        "sign_convention": "S = S_GP + int (" + " + ".join(
            f"{o.name} f^{o.legs}" for o in operators(couplings)) + "); rule 4.5 on",
        "likelihood": "normal" if all(run["df"] >= NORMAL_DF for run in runs) else
        "Student-t (heavy tails; degrees of freedom per width in "
        "constant_data/likelihood_df)",
        "elpd_models": json.dumps(elpd["models"] if elpd is not None else []),
        "elpd_best": elpd_best,
        "created": datetime.datetime.now(datetime.UTC).isoformat(),
        **attrs,
    }


def _cutoffs(cutoffs, X) -> tuple[float, ...]:
    """Distinct cutoffs, each inside the limits and holding the inputs X in its box."""
    arr = _checks.cutoffs("cutoffs", cutoffs, _checks.extent(X))
    return tuple(dict.fromkeys(float(v) for v in arr.ravel()))


def _load_stats(stats):
    if isinstance(stats, (str,)) or hasattr(stats, "__fspath__"):

        return CorrelatorStats.from_netcdf(stats)
    for attr in ("correlator_tuples", "n_nets", "widths", "orders", "X"):
        if not hasattr(stats, attr):
            raise NNGPInputError(
                "stats must be a CorrelatorStats (or a path to one saved with to_netcdf); "
                f"got {type(stats).__name__} without {attr!r}"
            )
    return stats


def _checks_progress(progress) -> bool:
    if not isinstance(progress, bool):
        raise NNGPInputError(f"progress must be True or False, got {progress!r}")
    return progress
