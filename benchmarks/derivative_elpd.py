"""Does the derivative operator g∂ f²(∂f)² earn its place beside λ for Gauss-net?

Gauss-net (σ_W = σ_b = 1, d_in = 1) on five inputs spread over [-1.5, 1.5] (the paper's
Gauss inputs lie within ±0.01, where ∂K̃ barely changes from tuple to tuple and the two
designs are nearly collinear). The 4-pt function's deviation r = G4 - Wick(K) on the 70
distinct tuples is fitted with λ alone and with λ + g∂ (first order, rule 4.5, full
propagator, nngp_ppl.theory.derivative.first_order_design) at each cutoff.

1. Noise-free: r from the exact finite-width oracle; the package's estimand (least squares
   in units of each tuple's λ sensitivity s_t = |D_tλ|, physics.md §5a) and its model
   discrepancy τ = rms((r - D g*)/s).
2. Sampled: ``--n-nets`` networks per seed. Posterior of g under a flat-ish Gaussian prior
   (sd 10 |g*_λ| per coupling) and the likelihood r̂ ~ N(D g, Σ) with Σ the estimator's
   sampled covariance (exact Gaussian posterior, 4000 draws); then the package's pointwise
   log density (nngp_ppl.inference.couplings._pointwise_loglik: each tuple under its
   marginal noise plus the draw's discrepancy τ s_t) and PSIS-LOO (arviz_stats.loo), as
   infer_couplings ranks GP / λ / λ + κ. Printed: ELPD(λ + g∂) - ELPD(λ) with its s.e.
   (from the pointwise differences) per seed, width and cutoff.

This is not :func:`nngp_ppl.infer_couplings` (its bases are λ or λ + κ): the posterior is
the exact Gaussian one of a linear model on the sampled 4-pt function, not the package's
latent-r NUTS model; the ranking step (pointwise densities, PSIS-LOO) is the package's.

    .venv/bin/python benchmarks/derivative_elpd.py [--n-nets 100000 --seeds 0,1,2]

Measured (defaults σ_W = 0.6, σ_b = 0.3, inputs ±1.5, full K, 10⁵ nets, seeds 0-9, 2 busy
CPU cores, ~10 s per seed and width):

* noise-free: g∂ removes 5-9% of λ's discrepancy τ (N = 10..1000, Λ = 2..20; τ falls
  0.0147 -> 0.0139 and 0.0102 -> 0.0092 at N = 100); its design is 94-96% collinear with
  λ's, and the two-coupling fit flips λ's sign (-3.6e-3 -> +7.6e-3 at Λ = 20, N = 100);
* N = 10 (heavy tails, ~1 effective network for the variance of G4): |ΔELPD| < 0.5,
  no preference (3 seeds);
* N = 100: ΔELPD(λ + g∂ - λ) > 0 on 10/10 seeds, +0.8 to +12.4 (s.e. 0.4-1.5);
* N = 1000: -6.5 to +1.3 on 7 seeds (s.e. 0.3-1.4), no consistent preference.

So g∂ earns no robust place beside λ for Gauss-net at first order: a gain at one width,
none at the others, and noise-free it is nearly a rescaling of λ.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

import nngp_ppl as nn
from nngp_ppl.inference.couplings import _pointwise_loglik
from nngp_ppl.theory import derivative as dv
from nngp_ppl.theory.exact import exact_correlator_tuples
from nngp_ppl.theory.wick import gp_correlator_tuples

BASES = {"λ": ("lambda",), "λ + g∂": ("lambda", "gd")}


def _estimand(D, r, s):
    """g* = argmin Σ_t ((r_t - D_t g)/s_t)² and τ = rms residual in units of s."""
    g = np.linalg.lstsq(D / s[:, None], r / s, rcond=None)[0]
    return g, float(np.sqrt(np.mean(((r - D @ g) / s) ** 2)))


def _elpd_terms(D, rhat, Sigma, s, prior_sd, rng, draws=4000):
    """Pointwise log densities (draws, T) under the exact Gaussian posterior of g."""
    Si = np.linalg.pinv(Sigma, rcond=1e-12, hermitian=True)
    prec = D.T @ Si @ D + np.diag(1 / prior_sd**2)
    cov = np.linalg.inv(prec)
    mean = cov @ D.T @ Si @ rhat
    g = rng.multivariate_normal(mean, cov, size=draws)
    pred = g @ D.T
    tau = np.sqrt(np.mean(((rhat - pred) / s) ** 2, axis=1))
    L = np.diag(np.sqrt(np.diag(Sigma)))  # marginal noise: only its row norms enter
    return _pointwise_loglik(L, rhat, pred, (tau[:, None] * s) ** 2), mean


def _loo(ll):
    import arviz_base
    import arviz_stats

    dt = arviz_base.from_dict({"posterior": {"mu": ll[None, :, 0]},
                               "log_likelihood": {"correlators": ll[None]}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = arviz_stats.loo(dt, var_name="correlators", pointwise=True)
    return float(res.elpd), np.asarray(res.elpd_i).ravel(), float(np.max(res.pareto_k))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-nets", type=int, default=200_000)
    ap.add_argument("--widths", default="10,100")
    ap.add_argument("--cutoffs", default="2,5,20")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--sigma-w", type=float, default=0.6)
    ap.add_argument("--sigma-b", type=float, default=0.3)
    ap.add_argument("--half-width", type=float, default=1.5, help="inputs span ±this")
    ap.add_argument("--propagator", default="full", choices=("full", "bias_subtracted"))
    args = ap.parse_args(argv)
    widths = [int(w) for w in args.widths.split(",")]
    cutoffs = [float(c) for c in args.cutoffs.split(",")]
    net = nn.GaussNet(d_in=1, sigma_w=args.sigma_w, sigma_b=args.sigma_b)
    X = np.linspace(-args.half_width, args.half_width, 5)[:, None]
    gp = gp_correlator_tuples(np.asarray(net.kernel(X)), 4)
    D = dv.first_order_design(net, X, 4, cutoffs, ("lambda", "gd"), args.propagator)
    print("noise-free (exact oracle): g* and the discrepancy τ per basis")
    gstar = {}
    for N in widths:
        r = exact_correlator_tuples(net, X, N, 4) - gp
        for j, cut in enumerate(cutoffs):
            s = np.abs(D[j, :, 0])
            (g1,), tau1 = _estimand(D[j, :, :1], r, s)
            g2, tau2 = _estimand(D[j], r, s)
            gstar[N, j] = g1
            cos = D[j, :, 0] @ D[j, :, 1] / np.linalg.norm(D[j, :, 0]) / np.linalg.norm(D[j, :, 1])
            print(f"  N={N:4d} Λ={cut:5g}: λ alone {g1:+.4e} τ={tau1:.4f} | λ + g∂ "
                  f"{g2[0]:+.4e}, {g2[1]:+.4e} τ={tau2:.4f} | cos(Dλ, Dg∂)={cos:+.4f}")
    print(f"sampled ({args.n_nets:,} nets): ELPD(λ + g∂) - ELPD(λ) ± s.e., max Pareto k")
    for seed in (int(s) for s in args.seeds.split(",") if s):
        stats = nn.sample_correlators(net, X, widths, args.n_nets, orders=(2, 4), seed=seed,
                                      progress=False)
        for N in widths:
            rhat = stats.correlator_tuples(4, N) - gp
            Sigma = stats.covariance(N, orders=(4,))
            rng = np.random.default_rng(seed)
            for j, cut in enumerate(cutoffs):
                s = np.abs(D[j, :, 0])
                out = {}
                for name, cols in BASES.items():
                    scale = 10 * abs(gstar[N, j]) * np.ones(len(cols))
                    if len(cols) == 2:  # g∂ in units where its column matches λ's size
                        scale[1] *= np.linalg.norm(D[j, :, 0]) / np.linalg.norm(D[j, :, 1])
                    ll, mean = _elpd_terms(D[j, :, :len(cols)], rhat, Sigma, s, scale, rng)
                    out[name] = (*_loo(ll), mean)
                diff = out["λ + g∂"][1] - out["λ"][1]
                se = float(np.sqrt(diff.size * np.var(diff)))
                k = max(out[b][2] for b in BASES)
                print(f"  seed {seed} N={N:4d} Λ={cut:5g}: ΔELPD {diff.sum():+8.2f} ± {se:6.2f}"
                      f"  (λ-only ELPD {out['λ'][0]:.1f}; g∂ mean {out['λ + g∂'][3][1]:+.3e};"
                      f" max k {k:.2f})")


if __name__ == "__main__":
    main()
