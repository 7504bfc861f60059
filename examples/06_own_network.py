"""Your own JAX network as an ensemble: sample it, measure its kernel, fit the quartic coupling,
and run its whole study (with the report) through ``nngp-ppl reproduce --config``.

Any pair ``init(key, width) -> params`` and ``apply(params, X) -> f`` is an ensemble
(``nngp_ppl.JaxNetwork``): the streaming sampler draws one network per key, exactly as for
the built-in nets. Here: a two-hidden-layer tanh network, written as a user would in
``examples/own_nets/deep_tanh.py``,

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
``nngp_ppl.inference.eft.mean_coupling`` twice:

* from G4 - Wick(K), the paper's recipe (rule 4.5: K taken as the exact 2-pt function);
* from the connected 4-pt function G4 - Wick(Ĝ2) of the sampled data (the 2-pt shift
  removed): ``two_point="measured"``, what every fit does by default for a network whose
  2-pt function is not K (``two_point_exact=False``).

The connected one scales as 1/N (N·λ̄ roughly constant); the difference between the two
is the 2-pt shift that rule 4.5 would absorb into λ̄.

Saving to files needs ``init`` and ``apply`` importable by path: ``own_nets.deep_tanh``
has them as module-level functions, and its factory ``network()`` is what a study file
names. The last step writes such a study and runs it as a shell would::

    export PYTHONPATH=examples                 # where own_nets lives
    nngp-ppl reproduce --config deep_tanh.toml --out deep_tanh_study

(sample, fit, infer, flow and the report; no exact stage, since no exact finite-width
oracle exists for this network, and the report says so run by run). A closure, or a
function defined in a script run as ``__main__``, cannot be reloaded: saving one is refused.
Reading a file never imports the functions it names: the study names its factory, and
this script hands the functions to ``JaxNetwork`` itself, which names their module; a
later session reading these files names it first (``nngp-ppl show --ensemble
own_nets.deep_tanh:network run.nc``, or ``nngp_ppl.allow_import("own_nets.deep_tanh")``).

Run:  python examples/06_own_network.py [--small] [--cutoff 5] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

import nngp_ppl
from nngp_ppl.inference import eft

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # what PYTHONPATH=examples does in a shell
    sys.path.insert(0, str(HERE))

from own_nets.deep_tanh import SIGMA_B, SIGMA_W, apply, init  # noqa: E402

#: The study of step 3: the factory ``own_nets.deep_tanh:network`` (JaxNetwork with the
#: MLP-recursion kernel), five inputs, two widths, one cutoff.
STUDY = """\
name = "deep_tanh"
n_nets = {n_nets}
widths = [{widths}]
fit_cutoffs = [{cutoff}]
infer_cutoffs = [{cutoff}]
six_point_cutoff = {cutoff}
num_chains = 2
num_samples = {samples}
num_warmup = {samples}

[[run]]
key = "deep_tanh"
ensemble = "own_nets.deep_tanh:network"
title = "own deep tanh"
inputs = [-1.0, -0.5, 0.0, 0.5, 1.0]
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="few networks (tests)")
    parser.add_argument("--cutoff", type=float, default=5.0, help="cutoff Λ (default 5)")
    parser.add_argument("--out", default=None,
                        help="directory of the study (default: a temporary one)")
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
    print(f"  saved by import path: {mc.to_dict()['init']}, {mc.to_dict()['apply']}")
    closure = nngp_ppl.JaxNetwork(lambda key, width: init(key, width), apply, d_in=1,
                                  name="tanh2")
    try:
        closure.to_dict()
    except nngp_ppl.NNGPInputError as err:
        print(f"  a closure's saving is refused, as it should be: {str(err)[:90]}...")

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

    # 3. The whole study as data: every stage and the report, as `nngp-ppl reproduce`.
    from nngp_ppl.cli.main import main as nngp_ppl_cli

    out = Path(args.out or tempfile.mkdtemp(prefix="nngp_deep_tanh_"))
    out.mkdir(parents=True, exist_ok=True)
    study = out / "deep_tanh.toml"
    study.write_text(STUDY.format(n_nets=2000 if args.small else 100_000,
                                  widths=", ".join(map(str, widths)), cutoff=args.cutoff,
                                  samples=50 if args.small else 1000))
    argv = ["reproduce", "--config", str(study), "--out", str(out / "study"),
            "--no-progress"]
    print("\n$ PYTHONPATH=examples nngp-ppl " + " ".join(argv), flush=True)
    code = nngp_ppl_cli(argv)
    if code not in (0, None):
        raise SystemExit(f"nngp-ppl reproduce exited with {code}")
    summary = json.loads((out / "study" / "summary.json").read_text())
    return {"rows": rows, "kernel_z": kernel_z, "study": out / "study", "summary": summary}


if __name__ == "__main__":
    main()
