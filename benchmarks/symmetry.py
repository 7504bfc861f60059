"""Calibration and power of the f -> -f test (:mod:`nngp_ppl.inference.symmetry`).

A script, not a test. On the three inputs x = -1, 0.2, 1 (d_in = 1) at width N = 3:

* false-positive rate at the 5% level over ``--seeds`` seeds (default 300) of symmetric
  ensembles (Erf-net; Gauss-net sigma_W = 0.5, sigma_b = 0.3; ReLU-net sigma_b = 0.5),
  n_nets networks per seed, for the default test (odd orders 1, 3; rcond 1e-3) and the
  variants it was chosen over (orders 1 alone; 1, 3, 5; rcond 1e-6);
* power at the 5% level against the size of the mean: Erf-net with mu_b = delta (a shifted
  output bias and pre-activation) or mu_w = delta, ``--power-seeds`` seeds per point.

Measured (2-core machine at load ~10 from other processes, 300 seeds, so a rate's
standard error is 1.3 points at 5%), false-positive rates of the default:

    ensemble   n_nets=1024  n_nets=4096
    erf           4.0%         4.0%
    gauss         4.0%         3.3%
    relu          3.0%         3.0%

(orders 1 alone: 4.3-7.7%; orders 1, 3, 5 at rcond 1e-6: 0.7-3.3%, too conservative: the
5-pt products are so heavy-tailed that their self-normalised components have lighter
tails than chi^2.) Power at 5%, Erf-net, 100 seeds per point:

    delta                        0.01  0.02  0.05   0.1   0.2
    mu_b = delta, n_nets=1024      4%    6%   12%   39%   98%
    mu_b = delta, n_nets=4096      5%    7%   46%  100%  100%
    mu_w = delta, n_nets=1024      2%    2%    3%    4%    8%
    mu_w = delta, n_nets=4096      1%    1%    1%    2%   25%

mu_w moves the 1-pt function much less than mu_b on these inputs (it enters as
mu_W E erf(z) with the pre-activation mean mu_W x, odd in x for x = -1, 1), so the same
delta is harder to see.

    python benchmarks/symmetry.py [--seeds 300] [--power-seeds 100]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

X = np.array([[-1.0], [0.2], [1.0]])
WIDTH = 3
VARIANTS = {"default (1,3) rcond 1e-3": {}, "(1,) only": {"orders": (1,)},
            "(1,3,5) rcond 1e-6": {"orders": (1, 3, 5), "rcond": 1e-6}}


def rejection_rates(net, n_nets, seeds, variants, first_seed=1000):
    """Fraction of seeds each variant rejects at 5%."""
    from nngp_ppl import sample_correlators
    from nngp_ppl.inference.symmetry import parity_test

    hits = dict.fromkeys(variants, 0)
    for s in range(seeds):
        stats = sample_correlators(net, X, [WIDTH], n_nets, orders=(1, 3, 5),
                                   seed=first_seed + s, progress=False)
        for name, kw in variants.items():
            hits[name] += parity_test(stats, WIDTH, **kw).reject
    return {name: h / seeds for name, h in hits.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=300)
    parser.add_argument("--power-seeds", type=int, default=100)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    from nngp_ppl import ErfNet, GaussNet, ReLUNet

    t0 = time.perf_counter()
    print(f"false-positive rate at 5%, {args.seeds} seeds, N = {WIDTH}, k = 3 inputs")
    nets = {"erf": ErfNet(), "gauss": GaussNet(sigma_w=0.5, sigma_b=0.3),
            "relu": ReLUNet(sigma_b=0.5)}
    for n_nets in (1024, 4096):
        for name, net in nets.items():
            rates = rejection_rates(net, n_nets, args.seeds, VARIANTS)
            print(f"  {name:>5} n_nets={n_nets:>5}: " + "  ".join(
                f"{v}: {r:.1%}" for v, r in rates.items()), flush=True)
    print(f"\npower at 5% (default test), {args.power_seeds} seeds per point, Erf-net")
    default = {"default": {}}
    for field in ("mu_b", "mu_w"):
        for n_nets in (1024, 4096):
            row = []
            for delta in (0.01, 0.02, 0.05, 0.1, 0.2):
                net = ErfNet(**{field: delta})
                rate = rejection_rates(net, n_nets, args.power_seeds, default, 5000)["default"]
                row.append(f"{delta:g}: {rate:.0%}")
            print(f"  {field} = delta, n_nets={n_nets:>5}: " + "  ".join(row), flush=True)
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
