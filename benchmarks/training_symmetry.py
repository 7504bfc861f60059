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
90% coverage, mean and sd of z over seeds (Erf-net N = 8, 2000 networks per seed), of the
band ``training_flow`` reports by default (score; ``--band sample``: the Wald band).
Part ``trained-coverage``: the same along training, where no exact oracle exists. The
estimand of the band ``training_flow`` reports at step t and width N is g*_t = B_t r_t
(``fit_step``): B_t from the step's design with propagator Sigma_t, r_t = (kappa_3,
kappa_4) the *true* connected 3- and 4-pt functions of the trained ensemble at width N.
Its noise-free target is estimated by ``training_flow`` on one reference run of
``--reference-nets`` networks per width (seed REFERENCE_SEED, so none of its networks is
in a per-seed run), whose delta-method standard error is printed as a fraction of the
per-seed posterior sd and added in quadrature to z's denominator; at step 0 the reference
is checked against the exact target of ``coverage``. Over ``--seeds`` runs of ``--n-nets``
networks (seeds 0..seeds-1; Erf-net sigma_w = 1, sigma_b = 0.5, X, X_TRAIN, Y_TRAIN, eta =
1, NTK parametrisation, Lambda = 10, the closed-form posterior ``training_flow`` reports by
default): 90% coverage of the reported interval with its binomial s.e., mean z (with its
s.e.) and sd z, per step, width and coupling; over all seeds, and, where
``coupling_rounding_limited`` flags some seeds but not all, over the unflagged and the
flagged ones. The same band computed from the same networks' float32 outputs multiplied
and summed in float64 (``trained_outputs``) is printed beside it: the difference is what
the float32 products of the stored sums cost (docs/training_flow.md); ``--no-float64`` skips
it. ``--band`` measures several of ``training_flow``'s bands on the same runs (score, the
default; sample, the Wald band of the sampled delta-method covariance; gaussian,
cumulants4: Wald bands of model covariances), and ``--diagnose`` separates a bias of the
estimate (mean error against the seed-to-seed spread) from an estimate correlated with its
own stated sd (corr(err, sd), and a mean z the mean error does not explain). z is the
target's distance from the median over the band's sd on the target's side (its half-width
there over the normal quantile: the stated sd for a symmetric band).
Part ``gaussian-coverage``: the same bands on the N -> infinity trained ensemble, drawn as
a Gaussian with the oracle's mu_t and Sigma_t (``--n-nets`` draws per seed and step),
where the target is exact: kappa_3 = kappa_4 = 0, so g* = 0 at every step.
Part ``example``: a trained Erf-net at N = 8, 32, 128 on 3 points; the per-step dataset of
:func:`nngp_ppl.inference.training_flow.training_flow` (printed and written to
``training_flow_example.nc``): the step where phi -> -phi breaks, its power, the couplings.

Measured (one run each on the shared 2-core machine, load ~20): see docs/training_flow.md.

    nice -n 10 python benchmarks/training_symmetry.py fpr --seeds 300
    nice -n 10 python benchmarks/training_symmetry.py coverage --seeds 200
    nice -n 5 python benchmarks/training_symmetry.py trained-coverage --seeds 1000 \
        --reference-nets 4000000 --reference-file ref.nc  # 19 min
    nice -n 10 python benchmarks/training_symmetry.py trained-coverage --seeds 1000 \
        --reference-nets 4000000 --reference-file ref.nc --band score sample \
        --no-float64 --diagnose
    nice -n 5 python benchmarks/training_symmetry.py trained-coverage --seeds 400 \
        --n-nets 8000 --reference-nets 4000000 --reference-file ref.nc
    nice -n 5 python benchmarks/training_symmetry.py gaussian-coverage --seeds 1000  # 4 min
    nice -n 10 python benchmarks/training_symmetry.py gaussian-coverage --seeds 1000 \
        --band score sample gaussian cumulants4
    nice -n 5 python benchmarks/training_symmetry.py gaussian-coverage --seeds 400 --n-nets 8000
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


