r"""Coupling posteriors: NUTS on the coupling model at every width and cutoff.

For each width N and cutoff :math:`\Lambda` the measured 4-pt (and 6-pt) correlators of
:class:`nngp_ppl.stats.CorrelatorStats` are fitted by :func:`nngp_ppl.models.coupling_model`:
GP + first-order diagrams (physics.md §6, rule 4.5 on) + inferred EFT truncation error, with
the estimator covariance of the correlators as the noise. The result is one ArviZ DataTree
with ``width`` and ``cutoff`` dimensions on every posterior variable.

Runs at different (width, cutoff) are independent and share one compiled sampler: numpyro's
NUTS kernel with the chains vectorised by ``vmap`` (what ``chain_method="vectorized"`` does,
and on a small CPU faster than parallel chains), compiled once per shape instead of at
every ``MCMC.run``. Every random draw derives from ``seed`` by ``fold_in`` on the width and
on the cutoff's value, so a posterior does not depend on which other widths or cutoffs were
run with it.
"""

from __future__ import annotations

import datetime
import functools
import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import NNGPInputError, finite_float, inputs, positive_int
from .._checks import orders as _orders
from ..models.couplings import (
    CouplingProblem,
    coupling_model,
    coupling_names,
    sample_cbar,
    stable_cholesky,
    stack_problems,
)
from ..theory.lattice import PROPAGATORS
from ..theory.wick import gp_correlator_tuples
from ..tuples import distinct_tuples

# numpyro's names for NUTS diagnostics -> ArviZ's names in sample_stats.
_EXTRA_FIELDS = {
    "diverging": "diverging",
    "accept_prob": "acceptance_rate",
    "num_steps": "n_steps",
    "adapt_state.step_size": "step_size",
    "energy": "energy",
    "potential_energy": "lp",
}


@functools.lru_cache(maxsize=16)
def _runner(couplings, truncation, num_chains, num_warmup, num_samples):
    r"""Compiled ``(keys (chains,), init (chains, C), center (C,), scale (C, C), arrays) -> draws``.

    numpyro's functional NUTS (``numpyro.infer.hmc.hmc``) on the potential energy of
    :func:`~nngp_ppl.models.coupling_model`, chains vectorised with ``vmap`` and warmup and
    sampling as ``lax.scan``. Unlike ``MCMC(chain_method="vectorized")``, which traces and
    compiles its program again at every ``run``, this is compiled once per shape: a scan over
    cutoffs or a calibration study then costs a fraction of a second per posterior. (Mapping
    it over problems with ``vmap`` as well is slower: every lane waits for the longest
    trajectory.)

    NUTS runs in standardised coordinates :math:`\xi`, :math:`g = \hat g + R\xi` with
    :math:`\hat g` the least-squares estimate (weights 1/Var) and :math:`R R^\top` its
    covariance: couplings are O(1e-6..1e-2) and (λ, κ) nearly collinear, which the
    regularised mass-matrix adaptation (it shrinks towards a multiple of 1e-3 I) cannot
    learn in raw units.
    """
    from numpyro.infer.hmc import hmc
    from numpyro.infer.util import potential_energy

    model = functools.partial(coupling_model, couplings=couplings, truncation=truncation)

    def potential_fn_gen(arrays, center, scale_tril):
        def potential(xi):
            g = center + scale_tril @ xi
            params = {name: g[c][None] for c, name in enumerate(couplings)}
            return potential_energy(model, (arrays,), {}, params)

        return potential

    def one_chain(key, xi0, center, scale_tril, arrays):
        init_kernel, sample_kernel = hmc(potential_fn_gen=potential_fn_gen, algo="NUTS")
        args = (arrays, center, scale_tril)
        state = init_kernel(xi0, num_warmup, dense_mass=True, model_args=args, rng_key=key)

        def step(st, _):
            st = sample_kernel(st, model_args=args)
            stats = (
                st.diverging,
                st.accept_prob,
                st.num_steps,
                st.adapt_state.step_size,
                st.energy,
                st.potential_energy,
            )
            return st, (center + st.z @ scale_tril.T, stats)

        state, _ = jax.lax.scan(step, state, None, length=num_warmup)
        _, (z, stats) = jax.lax.scan(step, state, None, length=num_samples)
        return z, stats

    return jax.jit(jax.vmap(one_chain, in_axes=(0, 0, None, None, None)))


