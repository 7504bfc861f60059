r"""Calibration of the coupling posteriors on real sampled networks.

For one ensemble, width and coupling set, and each of several independent seeds, networks
are sampled with :func:`nngp_ppl.sample_correlators`, the posterior of
:func:`~nngp_ppl.infer_couplings`'s model is drawn by NUTS with the same noise-model choice,
estimand and sampler, and its central interval at each cutoff is compared with the declared
estimand evaluated on the *exact* finite-width correlators
(:func:`nngp_ppl.theory.exact.exact_correlator_tuples`): the couplings
:math:`g^* = B(\Lambda) r_{exact}` and their running :math:`\beta^* = dB/d\log\Lambda\;
r_{exact}`. Never data simulated from the model: the networks are real, the target is exact.

An odd basis (``("g3", "lambda")``) is fitted to the odd correlators too (orders 1, 3, 4;
zero-mean ensembles, where g3's target is exactly 0 and its interval must cover 0 at the
nominal rate).

Returned per cutoff, quantity (``lambda``, ``kappa``, ``beta_lambda`` ...):

* ``cover``: fraction of seeds whose central ``prob`` interval contains the target;
* ``mean_z``, ``sd_z``: :math:`z = (\text{posterior mean} - \text{target})/\text{posterior
  sd}` over the seeds (1 and 0 for a calibrated normal posterior);
* ``sharp``: mean posterior sd over the seed-to-seed sd of the posterior mean (1 when the
  intervals are as wide as the real spread, above 1 when wider);
* ``noise``: the noise models that ``"auto"`` chose; ``tails``: whether a heavy-tail
  warning fired while sampling, ``tail_seeds``: at how many seeds (the warnings are
  gathered into one :class:`~nngp_ppl.HeavyTailWarning` naming that count, not hidden);
* the NUTS diagnostics of each seed's posterior of the quantity, by the gate of
  :mod:`~nngp_ppl.inference.diagnostics`: ``r_hat_max`` (worst rank-normalised R-hat over
  the seeds), ``ess_bulk_min``, ``divergences`` (over all seeds; the whole posterior's),
  ``gate_failures`` (seeds whose posterior fails the gate for this quantity);
* ``seconds``: wall time of the whole calibration (network sampling and NUTS), and
  ``seconds_nuts`` of its NUTS part.

The seeds share one compiled sampler call (:func:`~nngp_ppl.inference.couplings.
sample_latent` batches independent problems).
"""

from __future__ import annotations

import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from arviz_stats.base import array_stats

from .. import _checks
from .._checks import NNGPInputError, positive_int
from ..sampling.sampler import sample_correlators
from ..sampling.stats import HeavyTailWarning
from .couplings import sample_latent
from .diagnostics import ESS_MIN, rhat_components
from .models.couplings import latent_arrays, stable_cholesky
from .problem import (
    EFTTheory,
    choose_noise,
    coupling_names,
    default_data_orders,
    likelihood_df,
    missed_tail_mass,
    noise_covariance,
    perturbative_order,
)

__all__ = [
    "calibrate",
]


