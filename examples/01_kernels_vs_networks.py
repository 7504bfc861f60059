"""Finite-width networks against their Gaussian process: 2-, 4- and 6-point functions.

A single-hidden-layer network's output two-point function is the GP kernel K at *every*
width (physics.md §2), so the finite-width effects live in the higher correlators. This
script draws Erf-nets on the authors' six inputs, and for each width prints

* the largest relative difference between the sampled 2-pt function and K (noise only),
* the paper's normalised deviations m_4, m_6 from the GP (Wick) prediction, sampled and
  exact (the finite-width oracle, no sampling noise), next to the statistical background,
* the exact connected 4- and 6-pt functions, which fall as 1/N and 1/N².

Run:  python examples/01_kernels_vs_networks.py [--small] [--ensemble relu] [--plot m.png]
"""

from __future__ import annotations

import argparse

import numpy as np

import nngp_ppl
from nngp_ppl.sampling.stats import normalised_deviation
from nngp_ppl.theory.exact import exact_correlator_tuples, exact_cumulant_tuples
from nngp_ppl.theory.wick import gp_correlator_tuples


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ensemble", default="erf", help="erf, relu or gauss (default erf)")
    parser.add_argument("--small", action="store_true", help="a few thousand networks (tests)")
    parser.add_argument("--plot", default=None, metavar="PNG", help="save m_n against N")
    args = parser.parse_args(argv)

    net = nngp_ppl.make_ensemble(args.ensemble)  # the authors' σ's (ReLU-net: σ_b = 0)
    X = nngp_ppl.paper_inputs(net.name)  # (6, 1)
    widths = (2, 10) if args.small else (2, 5, 20, 100, 1000)
    n_nets = 4_000 if args.small else 200_000
    stats = nngp_ppl.sample_correlators(net, X, widths, n_nets, seed=1, progress=not args.small)

    K = np.asarray(net.kernel(X))
    gp = {n: gp_correlator_tuples(K, n) for n in (2, 4, 6)}
    print(f"{net.name}-net, sigma_w={net.sigma_w}, sigma_b={net.sigma_b}, {n_nets} nets/width")
    print(f"{'N':>5} {'max|G2/K-1|':>12} {'max z2':>7} {'m4 sampled':>11} {'m4 exact':>10}"
          f" {'m4 noise':>10} {'m6 sampled':>11} {'m6 exact':>10} {'c4 exact':>10}"
          f" {'c6 exact':>10}")
    rows = []
    for w in widths:
        g2 = stats.correlator_tuples(2, w)
        row = {"N": w, "g2": float(np.max(np.abs(g2 / gp[2] - 1))),
               "g2_z": float(np.max(np.abs(g2 - gp[2]) / stats.stderr_tuples(2, w)))}
        for n in (4, 6):
            row[f"m{n}"] = normalised_deviation(stats.correlator_tuples(n, w), gp[n])
            row[f"m{n}x"] = normalised_deviation(exact_correlator_tuples(net, X, w, n), gp[n])
            row[f"m{n}bg"] = normalised_deviation(gp[n] + stats.stderr_tuples(n, w), gp[n])
            kappa = exact_cumulant_tuples(net, X, w, n)
            row[f"c{n}"] = float(np.mean(np.abs(kappa) / np.abs(gp[n])))
        rows.append(row)
        print(f"{w:>5} {row['g2']:>12.2e} {row['g2_z']:>7.2f} {row['m4']:>11.3e} "
              f"{row['m4x']:>10.3e} {row['m4bg']:>10.3e} {row['m6']:>11.3e} {row['m6x']:>10.3e} "
              f"{row['c4']:>10.3e} {row['c6']:>10.3e}")
    slope4 = np.polyfit(np.log(widths), np.log([r["c4"] for r in rows]), 1)[0]
    slope6 = np.polyfit(np.log(widths), np.log([r["c6"] for r in rows]), 1)[0]
    print(f"exact connected functions: c4 ~ N^{slope4:.3f} (expect -1), "
          f"c6 ~ N^{slope6:.3f} (expect -2 at large N)")

    if args.plot:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(5, 3.6), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        for n, color in ((4, "tab:blue"), (6, "tab:orange")):
            ax.plot(widths, [r[f"m{n}x"] for r in rows], "-", color=color, label=f"m{n} exact")
            ax.plot(widths, [r[f"m{n}"] for r in rows], "o", color=color, label=f"m{n} sampled")
            ax.plot(widths, [r[f"m{n}bg"] for r in rows], "x:", color=color,
                    label=f"m{n} background")
        ax.set(xscale="log", yscale="log", xlabel="width N", ylabel="m_n")
        ax.legend(fontsize=7)
        fig.savefig(args.plot, dpi=110)
        print(f"wrote {args.plot}")
    return rows


if __name__ == "__main__":
    main()