def sample_coupling_posterior(
    problems, rng_key, *, num_chains: int = 4, num_samples: int = 1000, num_warmup: int = 500
) -> dict[str, np.ndarray]:
    r"""NUTS draws for one or more independent :class:`~nngp_ppl.models.CouplingProblem` s.

    Problem r is sampled with the key ``fold_in(rng_key, r)`` by ``num_chains`` vectorised
    chains, with the compiled sampler shared by all problems of the same shape. Chains start
    dispersed around the least-squares estimate (2 of its standard deviations
    in each standardised direction, so that R-hat can detect chains that have not mixed)
    and adapt a dense mass matrix (target acceptance 0.8).

    Returns ``{name: array}``: the couplings and ``cbar`` of shape (chain, draw, R) and the
    NUTS diagnostics (ArviZ names: ``diverging``, ``acceptance_rate``, ``n_steps``,
    ``step_size``, ``energy``, ``lp``) of the same shape.
    """
    if isinstance(problems, CouplingProblem):
        problems = [problems]
    problems = list(problems)
    if not problems:
        raise NNGPInputError("problems must contain at least one CouplingProblem")
    first = problems[0]
    run = _runner(first.couplings, first.truncation, num_chains, num_warmup, num_samples)
    results = []
    for r, problem in enumerate(problems):
        if (problem.couplings, problem.truncation) != (first.couplings, first.truncation):
            raise NNGPInputError("problems must share couplings and truncation")
        arrays, grid = stack_problems([problem])
        key_init, key_run, key_cbar = jax.random.split(jax.random.fold_in(rng_key, r), 3)
        R = _sqrt_psd(problem.point_covariance)
        xi0 = 2.0 * jax.random.normal(key_init, (num_chains, R.shape[0]))
        keys = jax.random.split(key_run, num_chains)
        z, stats = run(keys, xi0, jnp.asarray(problem.point_estimate), jnp.asarray(R), arrays)
        z = np.asarray(z)  # (chain, draw, C)
        out = {name: z[..., c] for c, name in enumerate(first.couplings)}
        if first.truncation:
            out["cbar"] = np.asarray(sample_cbar(key_cbar, arrays, grid, z[:, :, None, :]))[
                ..., 0
            ]
        for name, value in zip(_EXTRA_FIELDS.values(), stats, strict=True):
            value = np.asarray(value)
            out[name] = -value if name == "lp" else value
        results.append(out)
    return {name: np.stack([o[name] for o in results], axis=-1) for name in results[0]}


