"""False alarms and power of the R-hat part of the diagnostics gate, fixed 1.01 vs the
ESS-aware limit (:mod:`nngp_ppl.inference.diagnostics`), at 4 chains x 1000 draws.

Three kinds of well-mixed posteriors, where every alarm is false:

1. ``ar1``: stationary Gaussian AR(1) chains (exactly one distribution, autocorrelation
   chosen to give a bulk ESS of about 450 / 700 / 1300 of 4000 draws, the range seen for
   the coupling posteriors), many seeds;
2. ``nuts``: the package's own compiled NUTS (:func:`nngp_ppl.inference.sample_latent`,
   500 warm-up steps, dispersed starts) on Gaussian latent problems of 50 correlators,
   judged on 5 linear functionals (like the couplings) and the rms of the draws (like
   ``spread``), per problem;
3. ``real`` (``--real P``): P independent NUTS runs of one real coupling posterior (the
   demo's Erf-net run at width 5, 588 latent correlators; needs ``demo_out/run_erf.nc``),
   judged on λ at cutoffs 10, 100, 1000 and on the rms deviation.

Power: AR(1) chains (ESS ~ 700) of which one chain's mean is shifted by delta posterior
standard deviations, the smallest non-mixing R-hat is meant to see.

Run: ``.venv/bin/python benchmarks/rhat_gate.py [--quick] [--real 8]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np

CHAINS, DRAWS, WARMUP = 4, 1000, 500


def ar1(rng, n_sets, rho, shift=0.0):
    """(n_sets, chains, draws) stationary AR(1) with unit marginal variance."""
    eps = rng.normal(size=(n_sets, CHAINS, DRAWS))
    x = np.empty_like(eps)
    x[..., 0] = eps[..., 0]
    c = np.sqrt(1 - rho**2)
    for t in range(1, DRAWS):
        x[..., t] = rho * x[..., t - 1] + c * eps[..., t]
    x[:, 0, :] += shift
    return x


ALPHAS = (1e-2, 1e-3)


def verdicts(draws):
    """R-hat failures, fixed 1.01 and ESS-aware at each of ALPHAS; the whole gate's failures
    (with bulk ESS >= 400); r_hat; bulk ESS -- for draws (..., chain, draw)."""
    from arviz_stats.base import array_stats

    from nngp_ppl.inference.diagnostics import ESS_MIN, RHAT_MAX, rhat_components

    ess = np.asarray(array_stats.ess(draws, method="bulk"))
    fails = [rhat_components(draws, 0.0)["r_hat"] > RHAT_MAX]
    rh = fails[0]
    for alpha in ALPHAS:
        c = rhat_components(draws, alpha)
        fails.append(~c["rhat_ok"])
        rh = c["r_hat"]
    low = ess < ESS_MIN
    return fails, [f | low for f in fails], rh, ess


def report(label, result, per_problem=None):
    fails, gate, rh, ess = result
    names = ["fixed 1.01"] + [f"alpha={a:g}" for a in ALPHAS]
    print(f"{label:<30} n={rh.size:>5}  max R-hat {np.nanmax(rh):.4f}  median bulk ESS "
          f"{np.nanmedian(ess):5.0f}\n    R-hat fails: "
          + ", ".join(f"{n} {f.mean():6.2%}" for n, f in zip(names, fails, strict=True))
          + "\n    whole gate (with ESS >= 400) fails: "
          + ", ".join(f"{n} {f.mean():6.2%}" for n, f in zip(names, gate, strict=True)),
          flush=True)
    if per_problem is not None:
        print(f"    per problem ({rh.shape[0]}), whole gate: " + ", ".join(
            f"{n} {f.any(per_problem).mean():6.2%}" for n, f in zip(names, gate, strict=True)),
            flush=True)


def nuts_gaussian(n_problems, T=50, seed=0):
    import jax

    from nngp_ppl.inference import sample_latent
    from nngp_ppl.inference.models.couplings import latent_arrays

    rng = np.random.default_rng(seed)
    arrays = [latent_arrays(rng.normal(size=T), np.eye(T)) for _ in range(n_problems)]
    import jax.numpy as jnp
    batch = type(arrays[0])(*(jnp.stack(f) for f in zip(*arrays, strict=True)))
    t0 = time.perf_counter()
    r, _ = sample_latent(batch, np.stack([np.eye(T)] * n_problems), jax.random.PRNGKey(seed),
                         num_chains=CHAINS, num_samples=DRAWS, num_warmup=WARMUP)
    print(f"  NUTS: {n_problems} problems in {time.perf_counter() - t0:.1f} s", flush=True)
    proj = rng.normal(size=(T, 5)) / np.sqrt(T)
    lin = np.einsum("pcdt,tk->pkcd", r, proj)
    rms = np.sqrt(np.mean((r - r.mean((1, 2), keepdims=True)) ** 2, -1))[:, None]
    return np.concatenate([lin, rms], axis=1)  # (problem, 6, chain, draw)


def real_posteriors(n_problems, path="demo_out/run_erf.nc", width=5, seed=0):
    import jax
    import jax.numpy as jnp

    from nngp_ppl.inference import sample_latent
    from nngp_ppl.inference.couplings import _theory, _validate, _width_data
    from nngp_ppl.inference.models.couplings import latent_arrays

    cutoffs = (10.0, 100.0, 1000.0)
    setup = _validate(path, None, None, cutoffs, ("lambda",), (width,), None, CHAINS, DRAWS,
                      WARMUP, 10.0, "gp", 100)
    stats, net, X, cutoffs, couplings, widths, orders, data_orders, noise = setup
    theory, est = _theory(net, X, couplings, orders, data_orders, "full", cutoffs, 1)
    run = _width_data(stats, theory, width, noise, 1e-6)
    a = latent_arrays(run["residual"], run["tril"], 10.0, run["df"])
    batch = type(a)(*(jnp.stack([f] * n_problems) for f in a))
    t0 = time.perf_counter()
    r, _ = sample_latent(batch, np.stack([run["tril"]] * n_problems), jax.random.PRNGKey(seed),
                         num_chains=CHAINS, num_samples=DRAWS, num_warmup=WARMUP,
                         problem_ids=range(1000, 1000 + n_problems))
    print(f"  NUTS: {n_problems} real posteriors in {time.perf_counter() - t0:.1f} s",
          flush=True)
    lam = np.moveaxis(np.asarray(est.couplings(r))[..., 0], -1, 1)  # (P, L, chain, draw)
    rms = np.sqrt(np.mean((r - r.mean((1, 2), keepdims=True)) ** 2, -1))[:, None]
    return np.concatenate([lam, rms], axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer seeds")
    parser.add_argument("--real", type=int, default=0, help="real posteriors to run")
    args = parser.parse_args()
    rng = np.random.default_rng(20261206)
    n = 500 if args.quick else 4000
    print(f"{CHAINS} chains x {DRAWS} draws; false alarms on well-mixed chains:")
    for rho in (0.8, 0.7, 0.5):
        report(f"ar1 rho={rho}", verdicts(ar1(rng, n, rho)))
    d = nuts_gaussian(20 if args.quick else 100)
    report("nuts gaussian, 6 functionals", verdicts(d), 1)
    if args.real:
        d = real_posteriors(args.real)
        report("real erf N=5, lambda x3 + rms", verdicts(d), 1)
    print("power: one chain of four shifted by delta posterior sd (ar1 rho=0.7):")
    for delta in (0.1, 0.2, 0.3, 0.5):
        report(f"shift {delta}", verdicts(ar1(rng, n // 4, 0.7, delta)))


if __name__ == "__main__":
    main()
