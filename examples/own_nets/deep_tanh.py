r"""A user's own JAX network: two hidden tanh layers, written as plain ``init`` / ``apply``
functions (``examples/06_own_network.py`` samples and fits it, and runs its study through
``nngp-ppl reproduce --config``).

.. math::

    f(x) = a \cdot \tanh(W_2 \tanh(W_1 x + b_1) + b_2) + c,

W1 ~ N(0, σ²/d_in), W2 ~ N(0, σ²/N), a ~ N(0, σ²/N), biases ~ N(0, σ_b²), with σ = 1.5,
σ_b = 0.5 and d_in = 1. Module-level functions, so the network saves by import path
(``own_nets.deep_tanh:init``) and every file it writes reloads it wherever ``own_nets`` is
importable (``PYTHONPATH=examples``).

:func:`network` is a factory a study file names (``ensemble = "own_nets.deep_tanh:network"``):
the :class:`nngp_ppl.JaxNetwork` of these functions, with the NNGP kernel of the same
architecture, ``nngp_ppl.MLP(2, "tanh", 1, σ, σ_b)`` (layer recursion by quadrature), or
with ``kernel="monte_carlo"`` the package's Monte Carlo kernel and its error.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import nngp_ppl

SIGMA_W, SIGMA_B = 1.5, 0.5


def init(key, width):
    """One network of width N, d_in = 1."""
    k = jax.random.split(key, 6)
    return {
        "W1": SIGMA_W * jax.random.normal(k[0], (width, 1)),
        "b1": SIGMA_B * jax.random.normal(k[1], (width,)),
        "W2": SIGMA_W / jnp.sqrt(width) * jax.random.normal(k[2], (width, width)),
        "b2": SIGMA_B * jax.random.normal(k[3], (width,)),
        "a": SIGMA_W / jnp.sqrt(width) * jax.random.normal(k[4], (width,)),
        "c": SIGMA_B * jax.random.normal(k[5], ()),
    }


def apply(params, X):
    h = jnp.tanh(X @ params["W1"].T + params["b1"])
    h = jnp.tanh(h @ params["W2"].T + params["b2"])
    return h @ params["a"] + params["c"]


def network(d_in=1, kernel="recursion", kernel_nets=4096):
    """The ensemble of :func:`init` / :func:`apply` (d_in = 1 only): ``kernel`` is
    ``"recursion"`` (the MLP layer recursion of this architecture) or ``"monte_carlo"``."""
    if d_in != 1:
        raise nngp_ppl.NNGPInputError(f"d_in must be 1 for this network, got {d_in!r}")
    if kernel not in ("recursion", "monte_carlo"):
        raise nngp_ppl.NNGPInputError(
            f"kernel must be 'recursion' or 'monte_carlo', got {kernel!r}")
    exact = nngp_ppl.MLP(2, "tanh", 1, SIGMA_W, SIGMA_B) if kernel == "recursion" else None
    return nngp_ppl.JaxNetwork("own_nets.deep_tanh:init", "own_nets.deep_tanh:apply", d_in=1,
                               name="deep_tanh", sigma_b=SIGMA_B, kernel=exact,
                               kernel_nets=kernel_nets)
