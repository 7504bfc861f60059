"""The Wilsonian running of λ with the cutoff: a β-function posterior and the exponent γ.

Every cutoff Λ ≫ |x| must describe the same correlators, so λ runs: β(λ) = dλ/d log Λ.
At first order with one coupling λ(Λ) ∝ 1/I(Λ), I = ∫_box Π K, so β = -γ λ with
γ = d log I / d log Λ → d_in where K tends to a constant (Erf-net, Gauss-net with full K)
and d_in + 4 where K grows like |y| (ReLU-net) — physics.md §8.

This script samples ReLU-net with σ_b = 1 at N = 20 (the authors' RG experiment), infers
λ at several cutoffs, and maps every posterior draw of the noise-free correlators through
each cutoff's estimand and its derivative (nngp_ppl.inference.beta_function). It prints
β(Λ) and γ(Λ) with credible intervals and the asymptotic γ beside the analytic value, with
the interval from the networks apart from the one that adds the extrapolation's systematic
error.

Run:  python examples/04_beta_function.py [--small] [--ensemble gauss] [--plot beta.png]
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

import nngp_ppl
from nngp_ppl.inference import beta_function, infer_couplings


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="short runs (tests)")
    parser.add_argument("--ensemble", default="relu", help="relu (σ_b = 1), erf or gauss")
    parser.add_argument("--plot", default=None, metavar="PNG", help="save the β-function band")
    args = parser.parse_args(argv)

    net = nngp_ppl.make_ensemble(args.ensemble, sigma_b=1.0)
    X = nngp_ppl.paper_inputs(net.name)
    width = 20
    n_nets = 20_000 if args.small else 300_000
    cutoffs = (10.0, 100.0, 1000.0) if args.small else (10.0, 30.0, 100.0, 1000.0, 1e4, 1e5)
    stats = nngp_ppl.sample_correlators(net, X, [width], n_nets, seed=4,
                                        progress=not args.small)
    nuts = dict(num_chains=2, num_samples=500, num_warmup=300) if args.small else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # short runs may fail the gate
        posterior = infer_couplings(stats, cutoffs=cutoffs, couplings=("lambda",), **nuts)
        beta = beta_function(posterior)

    post = beta["posterior"]
    print(f"{net.name}-net (σ_b = 1), N = {width}, {n_nets} networks")
    print(f"{'cutoff':>8} {'λ median':>11} {'β median':>11} {'γ(Λ) median':>12} {'γ 90%':>18}")
    for j, c in enumerate(cutoffs):
        lam = posterior["posterior"]["lambda"].values[..., 0, j].ravel()
        b = post["beta"].values[..., 0, j, 0].ravel()
        g = post["gamma_local"].values[..., 0, j].ravel()
        lo, hi = np.quantile(g, [0.05, 0.95])
        print(f"{c:>8g} {np.median(lam):>11.3e} {np.median(b):>11.3e} {np.median(g):>12.4f} "
              f"[{lo:.4f}, {hi:.4f}]")
    gamma = post["gamma"].values.ravel()
    data = post["gamma_data"].values.ravel()
    analytic = float(beta["constant_data"]["gamma_analytic"])
    print(f"asymptotic γ = {np.median(data):.4f} ± {data.std():.2g} from the networks, "
          f"± {gamma.std():.2g} with the extrapolation systematic (analytic {analytic:g})")

    if args.plot:
        from nngp_ppl.inference.plots import plot_beta

        plot_beta(beta).savefig(args.plot, dpi=110)
        print(f"wrote {args.plot}")
    return {"gamma": gamma, "gamma_data": data, "gamma_analytic": analytic,
            "beta": beta, "posterior": posterior}


if __name__ == "__main__":
    main()
