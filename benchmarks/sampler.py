"""Throughput and memory of the streaming correlator sampler (a script, not a test).

For each (ensemble, width) on the paper's six inputs it measures, in the same run:

* ``sampler``: :func:`nngp_ppl.sampling.sampler.network_sums` with the full estimator covariance
  (orders 2, 4, 6 and the 11 087 monomials of orders 2..12), default batch size, with the
  CPU's default accumulation kernel (C, :mod:`nngp_ppl.sampling._native`, where it builds);
* ``xla``: the same with the XLA kernel (``NNGP_PPL_KERNEL=xla``), which GPUs use;
* ``no-cov``: the same with ``covariance=False`` (orders 2, 4, 6 and their squares);
* ``odd``: the same as ``sampler`` with every order 1..6 (odd correlators and the 1-pt
  function; 18 563 monomials of orders 1..12 for k = 6, 1.67x the even run's), to judge
  whether the odd orders are cheap enough to measure by default. Measured (``--quick``,
  2-core machine at load ~12 from other processes, CPU time): 0.79x / 0.86x / 0.95x the
  networks per second of orders 2, 4, 6 at N = 10 / 100 / 1000, the accumulation
  1.47x / 1.74x / 1.67x the even run's (in proportion to the monomials: the same cost per
  monomial). Not cheap at small widths, so the default orders stay 2, 4, 6 and odd orders
  are asked for (``orders=(1, 2, 3, 4, 5, 6)``, ``--orders 1,2,3,4,5,6``);
* ``floor``: draw the parameters and evaluate the networks, no correlators (the same
  jit-compiled forward pass and batch size, outputs summed so nothing is optimised away);
* ``numpy``: a plain vectorised NumPy implementation of the same statistics, kept below:
  float32 draws and forward pass, float64 products over the 609 distinct tuples, their
  sums and the sum of their outer products (the textbook covariance);
* ``mm64`` / ``mm32``: the *bookkeeping floor*, a plain square matrix product (float64 /
  float32, one XLA call per batch) with as many multiply-adds per network as the
  accumulation's minimum (:func:`bookkeeping_ops`). A BLAS-bound implementation of the
  bookkeeping could not beat it: every monomial sum needs at least one multiply-add per
  network, and a square matrix product is the fastest way this machine does
  multiply-adds. The memory traffic is no bound here: per network only its k float32
  outputs come from memory (24 bytes for k = 6); the products and the ~100 kB of running
  totals stay in cache.

It prints networks per second and the ratios sampler/numpy (speed-up) and
sampler/floor - 1 (cost of the accumulation), then the accumulation's time per network,
(sampler - floor), over the bookkeeping floor mm64 (and mm32), then the peak resident
memory of two child processes that sample 10x different numbers of networks. Targets
(2-core CPU): >= 3x NumPy at N = 1000, accumulation <= 30% of the floor at N >= 100,
within 2x of the bookkeeping floor at N = 10, memory flat in n_nets.

    python benchmarks/sampler.py            # all ensembles, N = 2, 10, 100, 1000
    python benchmarks/sampler.py --quick    # Erf-net at N = 10, 100, 1000; smaller runs
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

import numpy as np


def _setup():
    import jax
    import jax.numpy as jnp

    import nngp_ppl
    from nngp_ppl.ensembles.core import network_keys
    from nngp_ppl.sampling.sampler import default_batch_size, network_sums

    return jax, jnp, nngp_ppl, network_keys, default_batch_size, network_sums


ENSEMBLE_ARGS = {"erf": {}, "relu": {"sigma_b": 0.0}, "gauss": {}}

#: The orders of the ``odd`` measurement: every order 1..6.
ODD_ORDERS = (1, 2, 3, 4, 5, 6)


# ---------------------------------------------------------------------------------------------
# the NumPy baseline
# ---------------------------------------------------------------------------------------------
def numpy_stats(name, X, width, n_nets, batch, sigma_w=1.0, sigma_b=1.0, seed=0):
    """Plain vectorised NumPy: means and summed outer products of the 609 observables."""
    from scipy.special import erf

    from nngp_ppl.tuples import distinct_tuples

    rng = np.random.default_rng(seed)
    k, d_in = X.shape
    X32 = X.astype(np.float32)
    var = (sigma_b**2 + sigma_w**2 * np.sum(X * X, axis=1) / d_in).astype(np.float32)
    tuples = [distinct_tuples(k, n) for n in (2, 4, 6)]
    T = sum(len(t) for t in tuples)
    total, outer = np.zeros(T), np.zeros((T, T))
    done = 0
    while done < n_nets:
        b = min(batch, n_nets - done)
        w0 = rng.standard_normal((b, width, d_in), dtype=np.float32) * np.float32(
            sigma_w / np.sqrt(d_in))
        b0 = rng.standard_normal((b, width, 1), dtype=np.float32) * np.float32(sigma_b)
        a = rng.standard_normal((b, 1, width), dtype=np.float32) * np.float32(
            sigma_w / np.sqrt(width))
        b1 = rng.standard_normal((b, 1), dtype=np.float32) * np.float32(sigma_b)
        z = w0 @ X32.T + b0  # (b, width, k)
        if name == "erf":
            h = erf(z)
        elif name == "relu":
            h = np.maximum(z, 0)
        else:
            h = np.exp(z - var)
        f = (a @ h)[:, 0, :] + b1  # (b, k)
        f = f.astype(np.float64)
        obs = np.concatenate([np.prod(f[:, t], axis=2) for t in tuples], axis=1)
        total += obs.sum(axis=0)
        outer += obs.T @ obs
        done += b
    return total, outer


# ---------------------------------------------------------------------------------------------
# the bookkeeping floor
# ---------------------------------------------------------------------------------------------
def bookkeeping_ops(k: int, orders=(2, 4, 6)) -> dict:
    """Minimum multiply-adds per network of the full-covariance accumulation.

    Every distinct monomial of the accumulated orders (2..12 for orders 2, 4, 6: 11 087
    for k = 6) needs at least one multiply (it is built from a lower-order product) and one
    add (into its sum); the tail sums of the measured orders (X^3 and X^4 of each of the
    609 observables) need a square and two multiply-adds each.
    """
    from nngp_ppl.sampling.stats import accumulated_orders

    monomials = sum(math.comb(k + m - 1, m) for m in accumulated_orders(orders, True))
    observables = sum(math.comb(k + n - 1, n) for n in orders)
    return {"monomials": monomials, "observables": observables,
            "fma": monomials + 3 * observables}


#: Networks per call of the floor's matrix product: the largest default batch, where the
#: product runs fastest (one call, long contraction).
FLOOR_COLUMNS = 4096


def matmul_floor(jax, jnp, fma: int, columns: int, dtype):
    """A jit-compiled square product (a x columns)(columns x a) with a^2 >= fma."""
    a = math.isqrt(fma - 1) + 1
    rng = np.random.default_rng(0)
    A = jnp.asarray(rng.standard_normal((a, columns)), dtype)
    B = jnp.asarray(rng.standard_normal((a, columns)), dtype)
    product = jax.jit(lambda A, B: A @ B.T)
    return lambda: product(A, B)


# ---------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------
def interleaved_times(fns: dict, counts: dict, repeats: int) -> dict:
    """Seconds per network of each function: the fastest of ``repeats`` rounds.

    The functions run round-robin, so that all of them see the same load on a shared
    machine, and the minimum is the least disturbed run. Both wall-clock and CPU time
    (all threads of this process) are kept: wall-clock is what a user waits, CPU time is
    the work done, which another process's load disturbs much less.
    """
    for fn in fns.values():
        fn()  # warm-up: compilation, caches
    wall = {key: [] for key in fns}
    cpu = {key: [] for key in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[key].append((time.perf_counter() - t0) / counts[key])
            cpu[key].append((time.process_time() - c0) / counts[key])
    return {key: (min(wall[key]), min(cpu[key])) for key in fns}


def with_kernel(kernel, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with ``NNGP_PPL_KERNEL=kernel`` (read when a shard starts)."""
    old = os.environ.get("NNGP_PPL_KERNEL")
    os.environ["NNGP_PPL_KERNEL"] = kernel
    try:
        return fn(*args, **kwargs)
    finally:
        if old is None:
            del os.environ["NNGP_PPL_KERNEL"]
        else:
            os.environ["NNGP_PPL_KERNEL"] = old


