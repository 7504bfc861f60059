"""Speed of trained ensembles (a script, not a test).

:func:`nngp_ppl.training.trainer.train_correlators` against a per-network loop and floors.

The issue's case: Erf-net of width 100, d_in = 1, 16 training points, 1000 full-batch
gradient-descent steps, correlators of orders 2, 4, 6 with covariance at the paper's six
inputs recorded at steps 0 and T, 10^5 networks. It measures, in one run:

* ``ours``: :func:`train_correlators` (vmapped batches, the sampler's accumulation);
* ``loop``: what a user would write: one network's training jit-compiled once
  (``jax.lax.fori_loop`` of ``jax.grad`` steps) and called in a Python loop over networks,
  each network's outputs at the test inputs collected; a subset of networks is timed and
  the time per network extrapolated. Its cost is split into a per-call part (the same
  loop run for 1 step) and a per-step part;
* ``floor``: the forward and backward matrix-product multiply-adds of the training,
  N n (d_in + 1) forward (first layer and readout), as many for the weight gradients and
  N n to back-propagate into the hidden layer, i.e. N n (2 d_in + 3) per network and step,
  at the multiply-add rate of a large float32 matrix product measured in the same run
  (the fastest thing this machine does);
* ``activation``: what no program can skip besides the products: erf and erf' at the
  N n neuron-points of each network and step (one fused XLA loop over a (batch, N, n)
  array, the same vector code the training uses), per network-step; and the same for one
  network's (N, n) array, what the per-network loop pays for its arithmetic.

It prints the time per network-step of each and the ratios loop/ours (target >= 30) and
ours/floor (target <= 3), in wall-clock and in CPU time (the floor's rate measured both
ways); on a shared machine the CPU-time ratios are the ones another process's load
disturbs least. The time per network-step does not depend on the number of networks
(memory is flat in n_nets; batches of ``batch`` networks), so a run with fewer networks
measures the same ratio; ``--n-nets 100000`` is the issue's full size.

    python benchmarks/training.py            # 10^5 networks, 1000 steps
    python benchmarks/training.py --quick    # 2048 networks, 100 steps
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def _timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def _best(fn, repeats):
    """(wall, cpu) seconds, the fastest of ``repeats`` runs each."""
    runs = [_timed(fn)[1:] for _ in range(repeats)]
    return min(r[0] for r in runs), min(r[1] for r in runs)


def matmul_rate(jax, jnp, size: int = 1024, repeats: int = 5) -> tuple[float, float]:
    """Multiply-adds per second of a jit-compiled float32 square product, per second of
    wall-clock and per second of CPU time (fastest of a few runs each)."""
    rng = np.random.default_rng(0)
    A = jnp.asarray(rng.standard_normal((size, size)), jnp.float32)
    B = jnp.asarray(rng.standard_normal((size, size)), jnp.float32)
    prod = jax.jit(lambda A, B: A @ B)
    prod(A, B).block_until_ready()
    wall, cpu = _best(lambda: prod(A, B).block_until_ready(), repeats)
    return size**3 / wall, size**3 / cpu


def activation_time(jax, jnp, shape, steps: int, repeats: int = 3, options=None):
    """(wall, cpu) seconds per step of erf and erf' over an array of ``shape``, in one
    compiled loop of ``steps`` steps (each step's result feeds the next, so nothing is
    hoisted), with the training's XLA options on CPU."""
    z0 = jnp.asarray(np.random.default_rng(1).uniform(-2, 2, shape), jnp.float32)
    c = float(2 / np.sqrt(np.pi))  # weakly typed: the array stays float32

    def body(_, z):
        return z + 1e-3 * (jax.lax.erf(z) + c * jnp.exp(-z * z))

    kw = {"compiler_options": options} if options else {}
    run = jax.jit(lambda z: jax.lax.fori_loop(0, steps, body, z), **kw)
    run(z0).block_until_ready()
    wall, cpu = _best(lambda: run(z0).block_until_ready(), repeats)
    return wall / steps, cpu / steps


