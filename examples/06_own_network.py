"""Your own JAX network as an ensemble: sample it, measure its kernel, fit the quartic coupling.

Any pair ``init(key, width) -> params`` and ``apply(params, X) -> f`` is an ensemble
(``nngp_ppl.JaxNetwork``): the streaming sampler draws one network per key, exactly as for
the built-in nets. Here: a two-hidden-layer tanh network, written as a user would,

    f(x) = a · tanh(W2 tanh(W1 x + b1) + b2) + c,
    W1 ~ N(0, σ²/d_in), W2 ~ N(0, σ²/N), a ~ N(0, σ²/N), biases ~ N(0, σ_b²).

Without a kernel formula its GP kernel is a Monte Carlo estimate over fixed wide networks,
with its standard error (``kernel_stderr``): the script checks it against the layer
recursion of ``nngp_ppl.MLP(2, "tanh", ...)``, the same architecture, and then hands that
exact kernel to the network (``kernel=``), since a 2% kernel error would swamp the ~1/N
non-Gaussianity that λ̄ measures.

With two hidden layers the 2-pt function is not K at finite width (it differs at O(1/N),
docs/physics.md "Deep MLPs and your own network"): the package warns, and this script shows
what that does to λ̄. Per width it fits λ̄ at a cutoff Λ with
``nngp_ppl.eft.mean_coupling`` twice:

* from G4 - Wick(K), the paper's recipe (rule 4.5: K taken as the exact 2-pt function);
* from the connected 4-pt function G4 - Wick(Ĝ2) of the sampled data (the 2-pt shift
  removed): ``two_point="measured"``, what every fit does by default for a network whose
  2-pt function is not K (``two_point_exact=False``).

The connected one scales as 1/N (N·λ̄ roughly constant); the difference between the two
is the 2-pt shift that rule 4.5 would absorb into λ̄.

To save runs of such a network to files, put ``init`` and ``apply`` in an importable module
and name them by path: ``JaxNetwork("mynets.deep:init", "mynets.deep:apply", d_in=1)``; a
function defined in a script (as here) cannot be reloaded, and saving it is refused.

Run:  python examples/06_own_network.py [--small] [--cutoff 5]
"""

from __future__ import annotations

import argparse
import warnings

import jax
import jax.numpy as jnp
import numpy as np

import nngp_ppl
from nngp_ppl import eft

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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="few networks (tests)")
    parser.add_argument("--cutoff", type=float, default=5.0, help="cutoff Λ (default 5)")
    args = parser.parse_args(argv)

    X = np.array([[-1.0], [-0.5], [0.0], [0.5], [1.0]])
    widths = [4, 8] if args.small else [4, 8, 16, 32]
    n_nets = 20_000 if args.small else 1_000_000

    # 1. The Monte Carlo kernel, checked against the layer recursion of the same architecture.
    mc = nngp_ppl.JaxNetwork(init, apply, d_in=1, name="tanh2", sigma_b=SIGMA_B,
                             kernel_width=128, kernel_nets=1000 if args.small else 8000)
    recursion = nngp_ppl.MLP(2, "tanh", 1, SIGMA_W, SIGMA_B)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", nngp_ppl.TwoPointWarning)
        K_mc, K = mc.kernel(X), recursion.kernel(X)
    K_se = mc.kernel_stderr(X)
    kernel_z = float(np.max(np.abs(K_mc - K) / K_se))
    print(f"{mc!r}: Monte Carlo kernel over {mc.kernel_nets} networks of width "
          f"{mc.kernel_width}: standard error up to {np.max(K_se) / np.max(K):.1%} of max K; "
          f"max |K_mc - K_MLP| / se = {kernel_z:.2f}")
    print(f"  warning: {str(caught[0].message)[:110]}...")
    try:
        mc.to_dict()
    except nngp_ppl.NNGPInputError as err:
        print(f"  saving refused, as it should be: {str(err)[:100]}...")

    # 2. The same network with the exact kernel, sampled and fitted.
    net = nngp_ppl.JaxNetwork(init, apply, d_in=1, name="tanh2", sigma_b=SIGMA_B,
                              kernel=recursion)
    stats = nngp_ppl.sample_correlators(net, X, widths, n_nets, orders=(2, 4), seed=6,
                                        progress=not args.small)
    k = len(X)
    rows = []
    print(f"\nλ̄ at cutoff {args.cutoff:g}, {n_nets} networks per width")
    print("    N   max|G2-K|/se   λ̄ (G4 - Wick K)   λ̄ (connected)   N·λ̄ (connected)")
    for width in widths:
        G2 = stats.correlator(2, width)
        shift = np.max(np.abs(G2 - K) / stats.stderr(2, width))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", nngp_ppl.TwoPointWarning)
            lam_rule45 = eft.mean_coupling(net, X, stats, args.cutoff, width=width,
                                           two_point="kernel")[0]
        # the default for a net whose 2-pt function is not K: subtract Wick(Ĝ2)
        lam_conn = eft.mean_coupling(net, X, stats, args.cutoff, width=width,
                                     two_point="measured")[0]
        rows.append({"N": width, "shift_z": float(shift), "lambda_rule45": float(lam_rule45),
                     "lambda_connected": float(lam_conn)})
        print(f"  {width:3d}   {shift:11.1f}   {lam_rule45:15.4e}   {lam_conn:14.4e}   "
              f"{width * lam_conn:14.4e}")
    assert k == K.shape[0]
    return {"rows": rows, "kernel_z": kernel_z}


if __name__ == "__main__":
    main()