def calibrate(net, X, width: int, couplings=("lambda",), cutoffs=(10.0, 100.0), *,
              seeds=range(100), n_nets: int = 100_000, prob: float = 0.9,
              covariance: str = "auto", num_samples: int = 500, num_warmup: int = 300,
              batch: int = 25, order=1) -> list[dict]:
    """Coverage of the posteriors over ``seeds`` (module docstring); one dict per
    perturbative order, cutoff and quantity. ``order``: 1, 2 or (1, 2) — the orders share
    the NUTS draws of r and differ only in the estimand's map
    (:mod:`nngp_ppl.inference.estimators`),
    each judged against its own estimand on the exact correlators."""

    X = _checks.inputs("X", X, getattr(net, "d_in", None))
    cutoffs = tuple(float(c) for c in _checks.cutoffs("cutoffs", cutoffs, _checks.extent(X)))
    seeds = [int(s) for s in seeds]
    if len(seeds) < 2:
        raise NNGPInputError("seeds must hold at least two seeds to measure a coverage")
    n_nets = positive_int("n_nets", n_nets)
    pert = tuple(perturbative_order(o) for o in np.atleast_1d(order))
    couplings = coupling_names(couplings)
    # The orders the fitted basis needs (the 6-pt function only with κ).
    data_orders = tuple(n for n in default_data_orders(couplings)
                        if n != 6 or "kappa" in couplings)
    theory = EFTTheory.build(net, X, couplings, None, data_orders, max_cutoff=max(cutoffs))
    orders = theory.data_orders
    exact_r = theory.exact_deviation(width)
    ests = [EFTTheory.build(net, X, couplings, None, orders, max_cutoff=max(cutoffs),
                            order=o).estimator(cutoffs) for o in pert]
    # (order, L, 2C): the couplings and their running on the exact correlators.
    target = np.stack([np.concatenate([e.couplings(exact_r), e.beta(exact_r)], axis=-1)
                       for e in ests])
    names = list(theory.couplings) + [f"beta_{c}" for c in theory.couplings]
    exact_tril, used, tails = None, set(), []
    means, sds, inside, diag = [], [], [], []
    t_start, t_nuts = time.perf_counter(), 0.0
    for lo in range(0, len(seeds), batch):
        chunk = seeds[lo:lo + batch]
        arrays, trils = [], []
        for seed in chunk:
            stats, kind, tail = _seed_stats(net, X, width, n_nets, orders, seed, covariance,
                                            theory)
            tails += [tail] if tail else []
            used.add(kind)
            if kind == "exact":
                if exact_tril is None:
                    exact_tril = stable_cholesky(noise_covariance(kind, theory, width,
                                                                  n_nets))[0]
                trils.append(exact_tril)
            else:
                trils.append(stable_cholesky(noise_covariance(kind, theory, width, n_nets,
                                                              stats))[0])
            y = np.concatenate([stats.correlator_tuples(n, width) for n in orders])
            df, _ = likelihood_df(stats, width, theory.orders, kind)
            arrays.append(latent_arrays(y - theory.gp, trils[-1], df=df))
        stacked = type(arrays[0])(*(jnp.stack(f) for f in zip(*arrays, strict=True)))
        t0 = time.perf_counter()
        r, nuts = sample_latent(stacked, np.stack(trils), jax.random.PRNGKey(0),
                                num_samples=num_samples, num_warmup=num_warmup,
                                problem_ids=chunk)
        t_nuts += time.perf_counter() - t0
        q = np.stack([np.concatenate([e.couplings(r), e.beta(r)], axis=-1)
                      for e in ests], axis=-3)  # (seed, chain, draw, order, L, 2C)
        diag.append(_seed_diagnostics(q, nuts["diverging"]))
        flat = q.reshape(len(chunk), -1, *q.shape[3:])  # (seed, draw, order, L, 2C)
        lo_q, hi_q = np.quantile(flat, [(1 - prob) / 2, (1 + prob) / 2], axis=1)
        means.append(flat.mean(axis=1))
        sds.append(flat.std(axis=1))
        inside.append((lo_q <= target) & (target <= hi_q))
    means, sds, inside = (np.concatenate(a) for a in (means, sds, inside))
    diag = {k: np.concatenate([d[k] for d in diag]) for k in diag[0]}
    seconds = time.perf_counter() - t_start
    if tails:
        warnings.warn(f"heavy tails at {len(tails)} of {len(seeds)} seeds (first: {tails[0]})",
                      HeavyTailWarning, stacklevel=2)
    z = (means - target) / sds
    rows = []
    for o, po in enumerate(pert):
        for j, cut in enumerate(cutoffs):
            for c, name in enumerate(names):
                at = (slice(None), o, j, c)
                rows.append({
                    "order": po, "cutoff": float(cut), "quantity": name,
                    "target": float(target[o, j, c]), "cover": float(inside[at].mean()),
                    "mean_z": float(z[at].mean()), "sd_z": float(z[at].std(ddof=1)),
                    "sharp": float(sds[at].mean() / means[at].std(ddof=1)),
                    "noise": "+".join(sorted(used)), "tails": bool(tails),
                    "tail_seeds": len(tails), "seeds": len(seeds),
                    "r_hat_max": float(np.nanmax(diag["r_hat"][at])),
                    "ess_bulk_min": float(np.nanmin(diag["ess_bulk"][at])),
                    "divergences": int(diag["divergences"].sum()),
                    "gate_failures": int((~diag["ok"][at]).sum()),
                    "seconds": seconds, "seconds_nuts": t_nuts,
                })
    return rows


def _seed_diagnostics(q, diverging) -> dict:
    """Per seed and (order, cutoff, quantity) of draws ``q`` (seed, chain, draw, ...): the
    gate's R-hat verdict (:func:`~nngp_ppl.inference.diagnostics.rhat_components`), bulk
    ESS, the seed's divergent transitions and whether all three pass."""

    draws = np.moveaxis(q, (1, 2), (-2, -1))  # (seed, order, L, 2C, chain, draw)
    rh = rhat_components(draws)
    ess = np.asarray(array_stats.ess(draws, method="bulk"))
    div = np.asarray(diverging).reshape(len(q), -1).sum(axis=1)
    ok = rh["rhat_ok"] & ~(ess < ESS_MIN) & (div == 0)[:, None, None, None]
    return {"r_hat": rh["r_hat"], "ess_bulk": ess, "divergences": div, "ok": ok}


def _seed_stats(net, X, width, n_nets, orders, seed, covariance, theory):
    """One seed's networks: ``(stats, noise model, first heavy-tail message or None)``;
    other warnings pass on."""

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # The estimator covariance is accumulated only where the noise model needs it; the
        # same seed gives the same networks either way.
        stats = sample_correlators(net, X, [width], n_nets, orders=orders, seed=seed,
                                   progress=False, covariance=False)
        kind = choose_noise(covariance, net, orders, stats, orders=theory.orders)
        if kind == "exact" and covariance == "auto" and missed_tail_mass(
                stats, orders, orders=theory.orders):
            kind = "sample"
        if kind == "sample":
            stats = sample_correlators(net, X, [width], n_nets, orders=orders, seed=seed,
                                       progress=False)
    tail = next((str(w.message) for w in caught if issubclass(w.category, HeavyTailWarning)),
                None)
    for w in caught:
        if not issubclass(w.category, HeavyTailWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return stats, kind, tail