def _sqrt_psd(cov) -> np.ndarray:
    """Lower Cholesky factor of a small covariance, eigen-floored if it is singular."""
    cov = 0.5 * (np.asarray(cov) + np.asarray(cov).T)
    try:
        return np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        w, V = np.linalg.eigh(cov)
        w = np.clip(w, 1e-12 * max(w.max(), 1e-300), None)
        return np.linalg.cholesky((V * w) @ V.T)


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
    truncation: bool = True,
    num_warmup: int = 500,
    prior_width: float = 10.0,
    cbar_scale: float = 1.0,
    truncation_correlation: float = 0.5,
    covariance: str = "gp",
    rcond: float = 1e-6,
    lattice=None,
    progress: bool = False,
):
    r"""Posterior of the couplings at every width and cutoff, as an ArviZ DataTree.

    Parameters
    ----------
    stats : CorrelatorStats or path
        Sampled correlators (a netCDF path is read with ``CorrelatorStats.from_netcdf``).
    net, X : ensemble and (k, d_in) inputs; default: those of ``stats`` (must agree).
    cutoffs : cutoffs :math:`\Lambda` of the vertex box :math:`[-\Lambda, \Lambda]^{d_{in}}`.
    couplings : ``("lambda",)`` or ``("lambda", "kappa")``.
    widths : widths to fit (default: all in ``stats``).
    orders : correlator orders fitted, from (4, 6). Default: (4,) when fitting λ alone (the
        paper's choice; the 6-pt function then tests the prediction), (4, 6) with κ.
    propagator : ``"full"`` (K on vertex legs) or ``"bias_subtracted"`` (K - σ_b², the
        paper's revised EFT; physics.md §6).
    truncation : include the inferred EFT truncation error (see :mod:`nngp_ppl.models`),
        with correlation ``truncation_correlation`` within each correlator order and a
        half-normal prior of scale ``cbar_scale`` on its relative size.
    covariance : the noise model, the covariance of the correlator estimates over the
        ``stats.n_nets(width)`` networks, :math:`(G_{s\cup t} - G_s G_t)/n`:

        * ``"gp"`` (default): with the Gaussian-process moments (Wick, noise-free; exact at
          infinite width, leading order at finite width);
        * ``"exact"``: with the exact finite-width moments of :mod:`nngp_ppl.theory.exact`
          (Gauss- and ReLU-nets; orders up to 12 are needed for 6-pt fits);
        * ``"sample"``: the sample estimate stored in ``stats``. Measured unreliable: it
          needs 12th moments of heavy-tailed products, and its errors correlate with those
          of the means. Erf-net, the paper's six inputs, 2·10⁴ nets, ten seeds: the
          posterior mean of λ lay 3.6 (N = 5) and 4.2 (N = 1000) posterior standard
          deviations from the one on the exact correlators, on average; with ``"gp"``,
          0.0 and 0.2 (root mean square 1.1 and 0.8).
    rcond : eigenvalue floor of the covariance's correlation matrix, relative to its
        largest eigenvalue (:func:`~nngp_ppl.models.stable_cholesky`).

    Returns
    -------
    DataTree with groups ``posterior`` (couplings and ``cbar``, dims chain, draw, width,
    cutoff), ``sample_stats`` (NUTS diagnostics, same dims), ``observed_data`` (``G4``,
    ``G6``: measured correlators per width, with ``G4_se``... standard errors),
    ``constant_data`` (inputs, GP correlators, first-order design per cutoff, the Cholesky
    factor of the estimator covariance per width, the least-squares point estimates
    ``point_estimate`` and ``point_sd`` (weights 1/Var), the priors), and provenance
    attributes at the root. The diagnostics gate (:func:`~nngp_ppl.inference.
    diagnostics_gate`) is applied and its verdict stored in the root attribute
    ``diagnostics_passed``; a failing run warns, naming width and cutoff. A
    ``RuntimeWarning`` also names every (width, cutoff) where the inferred missing orders
    exceed half the first-order correction (median ``cbar`` > 0.5).
    """
    from . import diagnostics as _diag

    stats = _load_stats(stats)
    net = stats.net if net is None else net
    X = inputs("X", stats.X if X is None else X, net.d_in)
    stats_X = np.asarray(stats.X, dtype=np.float64).reshape(X.shape[0], -1)
    if stats_X.shape != X.shape or not np.allclose(stats_X, X, rtol=1e-6, atol=1e-12):
        raise NNGPInputError(
            f"X must be the inputs the correlators were sampled at ({stats_X.tolist()}), "
            f"got {X.tolist()}"
        )
    if getattr(stats, "net", None) is not None and stats.net.to_dict() != net.to_dict():
        raise NNGPInputError(
            f"net {net.to_dict()} differs from the ensemble the correlators were sampled "
            f"from ({stats.net.to_dict()})"
        )
    cutoffs = _cutoffs(cutoffs)
    couplings = coupling_names(couplings)
    available = tuple(int(n) for n in stats.orders)
    if orders is None:
        # λ alone is measured from the 4-pt function, as the paper does, so that the 6-pt
        # function stays an out-of-sample test of the EFT; κ needs the 6-pt data too.
        wanted = (4,) if couplings == ("lambda",) else (4, 6)
        orders = tuple(n for n in available if n in wanted)
        if not orders:
            raise NNGPInputError(
                f"the correlator statistics hold orders {available}; fitting couplings needs "
                "the 4-pt (and optionally 6-pt) functions"
            )
    orders = _orders("orders", orders)
    if any(n not in (4, 6) for n in orders) or any(n not in available for n in orders):
        raise NNGPInputError(
            f"orders must be among (4, 6) and sampled ({available}); got {orders}"
        )
    if propagator not in PROPAGATORS:
        raise NNGPInputError(f"propagator must be one of {PROPAGATORS}, got {propagator!r}")
    all_widths = tuple(int(w) for w in stats.widths)
    if widths is None:
        widths = all_widths
    else:
        widths = tuple(positive_int("widths", w) for w in np.atleast_1d(widths))
        missing = [w for w in widths if w not in all_widths]
        if missing:
            raise NNGPInputError(f"widths {missing} were not sampled; available: {all_widths}")
    num_chains = positive_int("num_chains", num_chains)
    num_samples = positive_int("num_samples", num_samples)
    num_warmup = positive_int("num_warmup", num_warmup)
    if num_chains < 2:
        raise NNGPInputError("num_chains must be >= 2 so that R-hat can be computed")
    prior_width = finite_float("prior_width", prior_width, minimum=0.0)
    cbar_scale = finite_float("cbar_scale", cbar_scale, minimum=0.0)
    if covariance not in COVARIANCES:
        raise NNGPInputError(f"covariance must be one of {COVARIANCES}, got {covariance!r}")

    if lattice is not None:
        lat_cut = getattr(lattice, "cutoff", None)
        if len(cutoffs) != 1 or (lat_cut is not None and not np.isclose(cutoffs[0], lat_cut)):
            raise NNGPInputError(
                "with an explicit lattice the vertex integrals are its weighted sums: give the "
                f"single cutoff of the lattice ({lat_cut}), got cutoffs {list(cutoffs)}"
            )

    from ..theory.diagrams import first_order_design

    k = X.shape[0]
    K = np.asarray(net.kernel(X))
    gp = np.concatenate([gp_correlator_tuples(K, n) for n in orders])
    design = np.concatenate(
        [
            np.asarray(
                first_order_design(
                    net,
                    X,
                    n,
                    cutoffs,
                    couplings=couplings,
                    propagator=propagator,
                    drop_two_point=True,
                    lattice=lattice,
                ),
                dtype=np.float64,
            ).reshape(len(cutoffs), -1, len(couplings))
            for n in orders
        ],
        axis=1,
    )  # (n_cutoffs, T, C)
    T = gp.shape[0]
    C = len(couplings)
    nW, nL = len(widths), len(cutoffs)
    draws = {name: np.empty((num_chains, num_samples, nW, nL)) for name in couplings}
    if truncation:
        draws["cbar"] = np.empty((num_chains, num_samples, nW, nL))
    sstats = {
        name: np.empty(
            (num_chains, num_samples, nW, nL), dtype=bool if name == "diverging" else float
        )
        for name in _EXTRA_FIELDS.values()
    }
    observed = np.empty((nW, T))
    tril = np.empty((nW, T, T))
    floored = np.empty(nW, dtype=np.int64)
    n_nets = np.empty(nW, dtype=np.int64)
    ghat = np.empty((nW, nL, C))
    gsd = np.empty((nW, nL, C))
    prior_scale = np.empty((nW, nL, C))
    shape = np.empty((nW, nL, T))

    bar = _progress(nW * nL, progress)
    root = jax.random.PRNGKey(seed)
    for i, width in enumerate(widths):
        observed[i] = np.concatenate(
            [np.asarray(stats.correlator_tuples(n, width), dtype=np.float64) for n in orders]
        )
        n_nets[i] = int(stats.n_nets(width))
        cov = _covariance(covariance, stats, net, X, K, width, orders, n_nets[i])
        if cov.shape != (T, T):
            raise NNGPInputError(
                f"stats.covariance(width={width}) has shape {cov.shape}, expected ({T}, {T}) "
                f"for orders {orders} at {k} inputs"
            )
        tril[i], floored[i] = stable_cholesky(cov, f"covariance at width {width}", rcond)
        wkey = jax.random.fold_in(root, width)
        for j in range(nL):
            problem = CouplingProblem.build(
                observed[i],
                None,
                gp,
                design[j],
                couplings,
                truncation=truncation,
                prior_width=prior_width,
                cbar_scale=cbar_scale,
                truncation_correlation=truncation_correlation,
                blocks=[len(distinct_tuples(k, n)) for n in orders],
                scale_tril=tril[i],
                n_floored=floored[i],
            )
            out = sample_coupling_posterior(
                problem,
                _cutoff_key(wkey, cutoffs[j]),
                num_chains=num_chains,
                num_samples=num_samples,
                num_warmup=num_warmup,
            )
            for name in draws:
                draws[name][:, :, i, j] = out[name][..., 0]
            for name in sstats:
                sstats[name][:, :, i, j] = out[name][..., 0]
            ghat[i, j] = problem.point_estimate
            gsd[i, j] = np.sqrt(np.diag(problem.point_covariance))
            prior_scale[i, j] = problem.prior_scale
            shape[i, j] = problem.truncation_shape
            bar.update(1)
    bar.close()

    dt = _datatree(
        draws=draws,
        sstats=sstats,
        net=net,
        X=X,
        orders=orders,
        widths=widths,
        cutoffs=cutoffs,
        couplings=couplings,
        observed=observed,
        tril=tril,
        gp=gp,
        design=design,
        ghat=ghat,
        gsd=gsd,
        prior_scale=prior_scale,
        shape=shape,
        floored=floored,
        n_nets=n_nets,
        attrs={
            "propagator": propagator,
            "truncation": int(bool(truncation)),
            "prior_width": prior_width,
            "cbar_scale": cbar_scale,
            "truncation_correlation": truncation_correlation,
            "covariance": covariance,
            "covariance_rcond": rcond,
            "seed": int(seed),
            "num_chains": num_chains,
            "num_samples": num_samples,
            "num_warmup": num_warmup,
            "lattice": "default quadrature" if lattice is None else repr(lattice),
            "stats_seed": int(getattr(stats, "seed", -1)),
        },
    )
    if truncation:
        cbar = np.median(draws["cbar"], axis=(0, 1))
        big = [(widths[i], cutoffs[j]) for i, j in zip(*np.nonzero(cbar > 0.5), strict=True)]
        if big:
            where = ", ".join(f"(width={w}, cutoff={c:g})" for w, c in big)
            warnings.warn(
                "first order is not enough at " + where + ": the inferred missing orders are "
                "more than half the size of the first-order correction (median cbar > 0.5), "
                "so the couplings' posteriors rest on the truncation model; consider fitting "
                "the 4-pt function alone (orders=(4,)), adding kappa, or larger widths",
                RuntimeWarning,
                stacklevel=2,
            )
    gate = _diag.diagnostics_gate(dt, warn=True)
    dt.attrs["diagnostics_passed"] = int(gate.passed)
    return dt


