"""Multi-device sampling: two forced CPU devices against one, and nets/s per width on any device.

``python benchmarks/devices.py [--quick]`` re-runs itself in a child process with
``XLA_FLAGS=--xla_force_host_platform_device_count=2`` (the flag must be set before JAX
starts) and there times :func:`nngp_ppl.sample_correlators` with ``devices=1`` and
``devices=2`` on the same workload, interleaved round-robin (best of several rounds, so
both see the same machine load), and checks that both give bitwise the same sums. It
prints the speed-up (one-device time / two-device time) from wall-clock and from process
CPU time. On a machine with P cores a single XLA:CPU device already multi-threads its big
operations, so the gain of a second device is the part of the work one device leaves
serial; expect at most P / (cores one device keeps busy).

``python benchmarks/devices.py --throughput [--n-nets 1e6] [--widths 10,100,1000]`` runs
the sampler on all local devices of JAX's default backend (a GPU after
``pip install -e '.[cuda]'``) and prints networks per second per width: the number the
issue asks for on GPUs (10⁶ networks at N = 1000 should take seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings

FLAG = "--xla_force_host_platform_device_count=2"


def _workload(quick: bool):
    """(width, n_nets, shard_size) rows; every run has at least 8 shards per width."""
    if quick:
        return [(100, 65_536, 4096), (1000, 16_384, 1024)]
    return [(10, 262_144, 16_384), (100, 131_072, 8192), (1000, 32_768, 2048)]


def child(quick: bool, repeats: int) -> None:
    import jax
    import numpy as np

    import nngp_ppl
    from nngp_ppl.sampling.sampler import plan_run

    warnings.simplefilter("ignore", nngp_ppl.sampling.stats.HeavyTailWarning)
    assert len(jax.local_devices()) == 2, jax.local_devices()
    net, X = nngp_ppl.ErfNet(), nngp_ppl.paper_inputs("erf")
    rows = []
    for width, n_nets, shard in _workload(quick):
        def run(d, width=width, n_nets=n_nets, shard=shard):
            return nngp_ppl.sample_correlators(net, X, width, n_nets, shard_size=shard,
                                               devices=d, progress=False)

        ref = {d: run(d) for d in (1, 2)}  # warm-up: compilation on both devices
        same = all(np.array_equal(ref[1].moment_sums(width)[m], ref[2].moment_sums(width)[m])
                   for m in ref[1].accumulated_orders)
        wall = {1: [], 2: []}
        cpu = {1: [], 2: []}
        for _ in range(repeats):
            for d in (1, 2):
                t0, c0 = time.perf_counter(), time.process_time()
                run(d)
                wall[d].append(time.perf_counter() - t0)
                cpu[d].append(time.process_time() - c0)
        actual = plan_run(net, X, width, n_nets, shard_size=shard).shard[0]  # whole batches
        rows.append({"width": width, "n_nets": n_nets, "shard": actual, "bitwise": same,
                     "wall1": min(wall[1]), "wall2": min(wall[2]),
                     "cpu1": min(cpu[1]), "cpu2": min(cpu[2])})
    print(json.dumps(rows))


def compare(quick: bool) -> int:
    repeats = 3
    env = {**os.environ, "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " " + FLAG).strip(),
           "JAX_PLATFORMS": "cpu"}
    load0 = os.getloadavg()[0]
    cmd = [sys.executable, __file__, "--child", "--repeats", str(repeats)]
    if quick:
        cmd.append("--quick")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode:
        print(proc.stderr, file=sys.stderr)
        return proc.returncode
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"two forced CPU devices vs one: erf-net, paper inputs (k = 6), orders 2,4,6 with "
          f"covariance; {os.cpu_count()} CPUs, load average {load0:.1f} -> "
          f"{os.getloadavg()[0]:.1f}; best of {repeats} interleaved rounds")
    print(f"{'N':>6} {'n_nets':>8} {'shard':>6} {'1 dev nets/s':>13} {'2 dev nets/s':>13} "
          f"{'speed-up wall':>14} {'cores 1 dev':>12} {'cores 2 dev':>12} {'bitwise':>8}")
    for r in rows:
        print(f"{r['width']:>6} {r['n_nets']:>8} {r['shard']:>6} "
              f"{r['n_nets'] / r['wall1']:>13.4g} {r['n_nets'] / r['wall2']:>13.4g} "
              f"{r['wall1'] / r['wall2']:>13.2f}x {r['cpu1'] / r['wall1']:>12.2f} "
              f"{r['cpu2'] / r['wall2']:>12.2f} {'yes' if r['bitwise'] else 'NO':>8}")
    print("speed-up = one-device wall time / two-device wall time (> 1: two devices faster); "
          "cores = process CPU time / wall time (how many cores the run kept busy)")
    return 0 if all(r["bitwise"] for r in rows) else 1


def throughput(n_nets: int, widths: list[int]) -> int:
    import jax

    import nngp_ppl

    warnings.simplefilter("ignore", nngp_ppl.sampling.stats.HeavyTailWarning)
    devs = jax.local_devices()
    net, X = nngp_ppl.ErfNet(), nngp_ppl.paper_inputs("erf")
    print(f"sampler throughput on {len(devs)} x {devs[0].device_kind} ({devs[0].platform}): "
          f"erf-net, paper inputs (k = 6), orders 2,4,6 with covariance, {n_nets} networks")
    print(f"{'N':>6} {'seconds':>9} {'nets/s':>11}  (second run; the first compiles)")
    for width in widths:
        nngp_ppl.sample_correlators(net, X, width, n_nets, progress=False)
        t0 = time.perf_counter()
        nngp_ppl.sample_correlators(net, X, width, n_nets, progress=False)
        dt = time.perf_counter() - t0
        print(f"{width:>6} {dt:>9.2f} {n_nets / dt:>11.4g}", flush=True)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two widths, smaller runs")
    parser.add_argument("--throughput", action="store_true",
                        help="nets/s per width on all local devices of the default backend")
    parser.add_argument("--n-nets", type=float, default=1e6, help="networks (--throughput)")
    parser.add_argument("--widths", default="10,100,1000", help="widths (--throughput)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.quick, args.repeats)
        return 0
    if args.throughput:
        return throughput(int(args.n_nets), [int(w) for w in args.widths.split(",")])
    return compare(args.quick)


if __name__ == "__main__":
    sys.exit(main())