def measure(name, width, n_nets, n_numpy, repeats):
    jax, jnp, nngp_ppl, network_keys, default_batch_size, network_sums = _setup()
    net = nngp_ppl.make_ensemble(name, **ENSEMBLE_ARGS[name])
    X = nngp_ppl.paper_inputs(name)
    k = len(X)
    batch = default_batch_size(width, k, net.d_in)
    # Whole batches, so that the three JAX paths do exactly the same draws.
    n_nets = -(-n_nets // batch) * batch

    @jax.jit
    def floor_step(total, Xj, seed, start):
        keys = network_keys(seed, width, start, batch)
        f = net.network_outputs(keys, Xj, width, jnp.float32)
        return total + jnp.sum(f.astype(jnp.float64), axis=0)

    Xj = jnp.asarray(X)

    def floor():
        total = jnp.zeros(k)
        for start in range(0, n_nets, batch):
            total = floor_step(total, Xj, jnp.int64(0), jnp.uint32(start))
        jax.block_until_ready(total)

    ops = bookkeeping_ops(k)
    mm = {dt: matmul_floor(jax, jnp, ops["fma"], FLOOR_COLUMNS, dtype)
          for dt, dtype in (("mm64", jnp.float64), ("mm32", jnp.float32))}
    mm_calls = max(1, n_nets // FLOOR_COLUMNS)

    def repeat(fn):
        def run():
            for _ in range(mm_calls):
                out = fn()
            jax.block_until_ready(out)
        return run

    fns = {
        "floor": floor,
        "mm64": repeat(mm["mm64"]),
        "mm32": repeat(mm["mm32"]),
        "sampler": lambda: network_sums(net, X, width, 0, 0, n_nets, batch_size=batch),
        "no-cov": lambda: network_sums(net, X, width, 0, 0, n_nets, batch_size=batch,
                                       covariance=False),
        "xla": lambda: with_kernel("xla", network_sums, net, X, width, 0, 0, n_nets,
                                   batch_size=batch),
        "odd": lambda: network_sums(net, X, width, 0, 0, n_nets, batch_size=batch,
                                    orders=ODD_ORDERS),
    }
    counts = {"floor": n_nets, "mm64": mm_calls * FLOOR_COLUMNS,
              "mm32": mm_calls * FLOOR_COLUMNS, "sampler": n_nets,
              "no-cov": n_nets, "xla": n_nets, "odd": n_nets}
    times = interleaved_times(fns, counts, repeats)
    times["numpy"] = numpy_times(name, width, n_numpy, max(64, min(batch, 1024)), repeats)
    return batch, times


def numpy_child(name, width, n_numpy, batch, repeats):
    """Time the NumPy baseline in this (child) process; print its (wall, cpu) s/network."""
    _, _, nngp_ppl, *_ = _setup()
    net = nngp_ppl.make_ensemble(name, **ENSEMBLE_ARGS[name])
    X = nngp_ppl.paper_inputs(name)
    t = interleaved_times({"numpy": lambda: numpy_stats(
        name, X, width, n_numpy, batch=batch, sigma_w=net.sigma_w, sigma_b=net.sigma_b)},
        {"numpy": n_numpy}, repeats)
    print(json.dumps(t["numpy"]))


def numpy_times(name, width, n_numpy, batch, repeats):
    """The NumPy baseline's (wall, cpu) seconds per network, measured in a child process.

    NumPy's BLAS threads keep spinning for a while after each call, and that CPU time
    would be charged to whatever this process times next (measured: it doubled the CPU
    time of the float64 floor); in its own process it disturbs nothing.
    """
    proc = subprocess.run(
        [sys.executable, __file__, "--numpy-child", name, str(width), str(n_numpy),
         str(batch), str(repeats)], capture_output=True, text=True, check=True)
    return tuple(json.loads(proc.stdout.strip().splitlines()[-1]))


# ---------------------------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------------------------
def memory_child(name, width, n_nets):
    """Sample in this (child) process and print its peak resident set size in MiB."""
    _, _, nngp_ppl, *_ = _setup()
    net = nngp_ppl.make_ensemble(name, **ENSEMBLE_ARGS[name])
    nngp_ppl.sample_correlators(net, nngp_ppl.paper_inputs(name), width, n_nets,
                                progress=False)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"peak_mib": peak_kib / 1024}))


