"""The training's fast paths keep its numbers: the compiled training loop with its CPU
compiler options and donated buffers is bitwise reproducible, gives the same bits whether
the steps run in one call or in several (recorded steps in between), matches XLA's default
compilation to float32 round-off, and falls back to plain ``jax.jit`` on a JAX without
``compiler_options``. (Speed itself is measured in benchmarks/training.py, not here.)"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import nngp_ppl.training.trainer as tr
from nngp_ppl import ErfNet, GaussNet

NET = ErfNet(sigma_w=1.0, sigma_b=0.5)
X = np.array([-1.0, -0.2, 0.6])
X_TRAIN = np.array([-0.8, 0.0, 0.9, 1.3])
Y_TRAIN = np.array([0.3, -0.2, 0.5, 0.1])


def _train(net, platform, steps, batch=16, width=12):
    setup = tr.training_setup(net, X_TRAIN, Y_TRAIN, [0, 1], 0.4).compiled
    params, state = tr._compiled_init(net, width, batch, setup)(
        jnp.asarray(5, jnp.int64), jnp.asarray(0, jnp.uint32))
    train = tr._compiled_train(net, width, batch, setup, platform)
    for n in steps:
        params, state = train(params, state, jnp.asarray(n, jnp.int32))
    return [np.asarray(p) for p in params]


def test_training_is_bitwise_reproducible_and_independent_of_how_steps_are_split():
    whole = _train(NET, "cpu", [9])
    again = _train(NET, "cpu", [9])
    split = _train(NET, "cpu", [2, 3, 4])  # donated buffers between calls
    for a, b, c in zip(whole, again, split, strict=True):
        assert np.array_equal(a, b) and np.array_equal(a, c)


def test_cpu_compiler_options_change_only_the_rounding():
    # 512-bit vectors against XLA's default: the same gradient steps, float32 round-off
    # apart (9 steps at eta = 0.4; parameters are O(1)).
    for net in (NET, GaussNet(sigma_w=0.6, sigma_b=0.3)):
        fast = _train(net, "cpu", [9])
        plain = _train(net, "default", [9])
        for a, b in zip(fast, plain, strict=True):
            assert np.allclose(a, b, rtol=1e-5, atol=1e-5)


def test_trained_outputs_split_at_recorded_steps_equal_one_run():
    both = np.concatenate([X, X_TRAIN])
    stepped = tr.trained_outputs(NET, both, 10, 24, X_TRAIN, Y_TRAIN, [0, 3, 7], 0.4, seed=2)
    direct = tr.trained_outputs(NET, both, 10, 24, X_TRAIN, Y_TRAIN, [7], 0.4, seed=2)
    assert np.array_equal(stepped[2], direct[0])
    # and training lowered the loss
    loss = np.mean((stepped[:, :, len(X):] - Y_TRAIN) ** 2, axis=(1, 2))
    assert loss[2] < loss[1] < loss[0]


def test_jit_without_compiler_options_falls_back(monkeypatch):
    real = jax.jit
    calls = []

    def old_jit(fn, **kwargs):
        calls.append(sorted(kwargs))
        if "compiler_options" in kwargs:
            raise TypeError("jit() got an unexpected keyword argument 'compiler_options'")
        return real(fn, **kwargs)

    monkeypatch.setattr(tr.jax, "jit", old_jit)
    f = tr._jit(lambda x: 2 * x, "cpu")
    assert float(f(jnp.asarray(1.5))) == 3.0
    assert calls == [["compiler_options"], []]
