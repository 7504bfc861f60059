"""Two-vertex integrals: throughput, accuracy against scipy's dblquad, and d_in = 2 memory.

Workload (d_in = 1): every two-vertex integral that the second-order designs of the 4- and
6-pt functions need for the six paper inputs, couplings (λ, κ), 2-pt insertions dropped
and kept (40 integral shapes, 21 x 21 .. 126 x 56 tuples each), at the paper's 21 cutoffs
7 .. 1e5, timed after compilation. Reference: scipy's adaptive ``dblquad`` over each half
of the box split at 0 and at the diagonal y1 = y2, on a random sample of the integrals.

d_in = 2 (the four corner inputs): points of the box rule, bytes of one block of the
propagator matrix against the whole matrix, time per cutoff, and the accuracy of the
default rule against a finer one (more nodes per panel, smaller panel ratio).

    .venv/bin/python benchmarks/second_order.py [--quick] [--ensemble erf] [--sample 12]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy import integrate

import nngp_ppl as nn
from nngp_ppl import tuples
from nngp_ppl.theory import diagrams as dg
from nngp_ppl.theory import second_order as so

sys.path.insert(0, str(Path(__file__).resolve().parent))
from integrals import scalar_kernel  # noqa: E402

warnings.filterwarnings("ignore", category=integrate.IntegrationWarning)


def workload_keys(net, X):
    """Integral shapes of the n = 4, 6 second-order designs, λ and κ, rule 4.5 on and off."""
    K = np.asarray(net.kernel(X))
    keys = set()
    for n in (4, 6):
        for drop in (True, False):
            keys |= set(dg._second_order_matrices(K, n, ("lambda", "kappa"), drop, None))
    return sorted(keys)


def dblquad(K, xs1, l1, xs2, l2, lines, cut):
    def f(y2, y1):
        return (math.prod(K(x, y1) for x in xs1) * K(y1, y1) ** l1 * K(y1, y2) ** lines
                * math.prod(K(x, y2) for x in xs2) * K(y2, y2) ** l2)

    # Each axis split at 0 and at ±1, ±10, ±100, ... (adaptive quadrature alone does not
    # find the scale of the inputs inside a box of side 2e5), squares on the diagonal also
    # split at y1 = y2 (the ReLU kernel's cusp).
    edges = [0.0] + [10.0**j for j in range(int(math.log10(cut)) + 1) if 10.0**j < cut] + [cut]
    edges = sorted({-e for e in edges} | set(edges))
    total = 0.0
    for i, (a, b) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        for j, (c, d) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
            if i != j:
                total += integrate.dblquad(f, a, b, c, d, epsabs=0, epsrel=1e-10)[0]
            else:
                for lo, hi in ((lambda y, c=c: c, lambda y: y), (lambda y: y, lambda y, d=d: d)):
                    total += integrate.dblquad(f, a, b, lo, hi, epsabs=0, epsrel=1e-10)[0]
    return total


def one_dimension(ensemble: str, sample: int, quick: bool) -> None:
    net = nn.make_ensemble(ensemble, d_in=1, **({"sigma_b": 1.0} if ensemble == "relu" else {}))
    X = nn.paper_inputs(ensemble, 1)
    cutoffs = np.asarray(nn.PAPER_CUTOFFS, dtype=float)
    keys = workload_keys(net, X)
    n_ints = sum(math.comb(len(X) + k.m1 - 1, k.m1) * math.comb(len(X) + k.m2 - 1, k.m2)
                 for k in keys)
    t0 = time.perf_counter()
    out = so.two_vertex_integrals(net, X, keys, cutoffs)
    first = time.perf_counter() - t0
    times = []
    for _ in range(1 if quick else 3):
        t0 = time.perf_counter()
        so.two_vertex_integrals(net, X, keys, cutoffs)
        times.append(time.perf_counter() - t0)
    mem = so.memory_estimate(net, X, keys, cutoffs.max())
    print(f"d_in = 1, {net!r}, 6 inputs: {len(keys)} integral shapes, {n_ints} integrals x "
          f"{len(cutoffs)} cutoffs")
    print(f"  first call (compiles): {first:.2f} s;  after compilation: {min(times):.2f} s "
          f"(requirement < 10 s: {'met' if min(times) < 10 else 'NOT met'})")
    print(f"  {mem['method']} method at Λ = 1e5: P = {mem['points']} points, blocks of "
          f"{mem['block_rows']} rows = {mem['block_bytes'] / 2**20:.1f} MiB (whole "
          f"propagator matrix {mem['full_matrix_bytes'] / 2**20:.1f} MiB)")

    rng = np.random.default_rng(0)
    K = scalar_kernel(net)
    ref_cuts = [7.0, 100.0] if quick else [7.0, 100.0, 1e3, 1e5]
    worst = 0.0
    t_ref = 0.0
    for _ in range(sample):
        key = keys[rng.integers(len(keys))]
        c = ref_cuts[rng.integers(len(ref_cuts))]
        ci = int(np.flatnonzero(cutoffs == c)[0]) if c in cutoffs else None
        if ci is None:
            continue
        u = rng.integers(math.comb(len(X) + key.m1 - 1, key.m1))
        v = rng.integers(math.comb(len(X) + key.m2 - 1, key.m2))
        r1 = tuples.distinct_tuples(len(X), key.m1)[u]
        r2 = tuples.distinct_tuples(len(X), key.m2)[v]
        t0 = time.perf_counter()
        ref = dblquad(K, X[r1, 0], key.loops1, X[r2, 0], key.loops2, key.lines, c)
        t_ref += time.perf_counter() - t0
        err = abs(out[key][ci, u, v] - ref) / abs(ref)
        worst = max(worst, err)
        print(f"    {tuple(key)} Λ={c:g} u={r1.tolist()} v={r2.tolist()}: rel. diff {err:.1e}")
    per = t_ref / max(1, sample)
    print(f"  dblquad sample: worst relative difference {worst:.1e} (requirement 1e-8: "
          f"{'met' if worst < 1e-8 else 'NOT met'}); dblquad {per:.2f} s per integral, "
          f"i.e. ~{per * n_ints * len(cutoffs) / 3600:.0f} h for the workload "
          f"(ratio ~{per * n_ints * len(cutoffs) / min(times):.0e})")


def two_dimensions(ensemble: str, quick: bool) -> None:
    net = nn.make_ensemble(ensemble, d_in=2, **({"sigma_b": 1.0} if ensemble == "relu" else {}))
    X = nn.paper_inputs(ensemble, 2)
    keys = [so.TwoVertexKey(3, 0, 3, 0, 1), so.TwoVertexKey(2, 0, 2, 0, 2),
            so.TwoVertexKey(3, 1, 3, 0, 1)]
    cut = 10.0 if quick else 30.0
    rules = [("coarse", 4, 8.0), ("default", None, None)] if quick else \
        [("coarse", 4, 8.0), ("default", None, None), ("fine", 10, 4.0)]
    print(f"d_in = 2, {net!r}, 4 inputs, Λ = {cut:g}: λ² exchange, bubble, κλ exchange")
    results = {}
    for name, nodes, ratio in rules:
        mem = so.memory_estimate(net, X, keys, cut, nodes=nodes, ratio=ratio)
        t0 = time.perf_counter()
        results[name] = so.two_vertex_integrals(net, X, keys, cut, nodes=nodes, ratio=ratio)
        dt = time.perf_counter() - t0
        print(f"  {name:8s} rule: P = {mem['points']:6d}, block {mem['block_rows']} rows = "
              f"{mem['block_bytes'] / 2**20:.0f} MiB (whole matrix "
              f"{mem['full_matrix_bytes'] / 2**30:.2f} GiB), {dt:.1f} s incl. compilation")
    best = results[rules[-1][0]]
    for name, _, _ in rules[:-1]:
        err = max(float(np.max(np.abs(results[name][k] - best[k]) / np.abs(best[k])))
                  for k in keys)
        print(f"  {name} vs {rules[-1][0]}: worst relative difference {err:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ensemble", default="erf", choices=["erf", "relu", "gauss"])
    parser.add_argument("--sample", type=int, default=12,
                        help="integrals checked against dblquad")
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats, reference cutoffs and d_in = 2 rules")
    args = parser.parse_args()
    one_dimension(args.ensemble, args.sample if not args.quick else min(args.sample, 4),
                  args.quick)
    two_dimensions(args.ensemble, args.quick)


if __name__ == "__main__":
    main()