def _datatree(
    *, draws, sstats, net, X, orders, widths, cutoffs, couplings, observed, tril, gp, design,
    ghat, gsd, prior_scale, shape, floored, n_nets, attrs,
):
    import arviz_base

    from .. import __version__

    k = X.shape[0]
    sizes = [len(distinct_tuples(k, n)) for n in orders]
    splits = np.cumsum(sizes)[:-1]
    sem = np.sqrt(np.sum(tril**2, axis=2))  # sqrt(diag Sigma) per width
    post_dims = ["width", "cutoff"]
    observed_data, constant_data, dims = {}, {}, {}
    for n, obs, err, g0, des in zip(
        orders,
        np.split(observed, splits, axis=1),
        np.split(sem, splits, axis=1),
        np.split(gp, splits),
        np.split(design, splits, axis=1),
        strict=True,
    ):
        observed_data[f"G{n}"] = obs
        observed_data[f"G{n}_se"] = err
        dims[f"G{n}"] = dims[f"G{n}_se"] = ["width", f"tuple{n}"]
        constant_data[f"G{n}_gp"] = g0
        dims[f"G{n}_gp"] = [f"tuple{n}"]
        constant_data[f"design{n}"] = des
        dims[f"design{n}"] = ["cutoff", f"tuple{n}", "coupling"]
        constant_data[f"tuples{n}"] = np.asarray(distinct_tuples(k, n))
        dims[f"tuples{n}"] = [f"tuple{n}", f"leg{n}"]
    constant_data.update(
        inputs=X,
        scale_tril=tril,
        floored=floored,
        n_nets=n_nets,
        point_estimate=ghat,
        point_sd=gsd,
        prior_scale=prior_scale,
        truncation_shape=shape,
    )
    dims.update(
        inputs=["input", "input_dim"],
        scale_tril=["width", "obs", "obs_"],
        covariance_floored=["width"],
        n_nets=["width"],
        point_estimate=["width", "cutoff", "coupling"],
        point_sd=["width", "cutoff", "coupling"],
        prior_scale=["width", "cutoff", "coupling"],
        truncation_shape=["width", "cutoff", "obs"],
    )
    for name in list(draws) + list(sstats):
        dims[name] = post_dims
    root_attrs = {
        "title": "nngp_ppl coupling posterior",
        "nngp_ppl_version": __version__,
        "ensemble": json.dumps(net.to_dict()),
        "orders": list(orders),
        "couplings": list(couplings),
        "sampler": "numpyro NUTS, dense mass, chain_method=vectorized",
        "model": "nngp_ppl.models.coupling_model",
        "sign_convention": "S = S_GP + int (lambda f^4 + kappa f^6); rule 4.5 on",
        "created": datetime.datetime.now(datetime.UTC).isoformat(),
        **attrs,
    }
    return arviz_base.from_dict(
        {
            "posterior": draws,
            "sample_stats": sstats,
            "observed_data": observed_data,
            "constant_data": constant_data,
        },
        dims=dims,
        coords={
            "width": np.asarray(widths),
            "cutoff": np.asarray(cutoffs),
            "coupling": list(couplings),
        },
        attrs={"/": root_attrs},
    )