def user_loop(jax, jnp, net, width, X, x_train, y_train, steps, lr, n_nets):
    """The per-network loop a user would write: ``(outputs, wall s, cpu s, per-call wall s,
    per-call cpu s)``, the last two from the same loop run for 1 step per network."""
    from nngp_ppl.ensembles.core import network_keys
    from nngp_ppl.training.trainer import draw_parameters, forward

    xt = jnp.asarray(np.reshape(x_train, (len(y_train), -1)), jnp.float32)
    yt = jnp.asarray(y_train, jnp.float32)
    Xt = jnp.asarray(X, jnp.float32)

    @jax.jit
    def train_one(key, n_steps):
        p = draw_parameters(net, key, width, "ntk")

        def loss(p):
            r = forward(net, p, xt, width, "ntk") - yt
            return 0.5 * jnp.mean(r * r)

        def step(_, p):
            return jax.tree.map(lambda v, g: v - lr * g, p, jax.grad(loss)(p))

        p = jax.lax.fori_loop(0, n_steps, step, p)
        return forward(net, p, Xt, width, "ntk")

    keys = network_keys(0, width, 0, n_nets)
    train_one(keys[0], steps).block_until_ready()  # compile (the step count is traced)

    def run(n):
        return np.stack([np.asarray(train_one(keys[j], n)) for j in range(n_nets)])

    out, wall, cpu = _timed(lambda: run(steps))
    _, wall1, cpu1 = _timed(lambda: run(1))
    return out, wall, cpu, wall1 / n_nets, cpu1 / n_nets


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2048 networks, 100 steps")
    parser.add_argument("--n-nets", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None, help="networks per batch")
    parser.add_argument("--loop-nets", type=int, default=None,
                        help="networks timed in the per-network loop (extrapolated)")
    args = parser.parse_args(argv)
    n_nets = args.n_nets or (2048 if args.quick else 100_000)
    steps = args.steps or (100 if args.quick else 1000)
    loop_nets = args.loop_nets or (16 if args.quick else 64)

    import jax
    import jax.numpy as jnp

    import nngp_ppl
    from nngp_ppl.sampling.sampler import plan_run
    from nngp_ppl.study.presets import paper_inputs
    from nngp_ppl.training.trainer import (
        CPU_COMPILER_OPTIONS,
        default_train_batch,
        train_correlators,
    )

    width, n_train, lr = 100, 16, 0.5
    net = nngp_ppl.ErfNet(sigma_w=1.0, sigma_b=1.0)
    X = np.asarray(paper_inputs("erf", 1), np.float64).reshape(-1, 1)
    x_train = np.linspace(-1.5, 1.5, n_train)
    y_train = np.sin(2 * x_train)
    batch = plan_run(net, X, width, n_nets, batch_size=args.batch or default_train_batch(
        net, width, len(X), n_train)).batch[0]  # as train_correlators resolves it
    cpu_dev = jax.devices()[0].platform == "cpu"
    options = CPU_COMPILER_OPTIONS if cpu_dev else None
    print(f"Erf-net N = {width}, {n_train} training points, {steps} GD steps, "
          f"{n_nets} networks in batches of {batch}, k = {len(X)} test inputs, orders 2, 4, "
          f"6 with covariance; {len(jax.devices())} {jax.devices()[0].platform} device(s), "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)

    rate = matmul_rate(jax, jnp)
    macs = width * n_train * (2 * net.d_in + 3)
    floor = (macs / rate[0], macs / rate[1])
    print(f"float32 matmul rate {rate[0] / 1e9:.2f} G multiply-adds per s wall, "
          f"{rate[1] / 1e9:.2f} G per CPU-s; floor {macs} multiply-adds = "
          f"{floor[0] * 1e9:.0f} ns wall, {floor[1] * 1e9:.0f} ns CPU per network-step")
    act = activation_time(jax, jnp, (batch, width, n_train), 50, options=options)
    act = (act[0] / batch, act[1] / batch)
    act1 = activation_time(jax, jnp, (width, n_train), 2000)
    print(f"erf + erf' at {width * n_train} neuron-points: {act[0] * 1e9:.0f} ns wall, "
          f"{act[1] * 1e9:.0f} ns CPU per network-step over a batch ({batch}); "
          f"{act1[0] * 1e9:.0f} ns wall, {act1[1] * 1e9:.0f} ns CPU for one network's "
          f"array (XLA defaults, as the loop)", flush=True)

    # warm-up: the same batch programs compiled (the step count is not compiled in), then
    # the timed run
    kw = {"batch_size": batch, "progress": False}
    train_correlators(net, X, width, min(n_nets, 4 * batch), x_train, y_train, [0, 1], lr,
                      **kw)
    _, wall, cpu = _timed(lambda: train_correlators(net, X, width, n_nets, x_train, y_train,
                                                    [0, steps], lr, **kw))
    ours = (wall / (n_nets * steps), cpu / (n_nets * steps))
    _, lwall, lcpu, call_wall, call_cpu = user_loop(jax, jnp, net, width, X, x_train,
                                                    y_train, steps, lr, loop_nets)
    loop = (lwall / (loop_nets * steps), lcpu / (loop_nets * steps))
    for name, (w, c) in (("ours", ours), ("loop", loop)):
        print(f"{name:5s} {w * 1e9:10.0f} ns wall {c * 1e9:10.0f} ns cpu per network-step")
    print(f"loop per call (1 step, the network's draw and outputs): {call_wall * 1e6:.0f} us "
          f"wall, {call_cpu * 1e6:.0f} us CPU, i.e. {call_cpu / (steps * loop[1]):.1%} of "
          f"its {steps}-step CPU time")
    print(f"loop / ours: {loop[0] / ours[0]:.2f}x wall, {loop[1] / ours[1]:.2f}x cpu "
          f"(target >= 30x)")
    print(f"ours / floor: {ours[0] / floor[0]:.2f}x wall, {ours[1] / floor[1]:.2f}x CPU "
          f"time (target <= 3x)")
    print(f"ours / activation (erf + erf' over the batch): {ours[1] / act[1]:.2f}x CPU; "
          f"activation / floor {act[1] / floor[1]:.1f}x CPU; loop / its own activation "
          f"(one network's array) {loop[1] / act1[1]:.2f}x CPU: the largest loop / ours a "
          f"batched program could reach here is loop / activation = "
          f"{loop[1] / act[1]:.2f}x CPU")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
