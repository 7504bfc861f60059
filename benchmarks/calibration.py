"""Calibration of the coupling posteriors on real sampled networks (issue 9).

For each case (ensemble, width, couplings; paper inputs, d_in = 1) and each of ``--seeds``
independent seeds, ``--n-nets`` networks are sampled and the posterior of
:func:`nngp_ppl.infer_couplings`'s model is drawn (:func:`nngp_ppl.inference.calibration.
calibrate`); its 90% interval at each cutoff is checked against the declared estimand on the
*exact* finite-width correlators — never against data simulated from the model. Printed per
case, cutoff and quantity (the couplings and their β = d/d log Λ):

* ``cover90``: fraction of seeds whose 90% interval contains the exact target (target band
  0.85–0.97; with S seeds the binomial standard error at 0.9 is sqrt(0.09/S));
* ``mean_z``, ``sd_z``: z = (posterior mean - target) / posterior sd over the seeds
  (targets |mean z| <= 0.25, sd z in [0.8, 1.25]);
* ``sharp``: mean posterior sd / seed-to-seed sd of the posterior mean (target <= 1.5);
* ``noise``: the noise model(s) "auto" chose; ``tails``: the heavy-tail warning fired.
"""

from __future__ import annotations

import argparse
import time

import nngp_ppl as nn
from nngp_ppl.inference.calibration import calibrate

CASES = [
    # label, ensemble, sigma_b, width, couplings
    ("Erf N=5", "erf", 1.0, 5, ("lambda",)),
    ("Erf N=20", "erf", 1.0, 20, ("lambda",)),
    ("ReLU sb=1 N=20", "relu", 1.0, 20, ("lambda",)),
    ("Gauss N=100", "gauss", 1.0, 100, ("lambda",)),
    ("ReLU sb=0 N=20", "relu", 0.0, 20, ("lambda",)),
    ("Erf N=5 joint", "erf", 1.0, 5, ("lambda", "kappa")),
    ("ReLU sb=1 N=20 joint", "relu", 1.0, 20, ("lambda", "kappa")),
    # Symmetric (zero-mean) nets with an odd basis: g3's exact target is 0 (issue 17, 5).
    ("Erf N=5 g3", "erf", 1.0, 5, ("g3", "lambda")),
    ("ReLU sb=1 N=20 g3", "relu", 1.0, 20, ("g3", "lambda")),
    # Symmetry-broken nets (non-zero means), fitted centred: g3 and lambda of the centred
    # moments against the exact centred target (nngp_ppl.inference.centred; issue 17, 5).
    ("Erf mu=(.5,.2) N=5", "erf", 1.0, 5, ("g3", "lambda"), {"mu_w": 0.5, "mu_b": 0.2}),
    ("Erf mu=(1,.5) N=5", "erf", 1.0, 5, ("g3", "lambda"), {"mu_w": 1.0, "mu_b": 0.5}),
    ("Gauss mu=(.5,.2) N=20", "gauss", 0.5, 20, ("g3", "lambda"),
     {"mu_w": 0.5, "mu_b": 0.2, "sigma_w": 0.5, "inputs": "erf"}),
    ("Gauss mu=(1,.5) N=20", "gauss", 0.5, 20, ("g3", "lambda"),
     {"mu_w": 1.0, "mu_b": 0.5, "sigma_w": 0.5, "inputs": "erf"}),
    # An ActivationNet with means: its propagator is the quadrature limit covariance.
    ("tanh mu=(.5,.2) N=5", "tanh", 1.0, 5, ("g3", "lambda"),
     {"mu_w": 0.5, "mu_b": 0.2, "inputs": "erf"}),
    ("tanh mu=(1,.5) N=5", "tanh", 1.0, 5, ("g3", "lambda"),
     {"mu_w": 1.0, "mu_b": 0.5, "inputs": "erf"}),
]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--first-seed", type=int, default=1000)
    ap.add_argument("--n-nets", type=int, default=100_000)
    ap.add_argument("--cutoffs", default="10,100")
    ap.add_argument("--cases", default="all", help="comma-separated indices into CASES")
    ap.add_argument("--noise", default="auto", help="auto, exact, sample or gp")
    ap.add_argument("--num-samples", type=int, default=500)
    ap.add_argument("--num-warmup", type=int, default=300)
    ap.add_argument("--batch", type=int, default=25, help="seeds per compiled NUTS call")
    ap.add_argument("--order", default="1", help="perturbative order(s): 1, 2 or 1,2 (the "
                    "orders share the posterior draws of r)")
    ap.add_argument("--quick", action="store_true", help="10 seeds x 2e4 networks")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.n_nets = 10, 20_000
    cutoffs = tuple(float(c) for c in args.cutoffs.split(","))
    cases = CASES if args.cases == "all" else [CASES[int(i)] for i in args.cases.split(",")]
    se = (0.09 / args.seeds) ** 0.5
    print(f"{args.seeds} seeds x {args.n_nets:,} networks, cutoffs {cutoffs}; binomial "
          f"standard error of a 0.90 coverage: {se:.3f}")
    pert = tuple(int(o) for o in args.order.split(","))
    print(f"{'case':22s} {'ord':>3s} {'cutoff':>7s} {'quantity':>13s} {'noise':>12s} "
          f"{'cover90':>7s} {'mean_z':>7s} {'sd_z':>6s} {'sharp':>6s} {'tails':>5s}", flush=True)
    for label, ensemble, sigma_b, width, couplings, *extra in cases:
        t0 = time.perf_counter()
        hyper = dict(extra[0]) if extra else {}
        inputs = nn.paper_inputs(hyper.pop("inputs", ensemble), d_in=1)
        net = nn.make_ensemble(ensemble, sigma_b=sigma_b, **hyper)
        rows = calibrate(net, inputs, width, couplings, cutoffs,
                         seeds=range(args.first_seed, args.first_seed + args.seeds),
                         n_nets=args.n_nets,
                         covariance=args.noise, num_samples=args.num_samples,
                         num_warmup=args.num_warmup, batch=args.batch, order=pert)
        for row in rows:
            print(f"{label:22s} {row['order']:3d} {row['cutoff']:7g} {row['quantity']:>13s} "
                  f"{row['noise']:>12s} {row['cover']:7.3f} {row['mean_z']:+7.3f} "
                  f"{row['sd_z']:6.3f} {row['sharp']:6.3f} {str(row['tails']):>5s}",
                  flush=True)
        print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