def _exact_step0_target(net, width: int, cutoff: float) -> np.ndarray:
    """(g3, lambda) estimand g* = B r at step 0 from the exact finite-width cumulants of the
    untrained ensemble (kappa_3 = 0; kappa_4 = exact G_4 minus the Wick sums of K), with the
    propagator Sigma_0 = K."""
    from nngp_ppl.inference.training_flow import fit_step, step_theory
    from nngp_ppl.theory.exact import exact_correlator_tuples
    from nngp_ppl.tuples import distinct_tuples

    th = step_theory(net, net, X[:, None], ("g3", "lambda"), cutoff)
    D, cols = th.at(cutoff)[0], th.scale_columns
    K = net.kernel(X)
    wick = np.array([K[a, b] * K[c, d] + K[a, c] * K[b, d] + K[a, d] * K[b, c]
                     for a, b, c, d in distinct_tuples(4, 4)])
    r = np.concatenate([np.zeros(20), exact_correlator_tuples(net, X, width, 4) - wick])
    return fit_step(r, np.eye(len(r)), D, cols)["median"]


def coverage(seeds: int, n_nets: int, band: str = "score") -> None:
    """90% coverage of the per-step posterior at step 0 (the untrained ensemble, whose exact
    finite-width cumulants give the target), per-order scales, over seeds."""
    import nngp_ppl
    from nngp_ppl.inference.training_flow import (
        expansion_block,
        fit_step,
        score_covariance,
        step_theory,
    )

    net = nngp_ppl.ErfNet(sigma_w=1.0, sigma_b=0.5)
    width, cutoff = 8, 10.0
    th = step_theory(net, net, X[:, None], ("g3", "lambda"), cutoff)
    D, cols = th.at(cutoff)[0], th.scale_columns
    target = _exact_step0_target(net, width, cutoff)
    z, inside = [], []
    t0 = time.time()
    for seed in range(seeds):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stats = nngp_ppl.sample_correlators(net, X, [width], n_nets, orders=(1, 2, 3, 4),
                                                seed=seed, progress=False)
        rh, C, _ = expansion_block(stats, width, (3, 4))
        # the band training_flow reports by default (band="score"); --band sample: Wald
        cov_at = None if band == "sample" else score_covariance(stats, width, (3, 4))
        fit = fit_step(rh, C, D, cols, cov_at=cov_at)
        z.append((fit["median"] - target)
                 / _side_sd(fit["median"], fit["lower"], fit["upper"], target))
        inside.append((fit["lower"] <= target) & (target <= fit["upper"]))
    z, inside = np.asarray(z), np.asarray(inside)
    for j, c in enumerate(("g3", "lambda")):
        print(f"step 0, Erf N = {width}, {n_nets} nets, {seeds} seeds, cutoff {cutoff:g}, {c}: "
              f"target {target[j]:.4g}; 90% coverage {inside[:, j].mean():.3f}, mean z "
              f"{z[:, j].mean():+.3f}, sd z {z[:, j].std():.3f}")
    print(f"[{time.time() - t0:.0f} s]")


#: Seed of the reference run of ``trained-coverage``; the per-seed runs use seeds 0..seeds-1.
#: Network j at width N gets the key fold_in(fold_in(PRNGKey(seed), N), j)
#: (nngp_ppl.ensembles.core.network_keys), so another seed draws other networks.
REFERENCE_SEED = 10**6


def _float64_run(net, widths, n_nets, seed, setup):
    """The same networks as ``train_correlators(..., seed=seed)`` (``trained_outputs`` draws
    and trains them with the same keys), their float32 outputs multiplied and summed in
    float64: the sums the stored float32 products approximate (docs/training_flow.md, float32
    rounding), as a TrainedCorrelators that ``training_flow`` reads."""
    import nngp_ppl
    from nngp_ppl.sampling.stats import accumulated_orders
    from nngp_ppl.training.trainer import TrainedCorrelators, trained_outputs
    from nngp_ppl.tuples import distinct_tuples

    orders = (1, 2, 3, 4)
    sums = [{} for _ in setup.steps]
    for w in widths:
        F = trained_outputs(net, X, w, n_nets, X_TRAIN, Y_TRAIN, setup.steps,
                            setup.learning_rate, seed=seed).astype(np.float64)
        for s in range(len(setup.steps)):
            sums[s][w] = {m: np.prod(F[s][:, distinct_tuples(len(X), m)], axis=2).sum(0)
                          for m in accumulated_orders(orders)}
    return TrainedCorrelators(setup, [
        nngp_ppl.CorrelatorStats(net, X, orders, seed, per_step,
                                 {w: [(0, n_nets)] for w in widths})
        for per_step in sums])


