"""Second-order physics measured on exact correlators: the λ² exchange, κ and its running.

For Erf (σ_b = 1), ReLU (σ_b = 0 and 1) and Gauss nets at N ∈ {5, 20, 100, 1000}, paper
inputs (d_in = 1), the full propagator (or ``--propagator bias_subtracted``), rule 4.5,
with the exact finite-width cumulants of :mod:`nngp_ppl.theory.exact` as data (no sampling
noise):

* λ̄(Λ) is the paper's estimator (:func:`nngp_ppl.inference.eft.mean_coupling`) on the exact G4.
* The connected 6-pt function at O(1/N²) in the EFT is the κ contact term plus the tree-level
  exchange of two λ vertices (every other first- and second-order 6-pt diagram is
  disconnected or O(1/N³)):

      κ6_EFT = -720 κ ∫ K1y..K6y  +  576 λ² Σ_10 ∫∫ Kay Kby Kcy Kyz Kdz Kez Kfz.

  "exchange fraction" = <λ̄² E, κ6> / <κ6, κ6> over the 462 distinct 6-tuples (the share of
  the exact κ6 along the exchange prediction; 1 = all of it), and the median per-tuple
  ratio λ̄² E_t / κ6_t.
* κ is fitted by ordinary least squares over tuples, first-order only (κ6 = -720 κ I6) and
  consistently (κ6 - λ̄² E = -720 κ I6); each is scored by the relative residual
  ‖κ6 - prediction‖ / ‖κ6‖.
* 4-pt function: norms over tuples of the second-order terms (λ̄² bubble, 2 λ̄ κ, κ²) and
  of the κ loop term against the first-order λ̄ term, with κ the consistent fit, next to
  the misfit of first order itself, ‖κ4 - λ̄ D1_λ‖ / ‖λ̄ D1_λ‖.
* Running: κ(Λ) with and without the exchange at N = 20, Λ = 7 … 10⁵, and the slopes of
  log|κ| on log Λ below 100 and above 10³.

    .venv/bin/python benchmarks/second_order_physics.py [--quick] [--propagator full]

Prints markdown tables (the ones in docs/comparison.md).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import nngp_ppl as nn
from nngp_ppl.inference.connected import six_point_diagrams
from nngp_ppl.inference.eft import mean_coupling
from nngp_ppl.theory import diagrams as dg
from nngp_ppl.theory.exact import exact_correlator_tuples, exact_cumulant_tuples

NETS = (
    ("Erf σ_b=1", lambda: nn.ErfNet(d_in=1, sigma_b=1.0), "erf"),
    ("ReLU σ_b=0", lambda: nn.ReLUNet(d_in=1, sigma_b=0.0), "relu"),
    ("ReLU σ_b=1", lambda: nn.ReLUNet(d_in=1, sigma_b=1.0), "relu"),
    ("Gauss", lambda: nn.GaussNet(d_in=1), "gauss"),
)
WIDTHS = (5, 20, 100, 1000)
CUTOFFS = (10.0, 100.0)
RUN_CUTOFFS = (7.0, 10.0, 30.0, 100.0, 1e3, 1e4, 1e5)
RUN_WIDTH = 20


def _norm(v):
    return float(np.linalg.norm(v))


def designs(net, X, cutoffs, propagator="full"):
    """Per cutoff: I6c = -720 ∫ΠK (κ contact, (C, T6)), E = λ² exchange (C, T6),
    D1_4 (C, T4, 2), D2_4 (C, T4, 2, 2)."""
    c6, E = six_point_diagrams(net, X, cutoffs, propagator)
    D1 = dg.first_order_design(net, X, 4, cutoffs, ("lambda", "kappa"), propagator)
    D2 = dg.second_order_design(net, X, 4, cutoffs, ("lambda", "kappa"), propagator)
    return c6, E, D1, D2


def lstsq(a, b):
    """Coefficient c minimising ‖b - c a‖ (one column)."""
    return float(a @ b / (a @ a))


def measure(name, net, X, cutoffs, widths, propagator="full"):
    c6, E, D1, D2 = designs(net, X, cutoffs, propagator)
    rows = []
    for N in widths:
        G4 = exact_correlator_tuples(net, X, N, 4)
        k4 = exact_cumulant_tuples(net, X, N, 4)
        k6 = exact_cumulant_tuples(net, X, N, 6)
        lam = mean_coupling(net, X, G4, cutoffs, propagator)
        big = np.abs(k6) > 1e-9 * np.abs(k6).max()  # ratios only where κ6_t is not ~0
        for i, cut in enumerate(cutoffs):
            ex = lam[i] ** 2 * E[i]
            kfo = lstsq(c6[i], k6)
            kco = lstsq(c6[i], k6 - ex)
            g = np.array([lam[i], kco])
            first = lam[i] * D1[i, :, 0]
            rows.append(dict(
                net=name, N=N, cutoff=cut, lam=lam[i],
                frac=float(ex @ k6 / (k6 @ k6)),
                median_ratio=float(np.median(ex[big] / k6[big])),
                kappa_fo=kfo, kappa_cons=kco,
                res_fo=_norm(k6 - kfo * c6[i]) / _norm(k6),
                res_ex=_norm(k6 - ex) / _norm(k6),
                res_cons=_norm(k6 - ex - kco * c6[i]) / _norm(k6),
                misfit4=_norm(k4 - first) / _norm(first),
                r_loop=_norm(kco * D1[i, :, 1]) / _norm(first),
                r_bubble=_norm(lam[i] ** 2 * D2[i, :, 0, 0]) / _norm(first),
                r_mixed=_norm(2 * lam[i] * kco * D2[i, :, 0, 1]) / _norm(first),
                r_kk=_norm(kco**2 * D2[i, :, 1, 1]) / _norm(first),
                r_second=_norm(np.einsum("tij,i,j->t", D2[i], g, g)) / _norm(first),
            ))
    return rows


def slope(x, y):
    return float(np.polyfit(np.log(x), np.log(np.abs(y)), 1)[0])


def _spread(values):
    v = np.asarray(values, dtype=float)
    return float(np.max(np.abs(v / v[0] - 1)))


def print_tables(rows, run_rows, widths, cutoffs):
    nets = list(dict.fromkeys(r["net"] for r in rows))
    spread = 0.0
    for net in nets:
        for cut in cutoffs:
            sel = [r for r in rows if r["net"] == net and r["cutoff"] == cut]
            for f, p in (("lam", 1), ("kappa_fo", 2), ("kappa_cons", 2), ("frac", 0)):
                spread = max(spread, _spread([r[f] * r["N"] ** p for r in sel]))
    print("\n### Connected 6-pt function: λ² exchange and κ (exact κ6; same at every N)\n")
    print(f"Exact correlators scale exactly: λ̄·N, κ·N² and the exchange share agree at N = "
          f"{', '.join(map(str, widths))} to {spread:.0e} (largest relative spread).\n")
    print("| net | Λ | λ̄·N | exchange share | median λ̄²E_t/κ6_t | κ·N² first-order | "
          "κ·N² consistent | resid. κ only | resid. exchange only | resid. exchange + κ |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for net in nets:
        for cut in cutoffs:
            r = [r for r in rows if r["net"] == net and r["cutoff"] == cut][-1]
            N = r["N"]
            print(f"| {net} | {cut:g} | {r['lam'] * N:.3e} | {r['frac']:.3f} | "
                  f"{r['median_ratio']:.3f} | {r['kappa_fo'] * N**2:.3e} | "
                  f"{r['kappa_cons'] * N**2:.3e} | {r['res_fo']:.3f} | {r['res_ex']:.3f} | "
                  f"{r['res_cons']:.3f} |")

    print("\n### 4-pt function: sizes against the first-order λ̄ term "
          "(norms over the 126 tuples; κ = consistent fit)\n")
    print("| net | Λ | N | first-order misfit | κ loop | λ̄² bubble | 2λ̄κ | κ² | "
          "all 2nd order |")
    print("|---|---|---|---|---|---|---|---|---|")
    for net in nets:
        for cut in cutoffs:
            for r in [r for r in rows if r["net"] == net and r["cutoff"] == cut]:
                print(f"| {r['net']} | {cut:g} | {r['N']} | {r['misfit4']:.2e} | "
                      f"{r['r_loop']:.2e} | {r['r_bubble']:.2e} | {r['r_mixed']:.2e} | "
                      f"{r['r_kk']:.2e} | {r['r_second']:.2e} |")

    print(f"\n### Running of κ with the cutoff (N = {RUN_WIDTH})\n")
    print("| net | " + " | ".join(f"Λ={c:g}" for c in RUN_CUTOFFS)
          + " | slope 7–100 | slope 10³–10⁵ |")
    print("|---|" + "---|" * (len(RUN_CUTOFFS) + 2))
    for net in nets:
        sel = [r for r in run_rows if r["net"] == net]
        cuts = [r["cutoff"] for r in sel]
        for label, field in (("κ first-order", "kappa_fo"), ("κ consistent", "kappa_cons"),
                             ("exchange share", "frac")):
            vals = [r[field] for r in sel]
            fmt = "{:.3f}" if field == "frac" else "{:.3e}"
            lo = [i for i, c in enumerate(cuts) if c <= 100]
            hi = [i for i, c in enumerate(cuts) if c >= 1e3]
            tail = (f"{slope([cuts[i] for i in lo], [vals[i] for i in lo]):.3f} | "
                    f"{slope([cuts[i] for i in hi], [vals[i] for i in hi]):.3f}"
                    if field != "frac" else "– | –")
            print(f"| {net}: {label} | " + " | ".join(fmt.format(v) for v in vals)
                  + f" | {tail} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Erf and Gauss, N = 20, 1000")
    parser.add_argument("--propagator", default="full", choices=["full", "bias_subtracted"])
    args = parser.parse_args()
    nets = NETS if not args.quick else (NETS[0], NETS[3])
    widths = WIDTHS if not args.quick else (20, 1000)
    t0 = time.perf_counter()
    rows, run_rows = [], []
    for name, make, ens in nets:
        net, X = make(), nn.paper_inputs(ens, 1)
        rows += measure(name, net, X, CUTOFFS, widths, args.propagator)
        run_rows += measure(name, net, X, RUN_CUTOFFS, (RUN_WIDTH,), args.propagator)
    print_tables(rows, run_rows, widths, CUTOFFS)
    print(f"\n({time.perf_counter() - t0:.0f} s; {args.propagator} propagator, rule 4.5, "
          f"paper inputs d_in=1)")


if __name__ == "__main__":
    main()