COVARIANCES = ("gp", "exact", "sample")


def _covariance(kind, stats, net, X, K, width, orders, n_nets) -> np.ndarray:
    """The estimator covariance of the concatenated correlators at one width."""
    from ..models.couplings import estimator_covariance, gaussian_moments

    k = X.shape[0]
    if kind == "sample":
        return np.asarray(stats.covariance(width, orders=orders), dtype=np.float64)
    if kind == "gp":
        return estimator_covariance(lambda m: gaussian_moments(K, m), k, orders, n_nets)
    from ..theory.exact import MAX_ORDER, exact_correlator_tuples

    need = 2 * max(orders)
    if MAX_ORDER.get(net.name, 0) < need:
        raise NNGPInputError(
            f"covariance='exact' needs exact {need}-point functions, which are available for "
            f"{net.name}-nets only up to order {MAX_ORDER.get(net.name, 0)}; use "
            "covariance='gp' (or fit the 4-pt function alone: orders=(4,))"
        )
    return estimator_covariance(
        lambda m: exact_correlator_tuples(net, X, width, m), k, orders, n_nets
    )


def _cutoff_key(key, cutoff: float):
    """``fold_in`` on the cutoff's float64 bits: a posterior's draws depend on its own cutoff,
    not on its position among the cutoffs fitted alongside."""
    bits = int(np.float64(cutoff).view(np.uint64))
    return jax.random.fold_in(jax.random.fold_in(key, bits >> 32), bits & 0xFFFFFFFF)


def _cutoffs(cutoffs) -> tuple[float, ...]:
    values = np.atleast_1d(np.asarray(cutoffs, dtype=object))
    if values.size == 0:
        raise NNGPInputError("cutoffs must contain at least one positive number")
    out = []
    for v in values.ravel():
        v = finite_float("cutoffs", v, minimum=0.0)
        if v <= 0:
            raise NNGPInputError(f"cutoffs must be positive, got {v}")
        out.append(v)
    return tuple(dict.fromkeys(out))


def _load_stats(stats):
    if isinstance(stats, (str,)) or hasattr(stats, "__fspath__"):
        from ..stats import CorrelatorStats

        return CorrelatorStats.from_netcdf(stats)
    for attr in ("correlator_tuples", "n_nets", "widths", "orders", "X"):
        if not hasattr(stats, attr):
            raise NNGPInputError(
                "stats must be a CorrelatorStats (or a path to one saved with to_netcdf); "
                f"got {type(stats).__name__} without {attr!r}"
            )
    return stats


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress(total, progress):
    if not progress:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="posteriors", unit="fit")