def _band_line(z, inside, label):
    ok = np.isfinite(z)
    zz = z[ok]
    lost = f", {int((~ok).sum())} with sd 0 or NaN" if (~ok).any() else ""
    if not zz.size:
        return f"{label}: no seeds"
    return (f"{label}: 90% coverage {_rate(inside)}, mean z {zz.mean():+.3f} +- "
            f"{zz.std() / np.sqrt(zz.size):.3f}, sd z {zz.std():.3f}{lost}")


def _side_sd(median, lower, upper, target):
    """The band's sd on the target's side: its half-width there over the normal quantile
    (the stated sd for the symmetric Wald band; for the score band, asymmetric, the sd of
    the z that the band inverts at the target, so |z| <= q exactly where it covers)."""
    from scipy.stats import norm

    from nngp_ppl.inference.training_flow import INTERVAL

    q = norm.ppf(0.5 + INTERVAL / 2)
    return np.where(target >= median, upper - median, median - lower) / q


def _diagnosis(err, sd):
    """Separate the two reasons a band's z can be off centre: (a) a bias of the estimate,
    mean(err) against the seed-to-seed spread sd(err), and (b) an estimate correlated with
    its own stated sd, a mean z that mean(err) / rms(sd) does not explain; with the stated
    sd against the true spread and corr(err, sd). Standard errors: 1/sqrt(S) for a mean in
    units of the spread and for a correlation, spread/sqrt(2S) for the spread."""
    ok = np.isfinite(err) & np.isfinite(sd) & (sd > 0)
    err, sd = err[ok], sd[ok]
    S = err.size
    spread, rms = err.std(), np.sqrt(np.mean(sd**2))
    z = err / sd
    small = sd < np.median(sd)
    return (f"bias/spread {err.mean() / spread:+.3f} +- {1 / np.sqrt(S):.3f}; "
            f"mean err/rms sd {err.mean() / rms:+.3f} +- {spread / rms / np.sqrt(S):.3f}; "
            f"spread/rms sd {spread / rms:.3f} +- {spread / rms / np.sqrt(2 * S):.3f}; "
            f"corr(err, sd) {np.corrcoef(err, sd)[0, 1]:+.3f} +- {1 / np.sqrt(S):.3f}; "
            f"mean z {z.mean():+.3f} +- {z.std() / np.sqrt(S):.3f}; sd z "
            f"(small sd half / large) {z[small].std():.3f} / {z[~small].std():.3f}")