def peak_memory(name, width, n_nets):
    proc = subprocess.run(
        [sys.executable, __file__, "--memory-child", name, str(width), str(n_nets)],
        capture_output=True, text=True, check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])["peak_mib"]


# ---------------------------------------------------------------------------------------------
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Erf-net only, smaller runs")
    parser.add_argument("--memory-child", nargs=3, metavar=("ENSEMBLE", "WIDTH", "N_NETS"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--numpy-child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.numpy_child:
        name, *rest = args.numpy_child
        numpy_child(name, *map(int, rest))
        return 0
    if args.memory_child:
        name, width, n = args.memory_child
        memory_child(name, int(width), int(n))
        return 0

    ensembles = ["erf"] if args.quick else ["erf", "relu", "gauss"]
    widths = [10, 100, 1000] if args.quick else [2, 10, 100, 1000]
    budget = 3e5 if args.quick else 1e6  # networks x width per measurement
    repeats = 5 if args.quick else 7
    print(f"nngp_ppl sampler benchmark: {os.cpu_count()} CPUs (load {os.getloadavg()[0]:.1f}), "
          f"paper inputs (k = 6), orders 2, 4, 6; best of {repeats} interleaved rounds")
    print("nets/s are wall-clock; ratios are given from wall-clock and from CPU time "
          "(wall | cpu)")
    head = (f"{'ensemble':>8} {'N':>5} {'batch':>6} {'sampler':>9} {'no-cov':>9} {'floor':>9} "
            f"{'numpy':>9} {'x numpy':>13} {'acc/floor':>13} {'no-cov/floor':>13}")
    print(head)
    results = []
    for name in ensembles:
        for width in widths:
            n_nets = int(max(4096, min(200_000, budget / width)))
            n_numpy = int(max(512, min(20_000, budget / width / 10)))
            batch, t = measure(name, width, n_nets, n_numpy, repeats)
            r = {}
            for i, clock in enumerate(("wall", "cpu")):
                r["speedup", clock] = t["numpy"][i] / t["sampler"][i]
                r["acc", clock] = t["sampler"][i] / t["floor"][i] - 1
                r["acc_nc", clock] = t["no-cov"][i] / t["floor"][i] - 1
                r["acc_xla", clock] = t["xla"][i] / t["floor"][i] - 1
                # the accumulation's own time per network against the bookkeeping floor
                r["bk64", clock] = (t["sampler"][i] - t["floor"][i]) / t["mm64"][i]
                r["bk32", clock] = (t["sampler"][i] - t["floor"][i]) / t["mm32"][i]
            r["acc_us"] = 1e6 * (t["sampler"][1] - t["floor"][1])
            r["odd_us"] = 1e6 * (t["odd"][1] - t["floor"][1])
            r["odd_rate"] = t["sampler"][1] / t["odd"][1]
            r["xla_us"] = 1e6 * (t["xla"][1] - t["floor"][1])
            r["mm_us"] = 1e6 * t["mm64"][1], 1e6 * t["mm32"][1]
            results.append((name, width, r))
            print(f"{name:>8} {width:>5} {batch:>6} {1 / t['sampler'][0]:>9.3g} "
                  f"{1 / t['no-cov'][0]:>9.3g} {1 / t['floor'][0]:>9.3g} "
                  f"{1 / t['numpy'][0]:>9.3g} "
                  f"{r['speedup', 'wall']:>5.1f}x|{r['speedup', 'cpu']:>5.1f}x "
                  f"{r['acc', 'wall']:>+6.0%}|{r['acc', 'cpu']:>+5.0%} "
                  f"{r['acc_nc', 'wall']:>+6.0%}|{r['acc_nc', 'cpu']:>+5.0%}", flush=True)

    print("\ntargets (judged on CPU time, which other processes on a shared machine disturb "
          "least):")
    for name, width, r in results:
        if width == 1000:
            verdict = "met" if r["speedup", "cpu"] >= 3 else "MISSED"
            print(f"  {name}-net N=1000: {r['speedup', 'cpu']:.1f}x NumPy (target >= 3x): "
                  f"{verdict}")
        if width >= 100:
            verdict = "met" if r["acc", "cpu"] <= 0.30 else "MISSED"
            verdict_nc = "met" if r["acc_nc", "cpu"] <= 0.30 else "MISSED"
            print(f"  {name}-net N={width}: accumulation {r['acc', 'cpu']:+.0%} over the floor "
                  f"with full covariance ({verdict}), {r['acc_nc', 'cpu']:+.0%} with "
                  f"covariance=False ({verdict_nc}); target <= 30%")

    print("\nthe XLA kernel (NNGP_PPL_KERNEL=xla; what GPUs use), same rounds, CPU time:")
    for name, width, r in results:
        print(f"  {name}-net N={width}: accumulation {r['acc_xla', 'cpu']:+.0%} over the floor "
              f"(wall {r['acc_xla', 'wall']:+.0%}), {r['xla_us']:.2f} us/net: "
              f"{r['xla_us'] / r['acc_us']:.1f}x the default kernel's {r['acc_us']:.2f}")

    odd_ops = bookkeeping_ops(6, ODD_ORDERS)["monomials"] / bookkeeping_ops(6)["monomials"]
    print(f"\norders 1..6 (odd correlators) against 2, 4, 6, same rounds, CPU time "
          f"({odd_ops:.2f}x the monomials):")
    for name, width, r in results:
        print(f"  {name}-net N={width}: {r['odd_rate']:.2f}x the networks per second, "
              f"accumulation {r['odd_us']:.2f} us/net = {r['odd_us'] / r['acc_us']:.2f}x "
              f"the even run's {r['acc_us']:.2f}")

    ops = bookkeeping_ops(6)
    print(f"\nbookkeeping floor (k = 6): {ops['monomials']:,} monomial sums + tail sums of "
          f"{ops['observables']} observables = {ops['fma']:,} multiply-adds per network "
          f"(memory: 24 B of outputs per network; products and totals stay in cache)")
    print("accumulation = sampler - floor per network (CPU time); bookkeeping floor = a "
          "square matmul with as many multiply-adds (float64 | float32), same run:")
    for name, width, r in results:
        print(f"  {name}-net N={width}: accumulation {r['acc_us']:.2f} us/net, floor "
              f"{r['mm_us'][0]:.2f} | {r['mm_us'][1]:.2f} us/net: "
              f"{r['bk64', 'cpu']:.1f}x the float64 floor, {r['bk32', 'cpu']:.1f}x the "
              f"float32 one (wall: {r['bk64', 'wall']:.1f}x | {r['bk32', 'wall']:.1f}x)")
    for name, width, r in results:
        if width == 10:
            verdict = "met" if r["bk64", "cpu"] <= 2 else "MISSED"
            print(f"  {name}-net N=10: within 2x of the float64 bookkeeping floor (target): "
                  f"{verdict}")

    small, large = (10_000, 100_000) if args.quick else (20_000, 200_000)
    mem = [peak_memory("erf", 100, n) for n in (small, large)]
    print(f"\npeak memory, erf-net N=100: {mem[0]:.0f} MiB at {small} networks, "
          f"{mem[1]:.0f} MiB at {large} ({mem[1] / mem[0]:.2f}x for 10x the networks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
