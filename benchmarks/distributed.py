"""Dask sampling: a LocalCluster with 2 worker processes against a plain local run.

``python benchmarks/distributed.py [--quick]`` starts a ``distributed.LocalCluster`` on
127.0.0.1 with two single-threaded worker processes, warms both up (each worker compiles
the sampler step once), then times :func:`nngp_ppl.sample_correlators` locally and with
``dask=client`` on the same workload, interleaved (best of several rounds), and checks that
both give bitwise the same sums. It prints the speed-up (local time / Dask time) and, from
the Dask task stream, how many shards each worker ran and the scheduling overhead
(wall-clock time not spent inside shard tasks).

What to expect: on P free cores a local run already keeps about one to P cores busy
(XLA:CPU threads), so two single-threaded workers gain little on a small machine; the
point of the Dask backend is many machines, where the speed-up is the number of workers
times the per-worker rate (shards are independent; the client only adds 609 to 11 087
float64 numbers per shard).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

# Run as a script, this file's folder comes first on sys.path and its name would shadow
# the `distributed` package (here and in the spawned workers, which inherit sys.path).
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]


def _workload(quick: bool):
    """(width, n_nets, shard_size): at least 8 shards per width, so both workers stay busy."""
    if quick:
        return [(100, 65_536, 4096), (1000, 16_384, 1024)]
    return [(10, 262_144, 16_384), (100, 131_072, 8192), (1000, 32_768, 2048)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two widths, smaller runs")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    args = parser.parse_args(argv)

    import numpy as np
    from distributed import Client, LocalCluster, get_task_stream

    import nngp_ppl
    from nngp_ppl.sampling.sampler import plan_run

    warnings.simplefilter("ignore", nngp_ppl.sampling.stats.HeavyTailWarning)
    net, X = nngp_ppl.ErfNet(), nngp_ppl.paper_inputs("erf")
    repeats = 2 if args.quick else 3
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=None)
    client = Client(cluster)
    startup = time.perf_counter() - t0
    print(f"Dask LocalCluster ({args.workers} worker processes, 1 thread each) vs local: "
          f"erf-net, paper inputs (k = 6), orders 2,4,6 with covariance; {os.cpu_count()} "
          f"CPUs, load average {load0:.1f}; cluster start {startup:.1f} s; best of "
          f"{repeats} interleaved rounds", flush=True)
    print(f"{'N':>6} {'n_nets':>8} {'shard':>6} {'local nets/s':>13} {'dask nets/s':>12} "
          f"{'speed-up':>9} {'shards/worker':>14} {'overhead':>9} {'bitwise':>8}", flush=True)
    ok = True
    try:
        for width, n_nets, shard in _workload(args.quick):
            def run(dask, width=width, n_nets=n_nets, shard=shard):
                return nngp_ppl.sample_correlators(net, X, width, n_nets, shard_size=shard,
                                                   dask=dask, progress=False)

            local, remote = run(None), run(client)  # warm-up: compile here and on workers
            same = all(np.array_equal(local.moment_sums(width)[m], remote.moment_sums(width)[m])
                       for m in local.accumulated_orders)
            ok &= same
            times = {"local": [], "dask": []}
            for _ in range(repeats):
                t = time.perf_counter()
                run(None)
                times["local"].append(time.perf_counter() - t)
                with get_task_stream(client) as ts:
                    t = time.perf_counter()
                    run(client)
                    elapsed = time.perf_counter() - t
                times["dask"].append(elapsed)
            tasks = [x for x in ts.data if str(x["key"]).startswith("nngp-shard-")]
            per_worker = {}
            busy = 0.0
            for x in tasks:
                per_worker[x["worker"]] = per_worker.get(x["worker"], 0) + 1
                busy += sum(s["stop"] - s["start"] for s in x["startstops"]
                            if s["action"] == "compute")
            overhead = 1 - busy / (len(per_worker) * elapsed) if per_worker else float("nan")
            tl, td = min(times["local"]), min(times["dask"])
            actual = plan_run(net, X, width, n_nets, shard_size=shard).shard[0]  # whole batches
            print(f"{width:>6} {n_nets:>8} {actual:>6} {n_nets / tl:>13.4g} {n_nets / td:>12.4g} "
                  f"{tl / td:>8.2f}x {'/'.join(map(str, sorted(per_worker.values()))):>14} "
                  f"{overhead:>8.0%} {'yes' if same else 'NO':>8}", flush=True)
    finally:
        client.close()
        cluster.close()
    print(f"speed-up = local wall time / Dask wall time (> 1: Dask faster); overhead = share of "
          f"the workers' wall time not spent computing shards; load average now "
          f"{os.getloadavg()[0]:.1f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
