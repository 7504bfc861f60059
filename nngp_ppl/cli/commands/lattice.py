r"""``nngp-ppl lattice``: non-perturbative correlators of the effective action on a lattice.

Example::

    nngp-ppl lattice --ensemble gauss --sigma-w 1 --sigma-b 0.5 --inputs 0,0.5 \
        --cutoff 1 --sites 8 --lambda -0.002 --kappa 0.001 -o lat.nc

Samples the lattice field theory S_GP + Σ_j w_j (λ f_j⁴ + κ f_j⁶) of
:mod:`nngp_ppl.inference.models.field` with NUTS (uniform lattice of ``--sites`` sites per axis on
[-Λ, Λ]^d_in, or Gauss–Legendre nodes with ``--kind gauss_legendre``) and prints the 4-pt
function with its Monte Carlo error next to Wick and to first-order perturbation theory on
the same lattice. The action must be bounded below: λ < 0 needs κ > 0.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from ..._checks import NNGPInputError, fits_in_memory
from ..._io import LATTICE_FORMAT, LATTICE_VERSION, write_netcdf
from ..._version import __version__
from ...inference.models.field import PERTURBATIVE_SPREAD, FieldLattice, field_correlators
from ...theory.lattice import box_lattice
from .infer import checked_output
from .sample import (
    add_ensemble_arguments,
    ensemble_and_inputs,
    parse_integer,
    parse_integer_list,
    parse_real,
)

__all__ = [
    "OPTION_NAMES",
    "register",
    "print_table",
    "run",
]

#: Library arguments named by this command's own options in error messages (nngp_ppl.cli.main).
OPTION_NAMES = {"cutoff": "--cutoff", "n_sites": "--sites", "nodes": "--sites",
                "num_chains": "--chains", "num_samples": "--samples", "num_warmup": "--warmup",
                "lattice": "--sites", "target_accept": "--target-accept", "lambda": "--lambda",
                "kappa": "--kappa"}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "lattice",
        help="non-perturbative correlators of the effective action on an input lattice (NUTS)",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
    )
    # The ensemble whose GP kernel is the free theory, and the external points.
    add_ensemble_arguments(p)
    p.add_argument("--cutoff", required=True, metavar="Λ", help="half-width of the box")
    p.add_argument("--sites", default="8", metavar="n",
                   help="lattice sites per axis (uniform) or nodes per panel (gauss_legendre)")
    p.add_argument("--kind", default="uniform", metavar="KIND",
                   help="uniform (default; midpoint rule) or gauss_legendre")
    p.add_argument("--lambda", dest="lam", required=True, metavar="λ", help="quartic coupling")
    p.add_argument("--kappa", default="0", metavar="κ", help="sextic coupling (default 0)")
    p.add_argument("--propagator", default="full", metavar="NAME",
                   help="free field kernel: full (K) or bias_subtracted (K - σ_b², plus b1)")
    p.add_argument("--orders", default="2,4", metavar="n,n", help="orders (default 2,4)")
    p.add_argument("--chains", default="4", metavar="C", help="NUTS chains (default 4)")
    p.add_argument("--samples", default="2000", metavar="S", help="draws per chain")
    p.add_argument("--warmup", default="1000", metavar="W", help="warmup steps")
    p.add_argument("--seed", default="0", metavar="SEED", help="random seed (default 0)")
    p.add_argument("--target-accept", default="0.99", metavar="P",
                   help="NUTS target acceptance in (0, 1) (default 0.99: smaller steps keep "
                        "trajectories from diverging on the steep κ f⁶ wall)")
    p.add_argument("-o", "--output", required=True, metavar="LAT.nc", help="output netCDF")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (bars are drawn on a terminal only)")
    p.set_defaults(func=run)


def print_table(ds, out=None) -> None:
    """The 4-pt function per distinct tuple: lattice MC ± error, Wick, first order."""
    # Resolved at call time: a default bound at import would pin a replaced stdout.
    out = sys.stdout if out is None else out
    print(f"λ = {ds.attrs['lambda']:g}, κ = {ds.attrs['kappa']:g}, {ds.attrs['lattice']}, "
          f"propagator {ds.attrs['propagator']}; divergences {ds.attrs['divergences']}, "
          f"max R-hat {ds.attrs['max_r_hat']:.4f}, min bulk ESS {ds.attrs['min_ess_bulk']:.0f}",
          file=out)
    if "G4" not in ds:
        return

    # Files written before the perturbativity check have no verdict: print them unmarked.
    unreliable = not bool(ds.attrs.get("first_order_reliable", 1))
    mark = "*" if unreliable else ""
    print(f"{'tuple':>10} {'G4 lattice':>12} {'± MC':>9} {'G4 Wick':>12} "
          f"{'G4 1st ord' + mark:>12} {'conn4':>11} {'± MC':>9} {'conn4 1st' + mark:>11}",
          file=out)
    for t in range(ds.sizes["tuple_4"]):
        idx = ",".join(str(int(i)) for i in ds["tuples_4"].values[t])
        print(f"{idx:>10} {float(ds['G4'][t]):>12.5g} {float(ds['G4_mcse'][t]):>9.2g} "
              f"{float(ds['G4_gp'][t]):>12.5g} {float(ds['G4_first_order'][t]):>12.5g} "
              f"{float(ds['connected4'][t]):>11.4g} {float(ds['connected4_mcse'][t]):>9.2g} "
              f"{float(ds['connected4_first_order'][t]):>11.4g}", file=out)
    if unreliable:
        print(f"* first order is unreliable here: the couplings are non-perturbative on this "
              f"lattice (the interaction varies by σ_V = {ds.attrs['interaction_sd']:.3g} "
              f"across the free theory's draws, above {PERTURBATIVE_SPREAD}, so higher orders "
              "matter); trust the lattice columns", file=out)


def run(args) -> int:

    net, X = ensemble_and_inputs(args)
    X, d_in = np.asarray(X), net.d_in
    out = checked_output("-o/--output", args.output)
    cutoff = parse_real("--cutoff", args.cutoff)
    sites = parse_integer("--sites", args.sites, minimum=1)
    lam, kappa = parse_real("--lambda", args.lam), parse_real("--kappa", args.kappa)
    target_accept = parse_real("--target-accept", args.target_accept)
    if not 0 < target_accept < 1:
        raise NNGPInputError(f"--target-accept must be in (0, 1), got {args.target_accept!r}")
    if args.kind == "uniform":
        # The inputs as split points only make box_lattice check that the box contains
        # them (a uniform lattice has no panels), exactly as it does for gauss_legendre.
        lattice = box_lattice(d_in, cutoff, "uniform", split_points=X, n_sites=sites)
    elif args.kind == "gauss_legendre":
        lattice = box_lattice(d_in, cutoff, "gauss_legendre", split_points=X, nodes=sites)
    else:
        raise NNGPInputError(f"--kind must be uniform or gauss_legendre, got {args.kind!r}")
    n = len(lattice) + len(X)  # dense kernel and Cholesky (n, n), NUTS draws (chains, draws, n)
    fits_in_memory("--sites", 8.0 * n * (2 * n + parse_integer("--chains", args.chains, minimum=2)
                                         * parse_integer("--samples", args.samples, minimum=1)),
                   f"a field on {len(lattice)} sites and {len(X)} inputs",
                   advice="use fewer --sites, --chains or --samples")
    field = FieldLattice.build(net, X, lattice, args.propagator)
    ds = field_correlators(
        field, lam, kappa,
        orders=parse_integer_list("--orders", args.orders, minimum=1),
        num_chains=parse_integer("--chains", args.chains, minimum=2),
        num_samples=parse_integer("--samples", args.samples, minimum=1),
        num_warmup=parse_integer("--warmup", args.warmup, minimum=1),
        seed=parse_integer("--seed", args.seed, minimum=0),
        target_accept=target_accept,
        progress=not args.no_progress,
    )
    ds = ds.assign(inputs=(("input", "input_dim"), X))
    ds.attrs.update(
        title="nngp_ppl lattice field theory correlators",
        nngp_ppl_version=__version__,
        ensemble=json.dumps(net.to_dict()),
        cutoff=cutoff,
    )
    print_table(ds)
    if ds.attrs["divergences"]:
        total = ds.attrs["num_chains"] * ds.attrs["num_samples"]
        wall = "κ f⁶" if kappa > 0 else "λ f⁴"  # the steepest term the action has
        print(f"WARNING: {ds.attrs['divergences']} of {total} NUTS transitions diverged: the "
              f"step size was too large where trajectories climb the steep {wall} wall, so the "
              f"wall's region is undersampled and the tails may be biased; rerun with a "
              f"--target-accept closer to 1 than {target_accept:g} (smaller steps)",
              file=sys.stderr)
    write_netcdf(ds, out, file_format=LATTICE_FORMAT, version=LATTICE_VERSION)
    print(f"wrote {out}")
    return 0
