"""Speed of trained ensembles (:func:`nngp_ppl.training.trainer.train_correlators`; a script, not a
test).

The issue's case: Erf-net of width 100, d_in = 1, 16 training points, 1000 full-batch
gradient-descent steps, correlators of orders 2, 4, 6 with covariance at the paper's six
inputs recorded at steps 0 and T, 10^5 networks. It measures, in one run:

* ``ours``: :func:`train_correlators` (vmapped batches, the sampler's accumulation);
* ``loop``: what a user would write: one network's training jit-compiled once
  (``jax.lax.fori_loop`` of ``jax.grad`` steps) and called in a Python loop over networks,
  each network's outputs at the test inputs collected; a subset of networks is timed and
  the time per network extrapolated;
* ``floor``: the forward and backward matrix-product multiply-adds of the training,
  N n (d_in + 1) forward (first layer and readout), as many for the weight gradients and
  N n to back-propagate into the hidden layer, i.e. N n (2 d_in + 3) per network and step,
  at the multiply-add rate of a large float32 matrix product measured in the same run
  (the fastest thing this machine does).

It prints the time per network-step of each and the ratios loop/ours (target >= 30) and
ours/floor (target <= 3), in wall-clock and in CPU time (the floor's rate measured both
ways); on a shared machine the CPU-time ratios are the ones another process's load
disturbs least.

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


def matmul_rate(jax, jnp, size: int = 1024, repeats: int = 5) -> tuple[float, float]:
    """Multiply-adds per second of a jit-compiled float32 square product, per second of
    wall-clock and per second of CPU time (fastest of a few runs each)."""
    rng = np.random.default_rng(0)
    A = jnp.asarray(rng.standard_normal((size, size)), jnp.float32)
    B = jnp.asarray(rng.standard_normal((size, size)), jnp.float32)
    prod = jax.jit(lambda A, B: A @ B)
    prod(A, B).block_until_ready()
    runs = [_timed(lambda: prod(A, B).block_until_ready())[1:] for _ in range(repeats)]
    return size**3 / min(r[0] for r in runs), size**3 / min(r[1] for r in runs)


def user_loop(jax, jnp, net, width, X, x_train, y_train, steps, lr, n_nets):
    """The per-network loop a user would write; returns (outputs, wall s, cpu s)."""
    from nngp_ppl.ensembles.core import network_keys
    from nngp_ppl.training.trainer import draw_parameters, forward

    xt = jnp.asarray(np.reshape(x_train, (len(y_train), -1)), jnp.float32)
    yt = jnp.asarray(y_train, jnp.float32)
    Xt = jnp.asarray(X, jnp.float32)

    @jax.jit
    def train_one(key):
        p = draw_parameters(net, key, width, "ntk")

        def loss(p):
            r = forward(net, p, xt, width, "ntk") - yt
            return 0.5 * jnp.mean(r * r)

        def step(_, p):
            return jax.tree.map(lambda v, g: v - lr * g, p, jax.grad(loss)(p))

        p = jax.lax.fori_loop(0, steps, step, p)
        return forward(net, p, Xt, width, "ntk")

    keys = network_keys(0, width, 0, n_nets)
    train_one(keys[0]).block_until_ready()  # compile

    def run():
        return np.stack([np.asarray(train_one(keys[j])) for j in range(n_nets)])

    return _timed(run)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2048 networks, 100 steps")
    parser.add_argument("--n-nets", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--loop-nets", type=int, default=None,
                        help="networks timed in the per-network loop (extrapolated)")
    args = parser.parse_args(argv)
    n_nets = args.n_nets or (2048 if args.quick else 100_000)
    steps = args.steps or (100 if args.quick else 1000)
    loop_nets = args.loop_nets or (16 if args.quick else 64)

    import jax
    import jax.numpy as jnp

    import nngp_ppl
    from nngp_ppl.study.presets import paper_inputs
    from nngp_ppl.training.trainer import train_correlators

    width, n_train, lr = 100, 16, 0.5
    net = nngp_ppl.ErfNet(sigma_w=1.0, sigma_b=1.0)
    X = np.asarray(paper_inputs("erf", 1), np.float64).reshape(-1, 1)
    x_train = np.linspace(-1.5, 1.5, n_train)
    y_train = np.sin(2 * x_train)
    print(f"Erf-net N = {width}, {n_train} training points, {steps} GD steps, "
          f"{n_nets} networks, k = {len(X)} test inputs, orders 2, 4, 6 with covariance; "
          f"{len(jax.devices())} {jax.devices()[0].platform} device(s), "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    rate = matmul_rate(jax, jnp)
    macs = width * n_train * (2 * net.d_in + 3)
    floor = (macs / rate[0], macs / rate[1])
    print(f"float32 matmul rate {rate[0] / 1e9:.2f} G multiply-adds per s wall, "
          f"{rate[1] / 1e9:.2f} G per CPU-s; floor {macs} multiply-adds = "
          f"{floor[0] * 1e9:.0f} ns wall, {floor[1] * 1e9:.0f} ns CPU per network-step")

    # warm-up: the same batch programs compiled (the step count is not compiled in), then
    # the timed run
    train_correlators(net, X, width, n_nets, x_train, y_train, [0, 1], lr, progress=False)
    _, wall, cpu = _timed(lambda: train_correlators(net, X, width, n_nets, x_train, y_train,
                                                    [0, steps], lr, progress=False))
    ours = (wall / (n_nets * steps), cpu / (n_nets * steps))
    _, lwall, lcpu = user_loop(jax, jnp, net, width, X, x_train, y_train, steps, lr,
                               loop_nets)
    loop = (lwall / (loop_nets * steps), lcpu / (loop_nets * steps))
    for name, (w, c) in (("ours", ours), ("loop", loop)):
        print(f"{name:5s} {w * 1e9:10.0f} ns wall {c * 1e9:10.0f} ns cpu per network-step")
    print(f"loop / ours: {loop[0] / ours[0]:.1f}x wall, {loop[1] / ours[1]:.1f}x cpu "
          f"(target >= 30x)")
    print(f"ours / floor: {ours[0] / floor[0]:.2f}x wall, {ours[1] / floor[1]:.2f}x CPU "
          f"time (target <= 3x)")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
