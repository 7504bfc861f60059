"""Cost of one coupling posterior: 4 chains x 1000 draws, 126 + 462 latent correlators.

Erf-net at the paper's six inputs (d_in = 1), exact width-5 correlators, the default noise
model (exact finite-width moments of 10⁵ networks, orders up to 12), one cutoff, with the
ELPD comparison of the GP, λ and λ + κ models. Prints the
wall time of the first posterior (including compilation) and of a second one at another
cutoff (the compiled sampler reused), the bulk effective sample size per second of each,
and the NUTS steps per draw. The issue's target: under 30 s including compilation on a
2-core CPU.

Run: ``.venv/bin/python benchmarks/inference.py``
"""

from __future__ import annotations

import os
import time
import warnings

import numpy as np


def main() -> None:
    import arviz_stats

    import nngp_ppl as nn
    from nngp_ppl.inference import infer_couplings
    from nngp_ppl.theory.exact import exact_correlator_tuples

    class ExactStats:  # the CorrelatorStats interface, from noise-free correlators
        def __init__(self, net, X, width, n_nets):
            self.net, self.X, self.orders, self.seed = net, X, (4, 6), 0
            self.widths = (width,)
            self._g = {n: exact_correlator_tuples(net, X, width, n) for n in (4, 6)}
            self._n = n_nets

        def correlator_tuples(self, n, width):
            return self._g[n]

        def n_nets(self, width):
            return self._n

    net = nn.ErfNet(d_in=1)
    X = nn.paper_inputs("erf", 1)
    stats = ExactStats(net, X, 5, 100_000)
    print(f"cpus available: {os.cpu_count()}; observables: 126 + 462; 4 chains x 1000 draws "
          "(+500 warmup), chains vectorised")
    for label, cutoff in (("first (with compilation)", 10.0), ("second (compiled)", 100.0)):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dt = infer_couplings(stats, cutoffs=[cutoff], num_chains=4, num_samples=1000)
        wall = time.perf_counter() - t0
        lam = dt["posterior"]["lambda"].values[:, :, 0, 0]
        ess = float(arviz_stats.ess(lam, method="bulk"))
        steps = float(np.mean(dt["sample_stats"]["n_steps"].values))
        print(f"{label:>26}: {wall:6.2f} s   ESS_bulk(lambda) = {ess:6.0f}   "
              f"ESS/s = {ess / wall:7.1f}   NUTS steps/draw = {steps:4.1f}   "
              f"gate {'passed' if dt.attrs['diagnostics_passed'] else 'FAILED'}")


if __name__ == "__main__":
    main()
