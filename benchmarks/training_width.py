"""How fast trained finite-width ensembles approach the infinite-width oracle (a measurement
script, not a test): the deviation of the trained mean and covariance from (μ_t, Σ_t) of
:func:`nngp_ppl.theory.ntk.training_oracle` against the width N = 8 .. 512, at an early and a
late step, with its log-log slope (expected -1: the first finite-width correction to
gradient-descent training is O(1/N)).

Estimator (variance-reduced, unbiased). For each network the linearised prediction from its
own initial outputs, :math:`f^{lin}_t(x) = f_0(x) + B_t(x)(Y - f_0(X))` (``B_t`` from the
infinite-width NTK), has :math:`E[f^{lin}_t] = \\mu_t` and :math:`\\mathrm{Cov}(f^{lin}_t) =
\\Sigma_t` *exactly at every width* (single hidden layer: :math:`E f_0 = 0` and
:math:`E[f_0 f_0'] = K` at every N). Hence

.. math:: E[f_t] - \\mu_t = E[f_t - f^{lin}_t],\\qquad
    \\mathrm{Cov}(f_t) - \\Sigma_t = \\mathrm{Cov}(f_t) - \\mathrm{Cov}(f^{lin}_t),

both estimated on the same networks, where the O(1) fluctuations of :math:`f_0` cancel and
only the O(1/sqrt N) difference :math:`f_t - f^{lin}_t` is noise. The deviations reported
are the root mean square over the test inputs (mean) and over the test-input pairs
(covariance); ``se`` is the standard error of the mean deviation from the per-network
spread.

Measured (one run, 2-core CPU at load ~13; Erf-net σ_W = 1, σ_b = 0.5, 4 training points,
η = 1, steps 10 and 300, N = 8..512 with 4096..32768 networks): mean deviation at step 10
from 1.9e-2 to 5.4e-4 (se 6e-5), log-log slope -0.87 over N = 8..512, -0.92 over 32..512;
at step 300 from 5.0e-2 to 2.2e-3 (se 6e-5), slope -0.76 over 8..512, -0.85 over 32..512,
local slopes -0.52, -0.62, -0.70, -0.84, -0.94, -0.92 (the 1/N regime sets in from N ~ 128).
Covariance deviation slope -0.94 (step 10) and -1.09 (step 300) over 8..512; beyond N = 64
its estimate is noise-limited (1.5e-5 at N = 512).

    python benchmarks/training_width.py            # N = 8..512, 64 N (at least 4096) nets
    python benchmarks/training_width.py --quick    # N = 8..128, fewer networks
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)

    import nngp_ppl
    from nngp_ppl.theory.ntk import _step_sum, ntk_and_nngp, training_oracle
    from nngp_ppl.training.trainer import trained_outputs

    net = nngp_ppl.ErfNet(sigma_w=1.0, sigma_b=0.5)
    X = np.array([-1.0, 0.3, 1.4])
    x_train = np.array([-1.2, -0.4, 0.5, 1.1])
    y_train = np.array([0.5, -0.3, 0.2, 0.7])
    eta, steps = 1.0, [0, 10, 300]
    widths = [8, 16, 32, 64, 128] if args.quick else [8, 16, 32, 64, 128, 256, 512]
    per_width = 32 if args.quick else 64
    k, n = len(X), len(x_train)

    both = np.concatenate([X, x_train])
    theta, _ = ntk_and_nngp(net, both)
    lam, V = np.linalg.eigh(theta[k:, k:])
    mu, cov = training_oracle(net, X, x_train, y_train, steps, eta)
    left = np.abs(1 - eta * lam / n) ** steps[-1]
    print(f"Erf-net sigma_w=1, sigma_b=0.5, {n} training points, {k} test inputs, GD eta={eta};"
          f" steps {steps[1:]}; training residual left at the late step (largest mode): "
          f"{left.max():.2e}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    rows = []
    for width in widths:
        n_nets = max(4096, per_width * width)
        t0 = time.process_time()
        out = trained_outputs(net, both, width, n_nets, x_train, y_train, steps, eta,
                              seed=width).astype(np.float64)
        f0 = out[0]
        row = [width, n_nets]
        for i, t in enumerate(steps[1:], start=1):
            Bt = theta[:k, k:] @ (V * _step_sum(lam, eta / n, t)) @ V.T
            lin = f0[:, :k] + (y_train[None, :] - f0[:, k:]) @ Bt.T
            delta = out[i][:, :k] - lin
            dmu = delta.mean(0)
            se = delta.std(0) / np.sqrt(n_nets)
            dcov = np.cov(out[i][:, :k].T) - np.cov(lin.T)
            # the identities hold in expectation: check the linear model's own moments
            lin_dev = np.abs(lin.mean(0) - mu[i]).max()
            row += [np.sqrt(np.mean(dmu**2)), np.sqrt(np.mean(se**2)),
                    np.sqrt(np.mean(dcov**2)), lin_dev]
        rows.append(row)
        print(f"N={width:4d} nets={n_nets:6d} cpu {time.process_time() - t0:6.1f}s  " +
              "  ".join(f"t={t}: |dmu|={row[2 + 4 * j]:.2e} (se {row[3 + 4 * j]:.1e}) "
                        f"|dSigma|={row[4 + 4 * j]:.2e}"
                        for j, t in enumerate(steps[1:])), flush=True)
    rows = np.asarray(rows)
    logN = np.log(rows[:, 0])
    for j, t in enumerate(steps[1:]):
        for name, col in (("mean", 2 + 4 * j), ("covariance", 4 + 4 * j)):
            for lo in (0, 2):
                slope = np.polyfit(logN[lo:], np.log(rows[lo:, col]), 1)[0]
                print(f"step {t:4d} {name:10s} log-log slope over N = "
                      f"{int(rows[lo, 0])}..{int(rows[-1, 0])}: {slope:+.3f}")
            local = np.diff(np.log(rows[:, col])) / np.diff(logN)
            print(f"step {t:4d} {name:10s} local slopes between neighbouring N: " +
                  " ".join(f"{v:+.2f}" for v in local))


if __name__ == "__main__":
    main()
