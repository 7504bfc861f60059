"""Where second order is needed: ELPD of first- and second-order models against the width.

For each ensemble (paper inputs, d_in = 1) networks are sampled at N = 5, 20, 100, 1000
(``--n-nets`` each) and one posterior of the noise-free correlators per width is drawn by
:func:`nngp_ppl.infer_couplings` with ``couplings=("lambda", "kappa"), order=2``; its
PSIS-LOO table ranks the GP, λ and λ + κ at first order and at second order (``@2``) on the
same data (the 4- and 6-pt functions, each correlator under its noise and the model's
stated discrepancy). Printed per width and cutoff: ΔELPD of each model against the GP with
its standard error, the model the package's nested rule keeps
(:func:`nngp_ppl.inference.evidence.choose_nested_basis`: a richer nested model only where
ΔELPD > max(4, 2 paired s.e.)) beside the highest ELPD, and the median λ² share of the
second-order prediction (how far from a small correction the second order is).

    .venv/bin/python benchmarks/second_order_elpd.py [--quick]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

import nngp_ppl as nn
from nngp_ppl.inference.compare import pointwise_elpd
from nngp_ppl.inference.evidence import choose_nested_basis

NETS = (("Erf σ_b=1", "erf", 1.0), ("ReLU σ_b=1", "relu", 1.0), ("Gauss", "gauss", 1.0))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-nets", type=int, default=100_000)
    ap.add_argument("--widths", default="5,20,100,1000")
    ap.add_argument("--cutoffs", default="10,100")
    ap.add_argument("--nets", default="0,1,2", help="indices into NETS")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="2e4 networks, N = 5 and 100")
    args = ap.parse_args(argv)
    if args.quick:
        args.n_nets, args.widths = 20_000, "5,100"
    widths = [int(w) for w in args.widths.split(",")]
    cutoffs = [float(c) for c in args.cutoffs.split(",")]
    print(f"{args.n_nets:,} networks per width; ΔELPD against the GP (± s.e.)")
    for i in (int(i) for i in args.nets.split(",")):
        label, ensemble, sigma_b = NETS[i]
        t0 = time.perf_counter()
        net = nn.make_ensemble(ensemble, sigma_b=sigma_b)
        X = nn.paper_inputs(ensemble, d_in=1)
        stats = nn.sample_correlators(net, X, widths, args.n_nets, orders=(2, 4, 6),
                                      seed=args.seed, progress=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # heavy tails and the gate are reported below
            dt = nn.infer_couplings(stats, cutoffs=cutoffs, couplings=("lambda", "kappa"),
                                    order=2, num_samples=500, num_warmup=300,
                                    seed=args.seed)
        from nngp_ppl.inference import diagnostics_gate

        gate = diagnostics_gate(dt, warn=False)
        if not gate.passed:
            print("gate failures:", gate.failures)
        const = dt["constant_data"]
        models = [str(m) for m in const["model"].values]
        share = dt["posterior"]["second_order_share"].median(("chain", "draw")).values
        print(f"\n### {label} ({dt.attrs['covariance']} noise, {dt.attrs['likelihood']}; "
              f"gate {'passed' if dt.attrs['diagnostics_passed'] else 'FAILED'})\n")
        print("| N | Λ | " + " | ".join(models[1:]) + " | kept (nested rule) | highest | "
              "λ² share |")
        print("|---|---|" + "---|" * (len(models) + 2))
        for a, w in enumerate(widths):
            for b, c in enumerate(cutoffs):
                e = const["elpd"].values[a, b]
                se = const["elpd_se"].values[a, b]
                cells = [f"{e[m] - e[0]:+.1f} ± {np.hypot(se[m], se[0]):.1f}"
                         for m in range(1, len(models))]
                kept = choose_nested_basis(pointwise_elpd(dt, w, c, models))[0]
                print(f"| {w} | {c:g} | " + " | ".join(cells)
                      + f" | {kept} | {models[int(np.nanargmax(e))]} | {share[a, b]:.3g} |")
        print(f"\n({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
