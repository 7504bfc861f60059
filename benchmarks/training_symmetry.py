"""The symmetry test and the couplings along training (a measurement script, not a test).

Part ``fpr``: false-positive rate at the 5% level of the phi -> -phi test of
:func:`nngp_ppl.inference.training_flow.centred_parity_test` over many seeds, under two
nulls where it holds exactly:
  (a) the untrained ensemble (step 0; Erf-net sigma_w = 1, sigma_b = 0.5, N = 8, k = 4
      inputs, 2000 networks per seed, sampled by the package's sampler): symmetric and
      non-Gaussian;
  (b) the infinite-width trained ensemble (Gaussian with mean mu_t != 0 and covariance
      Sigma_t of the NTK oracle after 40 steps, 2000 draws per seed): a learned mean and
      Gaussian fluctuations, where the raw f -> -f test rejects always.
Part ``coverage``: the per-step coupling posterior at step 0, where the exact target is
known (the untrained ensemble's exact finite-width cumulants, propagator Sigma_0 = K):
90% coverage, mean and sd of z over seeds (Erf-net N = 8, 2000 networks per seed).
Part ``example``: a trained Erf-net at N = 8, 32, 128 on 3 points; the per-step dataset of
:func:`nngp_ppl.inference.training_flow.training_flow` (printed and written to
``training_flow_example.nc``): the step where phi -> -phi breaks, its power, the couplings.

Measured (one run each on the shared 2-core machine, load ~20): see docs/training_flow.md.

    nice -n 10 python benchmarks/training_symmetry.py fpr --seeds 300
    nice -n 10 python benchmarks/training_symmetry.py coverage --seeds 200
    nice -n 10 python benchmarks/training_symmetry.py example
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

X = np.array([-1.0, -0.2, 0.6, 1.3])
X_TRAIN = np.array([-0.8, 0.0, 0.9])
Y_TRAIN = np.array([0.6, -0.4, 1.0])


def _rate(hits):
    hits = np.asarray(hits, float)
    p = hits.mean()
    return f"{p:.3f} +- {np.sqrt(p * (1 - p) / len(hits)):.3f} ({int(hits.sum())}/{len(hits)})"


def fpr(seeds: int, n_nets: int) -> None:
    import nngp_ppl
    from nngp_ppl.inference.symmetry import parity_test
    from nngp_ppl.inference.training_flow import centred_parity_test
    from nngp_ppl.sampling.stats import accumulated_orders
    from nngp_ppl.theory.ntk import training_oracle
    from nngp_ppl.tuples import distinct_tuples

    net = nngp_ppl.ErfNet(sigma_w=1.0, sigma_b=0.5)
    t0 = time.time()
    step0, raw0 = [], []
    for seed in range(seeds):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stats = nngp_ppl.sample_correlators(net, X, [8], n_nets, orders=(1, 2, 3),
                                                seed=seed, progress=False)
        step0.append(centred_parity_test(stats, 8).reject)
        raw0.append(parity_test(stats, 8).reject)
    print(f"(a) step 0, Erf N = 8, {n_nets} nets, {seeds} seeds: centred {_rate(step0)}; "
          f"raw {_rate(raw0)}  [{time.time() - t0:.0f} s]")
    mu, sigma = training_oracle(net, X, X_TRAIN, Y_TRAIN, [40], 1.0)
    rng = np.random.default_rng(0)
    gauss, raw = [], []
    for _ in range(seeds):
        F = rng.multivariate_normal(mu[0], sigma[0], size=n_nets)
        sums = {m: np.prod(F[:, distinct_tuples(4, m)], axis=2).sum(0)
                for m in accumulated_orders((1, 2, 3))}
        stats = nngp_ppl.CorrelatorStats(net, X, (1, 2, 3), 0, {1: sums}, {1: [(0, n_nets)]})
        gauss.append(centred_parity_test(stats, 1).reject)
        raw.append(parity_test(stats, 1).reject)
    print(f"(b) Gaussian with mu_40 = {np.round(mu[0], 3).tolist()}, Sigma_40, {n_nets} draws: "
          f"centred {_rate(gauss)}; raw {_rate(raw)}")


def coverage(seeds: int, n_nets: int) -> None:
    """90% coverage of the per-step posterior at step 0 (the untrained ensemble, whose exact
    finite-width cumulants give the target), per-order scales, over seeds."""
    import nngp_ppl
    from nngp_ppl.inference.training_flow import expansion_block, fit_step, step_theory
    from nngp_ppl.theory.exact import exact_correlator_tuples
    from nngp_ppl.tuples import distinct_tuples

    net = nngp_ppl.ErfNet(sigma_w=1.0, sigma_b=0.5)
    width, cutoff = 8, 10.0
    th = step_theory(net, net, X[:, None], ("g3", "lambda"), cutoff)
    D, cols = th.at(cutoff)[0], th.scale_columns
    K = net.kernel(X)
    wick = np.array([K[a, b] * K[c, d] + K[a, c] * K[b, d] + K[a, d] * K[b, c]
                     for a, b, c, d in distinct_tuples(4, 4)])
    r = np.concatenate([np.zeros(20), exact_correlator_tuples(net, X, width, 4) - wick])
    target = fit_step(r, np.eye(len(r)), D, cols)["median"]
    z, inside = [], []
    t0 = time.time()
    for seed in range(seeds):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stats = nngp_ppl.sample_correlators(net, X, [width], n_nets, orders=(1, 2, 3, 4),
                                                seed=seed, progress=False)
        rh, C, _ = expansion_block(stats, width, (3, 4))
        fit = fit_step(rh, C, D, cols)
        z.append((fit["median"] - target) / fit["sd"])
        inside.append((fit["lower"] <= target) & (target <= fit["upper"]))
    z, inside = np.asarray(z), np.asarray(inside)
    for j, c in enumerate(("g3", "lambda")):
        print(f"step 0, Erf N = {width}, {n_nets} nets, {seeds} seeds, cutoff {cutoff:g}, {c}: "
              f"target {target[j]:.4g}; 90% coverage {inside[:, j].mean():.3f}, mean z "
              f"{z[:, j].mean():+.3f}, sd z {z[:, j].std():.3f}")
    print(f"[{time.time() - t0:.0f} s]")


def example(n_nets: int) -> None:
    import nngp_ppl
    from nngp_ppl.inference.training_flow import training_flow
    from nngp_ppl.training.trainer import train_correlators

    net = nngp_ppl.ErfNet(sigma_w=1.0, sigma_b=0.5)
    steps = [0, 1, 2, 3, 5, 10, 20, 50, 100, 300]
    t0 = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = train_correlators(net, X, [8, 32, 128], n_nets, X_TRAIN, Y_TRAIN, steps, 1.0,
                                orders=(1, 2, 3, 4), seed=0, progress=False)
    t1 = time.time()
    ds = training_flow(run, cutoff=10.0)
    print(f"train {t1 - t0:.0f} s, flow {time.time() - t1:.0f} s")
    ds.to_netcdf("training_flow_example.nc", engine="h5netcdf")
    cols = ["parity_statistic", "parity_dof", "parity_p_value", "odd_connected_max_z",
            "raw_parity_p_value", "mean_max_abs_z", "mean_deviation_rms", "mean_noise_rms"]
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(ds[cols].to_dataframe())
        print(ds[["coupling_median", "coupling_sd", "coupling_point"]].to_dataframe()
              .unstack("coupling"))
        print(ds[["coupling_tau", "mean_deviation_slope"]].to_dataframe())
    print("phi -> -phi breaks at step (per width):",
          dict(zip(ds["width"].values.tolist(), ds["symmetry_break_step"].values.tolist(),
                   strict=True)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["fpr", "coverage", "example"])
    parser.add_argument("--seeds", type=int, default=300)
    parser.add_argument("--n-nets", type=int, default=2000)
    args = parser.parse_args(argv)
    if args.part == "fpr":
        fpr(args.seeds, args.n_nets)
    elif args.part == "coverage":
        coverage(args.seeds, args.n_nets)
    else:
        example(args.n_nets if args.n_nets != 2000 else 20000)


if __name__ == "__main__":
    main()
