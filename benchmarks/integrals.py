"""Vertex-integral throughput: the JAX composite Gauss-Legendre rule against scipy.

The workload of the issue: every vertex integral the first-order fits need for six inputs,
orders 4 and 6 (4-tuples with 0 and 1 self-loops, 6-tuples), at the paper's 21 cutoffs,
d_in = 1: 126 + 126 + 462 = 714 integrals x 21 cutoffs. The reference is the authors'
method, scipy adaptive quadrature (``quad``, each axis split at 0) with the fastest
integrand Python offers (the kernel transcribed with ``math``). scipy is timed on a random
sample of the integrals and extrapolated; the sample also gives the agreement.

    .venv/bin/python benchmarks/integrals.py [--ensemble erf] [--sample 200]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from scipy import integrate

import nngp_ppl as nn
from nngp_ppl import tuples
from nngp_ppl.theory.diagrams import first_order_design
from nngp_ppl.theory.lattice import vertex_integrals


def scalar_kernel(net):
    """K(x, y) for scalar inputs, physics.md §2, with the math module."""
    sw, sb = net.sigma_w, net.sigma_b

    def m(x, y):
        return sb**2 + sw**2 * x * y

    if net.name == "erf":
        def K(x, y):
            return sb**2 + sw**2 * (2 / math.pi) * math.asin(
                2 * m(x, y) / math.sqrt((1 + 2 * m(x, x)) * (1 + 2 * m(y, y))))
    elif net.name == "relu":
        def K(x, y):
            norm = math.sqrt(m(x, x) * m(y, y))
            if norm == 0:
                return sb**2
            c = max(-1.0, min(1.0, m(x, y) / norm))
            t = math.acos(c)
            return sb**2 + sw**2 / (2 * math.pi) * norm * (math.sin(t) + (math.pi - t) * c)
    else:
        def K(x, y):
            return sb**2 + sw**2 * math.exp(-(sw**2) * (x - y) ** 2 / 2)
    return K


def scipy_integral(K, xs, loops, cutoff):
    def f(y):
        return math.prod(K(x, y) for x in xs) * K(y, y) ** loops

    return sum(integrate.quad(f, a, b, epsabs=0, epsrel=1e-10, limit=400)[0]
               for a, b in ((-cutoff, 0.0), (0.0, cutoff)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ensemble", default="erf", choices=["erf", "relu", "gauss"])
    parser.add_argument("--sample", type=int, default=200,
                        help="integrals timed with scipy (extrapolated to all)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    net = nn.make_ensemble(args.ensemble, d_in=1, **({"sigma_b": 0.0}
                                                     if args.ensemble == "relu" else {}))
    X = nn.paper_inputs(args.ensemble, 1)
    cuts = np.asarray(nn.PAPER_CUTOFFS, dtype=np.float64)
    jobs = [(tuples.distinct_tuples(6, 4), 0), (tuples.distinct_tuples(6, 4), 1),
            (tuples.distinct_tuples(6, 6), 0)]
    n_integrals = sum(len(r) for r, _ in jobs) * len(cuts)

    def ours():
        return [np.asarray(vertex_integrals(net, X, rows, cuts, loops=loops))
                for rows, loops in jobs]

    t0 = time.perf_counter()
    values = ours()
    first = time.perf_counter() - t0
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        ours()
        times.append(time.perf_counter() - t0)
    t_ours = min(times)

    def designs():
        return [first_order_design(net, X, n, cuts) for n in (4, 6)]

    designs()
    t0 = time.perf_counter()
    designs()
    t_design = time.perf_counter() - t0

    rng = np.random.default_rng(0)
    K = scalar_kernel(net)
    flat = [(j, r, c) for j, (rows, _) in enumerate(jobs) for r in range(len(rows))
            for c in range(len(cuts))]
    pick = rng.choice(len(flat), size=min(args.sample, len(flat)), replace=False)
    worst = 0.0
    t0 = time.perf_counter()
    for i in pick:
        j, r, c = flat[i]
        rows, loops = jobs[j]
        ref = scipy_integral(K, X[rows[r], 0], loops, cuts[c])
        worst = max(worst, abs(values[j][c, r] / ref - 1))
    t_sample = time.perf_counter() - t0
    t_scipy = t_sample / len(pick) * n_integrals

    print(f"{net.name}-net, d_in = 1, six inputs: {n_integrals} vertex integrals "
          f"(orders 4 and 6, 21 cutoffs 7..1e5)")
    print(f"  nngp_ppl (JAX, composite Gauss-Legendre): {t_ours * 1e3:8.1f} ms "
          f"after compilation (first call incl. compilation {first:.2f} s)")
    print(f"  first_order_design, n = 4 and 6          : {t_design * 1e3:8.1f} ms")
    print(f"  scipy quad split at 0 (authors' method)  : {t_scipy:8.1f} s "
          f"(timed on {len(pick)} integrals, extrapolated)")
    print(f"  speed-up: {t_scipy / t_ours:,.0f}x;  max relative difference on the sample: "
          f"{worst:.1e}")


if __name__ == "__main__":
    main()
