"""Learning as a flow of the ensemble: trained networks against the infinite-width oracle.

The networks of the sampler (step 0 is the untrained ensemble, bit for bit) are trained by
full-batch gradient descent on five points of sin(x) -- the data and settings of the
shipped study ``examples/train_1d.toml`` -- and their correlators are recorded at the
test inputs after each training step of the study. For every step and width it prints

* the learned 1-pt function κ₁(x) = E[f_t(x)] against the oracle's mean μ_t(x)
  (:func:`nngp_ppl.theory.ntk.training_oracle`, N → ∞): largest |z| over the inputs;
* the connected 2-pt function against Σ_t: largest |z| over the pairs;
* the connected 3-pt function against zero (its value at step 0, f → −f, and as N → ∞):
  largest |z| over the triples, and the largest |κ₁ − μ_t|, which falls like 1/N.

z is (sampled − target) / delta-method standard error. At the large width every |z| stays
small; at the small width training resolves the finite-width 1-pt, 2-pt and 3-pt effects.
``nngp-ppl reproduce --config examples/train_1d.toml`` runs the same training as a stage
and draws it in the report.

Run:  python examples/08_training_flow.py [--small] [--plot f.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from nngp_ppl.study.spec import load_study
from nngp_ppl.training.comparison import oracle_comparison
from nngp_ppl.training.trainer import train_correlators

STUDY = Path(__file__).resolve().parent / "train_1d.toml"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="1000 networks (tests)")
    parser.add_argument("--plot", default=None, metavar="PNG",
                        help="save the learned function against x at each step")
    args = parser.parse_args(argv)

    preset = load_study(STUDY)
    spec, run = preset.train, preset.runs()[0]
    net = run.net()
    # Nine test inputs across and beyond the data: the learned function as a curve.
    X = np.linspace(-2.5, 2.5, 9)[:, None]
    widths = (16, 512) if args.small else (10, 100, 1000)
    n_nets = 1_000 if args.small else 20_000
    trained = train_correlators(
        net, X, widths, n_nets, np.asarray(spec.x_train), np.asarray(spec.y_train),
        spec.steps, spec.learning_rate, orders=(1, 2, 3), seed=1, progress=not args.small)
    comp = oracle_comparison(trained)

    print(f"{net.describe()} trained by gradient descent (learning rate "
          f"{spec.learning_rate:g}) on {len(spec.y_train)} points of sin(x); "
          f"{n_nets} networks per width")
    print(f"{'step':>5} {'N':>5} {'max|mu_t|':>10} {'max|k1-mu|':>11} {'z1 max':>7} "
          f"{'z2 max':>7} {'z3 max':>7} {'no s.e.':>7}")
    rows = []
    for i, step in enumerate(trained.steps):
        for j, w in enumerate(widths):
            k3 = np.abs(comp["kappa3"].values[i, j] / comp["kappa3_stderr"].values[i, j])
            row = {"step": step, "N": w,
                   "mu": float(np.max(np.abs(comp["oracle1"].values[i]))),
                   "dev1": float(np.max(np.abs(comp["kappa1"].values[i, j]
                                               - comp["oracle1"].values[i]))),
                   "z1": float(comp["max_abs_z1"].values[i, j]),
                   "z2": float(comp["max_abs_z2"].values[i, j]),
                   # NaN: an error the stored sums cannot resolve (late, near the data)
                   "z3": float(np.max(k3[np.isfinite(k3)])) if np.isfinite(k3).any()
                   else np.nan,
                   "unusable": int(np.sum(~np.isfinite(k3)))}
            rows.append(row)
            print(f"{step:>5} {w:>5} {row['mu']:>10.3f} {row['dev1']:>11.2e} "
                  f"{row['z1']:>7.2f} {row['z2']:>7.2f} {row['z3']:>7.2f} {row['unusable']:>7}")
    if args.plot:
        _plot(comp, X, spec, widths[-1], args.plot)
    return {"rows": rows, "widths": widths, "steps": trained.steps, "comparison": comp}


def _plot(comp, X, spec, width, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    x = X[:, 0]
    big = comp.sel(width=width)
    for step in comp["step"].values:
        line, = ax.plot(x, big["oracle1"].sel(step=step), "-", lw=1)
        ax.errorbar(x, big["kappa1"].sel(step=step), yerr=2 * big["kappa1_stderr"].sel(
            step=step), fmt="o", ms=3, color=line.get_color(), label=f"t = {int(step)}")
    ax.plot(np.asarray(spec.x_train)[:, 0], spec.y_train, "k*", ms=10, label="data")
    ax.set_xlabel("x")
    ax.set_ylabel("E[f_t(x)]")
    ax.set_title(f"learned 1-pt function at N = {width} (points ± 2 s.e.) and μ_t (lines)",
                 fontsize=9)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