def trained_coverage(seeds: int, n_nets: int, reference_nets: int, widths, steps,
                     reference_file=None, float64: bool = True, bands=None,
                     diagnose: bool = False) -> None:
    """90% coverage of the per-step coupling bands of ``training_flow`` along training,
    against the noise-free estimand of the trained ensemble at width N (module docstring)."""
    import os

    import nngp_ppl
    from nngp_ppl.inference.training_flow import training_flow
    from nngp_ppl.training.trainer import TrainedCorrelators, train_correlators

    if not 0 < seeds <= REFERENCE_SEED:
        raise SystemExit(f"--seeds must lie in 1..{REFERENCE_SEED} (the reference's seed)")
    net = nngp_ppl.ErfNet(sigma_w=1.0, sigma_b=0.5)
    cutoff = 10.0
    t0 = time.time()
    reference = None
    if reference_file is not None and os.path.exists(reference_file):
        reference = TrainedCorrelators.from_netcdf(reference_file)
        first = reference.at_step(reference.steps[0])
        if (list(reference.steps) != list(steps) or list(first.widths) != list(widths)
                or first.seed != REFERENCE_SEED
                or any(first.n_nets(w) != reference_nets for w in widths)):
            raise SystemExit(f"{reference_file} is another reference run ({reference!r}, "
                             f"{first.n_nets(widths[0])} networks, seed {first.seed})")
    if reference is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference = train_correlators(
                net, X, widths, reference_nets, X_TRAIN, Y_TRAIN, steps, 1.0,
                orders=(1, 2, 3, 4), seed=REFERENCE_SEED, progress=False,
                checkpoint=None if reference_file is None else reference_file + ".ckpt",
                resume=reference_file is not None)
        if reference_file is not None:
            reference.to_netcdf(reference_file)
    # the reference's own band: at 4e6 networks the sampled moments of orders 5..8 are
    # precise, and its se is a few % of a per-seed sd
    ref = training_flow(reference, cutoff=cutoff, band="sample")
    target = ref["coupling_median"].values      # (S, W, C): B_t r_t of the reference
    target_se = ref["coupling_sd"].values       # its delta-method standard error
    couplings = [str(c) for c in ref["coupling"].values]
    print(f"reference: {reference_nets} networks per width, seed {REFERENCE_SEED}  "
          f"[{time.time() - t0:.0f} s]", flush=True)
    for i, w in enumerate(widths):
        if 0 in steps:
            exact = _exact_step0_target(net, w, cutoff)
            s0 = list(steps).index(0)
            print(f"  check, step 0, N = {w}: reference (g3, lambda) = "
                  f"{np.array2string(target[s0, i], precision=4)} +- "
                  f"{np.array2string(target_se[s0, i], precision=2)}, exact "
                  f"{np.array2string(exact, precision=4)}: z = "
                  f"{np.array2string((target[s0, i] - exact) / target_se[s0, i], precision=2)}")

    keys = ("coupling_median", "coupling_sd", "coupling_lower", "coupling_upper")
    bands = list(bands or [None])
    paths = {f"package{'' if b is None else ', band ' + b}": b for b in bands}
    got = {name: {k: [] for k in keys + ("coupling_rounding_limited",)} for name in paths}
    if float64:
        got["float64 products"] = {k: [] for k in keys}
    t1 = time.time()
    for seed in range(seeds):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run = train_correlators(net, X, widths, n_nets, X_TRAIN, Y_TRAIN, steps, 1.0,
                                    orders=(1, 2, 3, 4), seed=seed, progress=False)
            dss = {name: training_flow(run, cutoff=cutoff,
                                       **({} if b is None else {"band": b}))
                   for name, b in paths.items()}
            if float64:
                dss["float64 products"] = training_flow(
                    _float64_run(net, widths, n_nets, seed, run.setup), cutoff=cutoff,
                    **({} if bands[0] is None else {"band": bands[0]}))
        for name, d in got.items():
            for k in d:
                d[k].append(dss[name][k].values)
        if seed == 0:
            print(f"  one seed: {time.time() - t1:.1f} s", flush=True)
    got = {name: {k: np.asarray(v) for k, v in d.items()} for name, d in got.items()}
    pkg = next(iter(got.values()))
    print(f"seeds: {seeds} x {n_nets} networks per width  [{time.time() - t1:.0f} s]")
    if float64:
        f64 = got["float64 products"]
        # the two paths see the same networks: their point values agree, only the error
        # bars differ (float32 products lose the variances, docs/training_flow.md)
        same = np.nanmax(np.abs(pkg["coupling_median"] - f64["coupling_median"])
                         / f64["coupling_sd"])
        print(f"max |median(float32 sums) - median(float64)| / sd = {same:.1e}")
    for s, step in enumerate(steps):
        for i, w in enumerate(widths):
            for j, c in enumerate(couplings):
                tgt, tse = target[s, i, j], target_se[s, i, j]
                flag = pkg["coupling_rounding_limited"][:, s, i].astype(bool)
                sd_med = np.nanmedian(pkg["coupling_sd"][:, s, i, j])
                print(f"step {step}, Erf N = {w}, {c}: target {tgt:.4g} +- {tse:.2g} "
                      f"(se / median per-seed sd {tse / sd_med:.3f}); rounding-flagged "
                      f"{int(flag.sum())}/{seeds}")
                for name, d in got.items():
                    med = d["coupling_median"][:, s, i, j]
                    lo, hi = d["coupling_lower"][:, s, i, j], d["coupling_upper"][:, s, i, j]
                    sd = _side_sd(med, lo, hi, tgt)
                    with np.errstate(divide="ignore", invalid="ignore"):
                        z = (med - tgt) / np.sqrt(sd**2 + tse**2)
                    inside = (lo <= tgt) & (tgt <= hi)
                    print("    " + _band_line(z, inside, f"{name}, all"))
                    if diagnose:
                        print("      " + _diagnosis(med - tgt, np.sqrt(sd**2 + tse**2)))
                    if name == next(iter(got)) and 0 < flag.sum() < seeds:
                        print("    " + _band_line(z[~flag], inside[~flag],
                                                  "package, unflagged"))
                        print("    " + _band_line(z[flag], inside[flag], "package, flagged"))
    print(f"[{time.time() - t0:.0f} s]")


def gaussian_coverage(seeds: int, n_nets: int, steps, bands=None) -> None:
    """90% coverage of the same bands on the N -> infinity trained ensemble, Gaussian with
    the oracle's mu_t and Sigma_t, where the target is exact: kappa_3 = kappa_4 = 0, so
    g* = 0 (module docstring)."""
    import nngp_ppl
    from nngp_ppl.inference.training_flow import training_flow
    from nngp_ppl.sampling.stats import accumulated_orders
    from nngp_ppl.theory.ntk import training_oracle
    from nngp_ppl.training.trainer import TrainedCorrelators, training_setup
    from nngp_ppl.tuples import distinct_tuples

    net = nngp_ppl.ErfNet(sigma_w=1.0, sigma_b=0.5)
    setup = training_setup(net, X_TRAIN, Y_TRAIN, steps, 1.0)
    mu, sigma = training_oracle(net, X, X_TRAIN, Y_TRAIN, setup.steps, 1.0)
    orders = (1, 2, 3, 4)
    bands = list(bands or [None])
    t0 = time.time()
    out = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        stats = []
        for s in range(len(setup.steps)):
            F = rng.multivariate_normal(mu[s], sigma[s], size=n_nets)
            sums = {m: np.prod(F[:, distinct_tuples(len(X), m)], axis=2).sum(0)
                    for m in accumulated_orders(orders)}
            # width label 1: the NTK-parametrised oracle does not depend on N
            stats.append(nngp_ppl.CorrelatorStats(net, X, orders, seed, {1: sums},
                                                  {1: [(0, n_nets)]}))
        row = []
        for b in bands:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = training_flow(TrainedCorrelators(setup, stats), cutoff=10.0,
                                   **({} if b is None else {"band": b}))
            row.append([ds[f"coupling_{k}"].values[:, 0]
                        for k in ("median", "sd", "lower", "upper")])
        out.append(row)
    out = np.asarray(out)                                    # (seeds, bands, 4, S, C)
    for s, step in enumerate(setup.steps):
        for j, c in enumerate(ds["coupling"].values):
            for b, band in enumerate(bands):
                med, _, lo, hi = (out[:, b, q, s, j] for q in range(4))
                sd = _side_sd(med, lo, hi, 0.0)
                print(f"step {step}, Gaussian (mu_{step}, Sigma_{step}), {n_nets} draws, "
                      f"{seeds} seeds, {c} (target 0), band {band or 'default'}: "
                      + _band_line(med / sd, (lo <= 0) & (0 <= hi), "all"))
                print("    " + _diagnosis(med, sd))
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
    parser.add_argument("part", choices=["fpr", "coverage", "trained-coverage",
                                           "gaussian-coverage", "example"])
    parser.add_argument("--seeds", type=int, default=300)
    parser.add_argument("--n-nets", type=int, default=2000)
    parser.add_argument("--reference-nets", type=int, default=2_000_000,
                        help="trained-coverage: networks per width of the reference run")
    parser.add_argument("--reference-file",
                        help="trained-coverage: netCDF of the reference run, read if it "
                             "exists, written (with a resumable checkpoint beside it) if not")
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 32],
                        help="trained-coverage: the widths N")
    parser.add_argument("--steps", type=int, nargs="+", default=[0, 5, 20, 50],
                        help="trained-coverage, gaussian-coverage: the recorded steps")
    parser.add_argument("--band", nargs="+",
                        choices=["score", "sample", "gaussian", "cumulants4"],
                        help="trained-coverage, gaussian-coverage: training_flow's bands "
                             "(default: its default), each measured on the same runs; "
                             "coverage: the first one")
    parser.add_argument("--no-float64", action="store_true",
                        help="trained-coverage: skip the float64-products comparison")
    parser.add_argument("--diagnose", action="store_true",
                        help="trained-coverage: print the bias / sd-correlation diagnosis "
                             "(gaussian-coverage always prints it)")
    parser.add_argument("--quick", action="store_true",
                        help="trained-coverage: 10 seeds, a 10^5-network reference")
    args = parser.parse_args(argv)
    if args.part == "trained-coverage":
        if args.quick:
            args.seeds, args.reference_nets = 10, 100_000
        trained_coverage(args.seeds, args.n_nets, args.reference_nets, args.widths,
                         args.steps, args.reference_file, not args.no_float64, args.band,
                         args.diagnose)
    elif args.part == "gaussian-coverage":
        gaussian_coverage(args.seeds, args.n_nets, args.steps, args.band)
    elif args.part == "fpr":
        fpr(args.seeds, args.n_nets)
    elif args.part == "coverage":
        coverage(args.seeds, args.n_nets, (args.band or ["score"])[0])
    else:
        example(args.n_nets if args.n_nets != 2000 else 20000)


if __name__ == "__main__":
    main()
