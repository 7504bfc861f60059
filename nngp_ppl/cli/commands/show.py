r"""``nngp-ppl show``: the deviation from the GP of a sampled run, per width.

For each width and each measured order n in {4, 6} it prints the paper's normalised
deviation (physics.md §3)

.. math:: m_n = \Big\langle \frac{|G^{(n)} - G^{(n)}_{GP}|}{|G^{(n)}_{GP}|}
    \Big\rangle_{\text{tuples}}

three ways: from the sampled correlators ("sampled"), from the exact finite-width
correlators of :mod:`nngp_ppl.theory.exact` ("exact", what an infinite sample would give),
and the statistical background :math:`\langle \delta G / |G_{GP}| \rangle` with the naive
standard error δG ("noise"). An ensemble without an exact-moment oracle (a deep MLP, a
JaxNetwork, a class of your own without ``exact_moments``) gets the sampled and noise
columns and a line saying why the exact one is missing. Sampled ≈ exact ± noise means the
sampler agrees with the theory; exact ≫ noise means the finite-width effect is resolved. A
1/N fall of m_4 and a 1/N² fall of m_6 are the connected 4- and 6-point scalings.

A run that measured odd orders (and kept the covariance) also gets, per width, the verdict
of the f -> -f test on its odd correlators (:func:`nngp_ppl.inference.symmetry.parity_test`).
"""

from __future__ import annotations

import sys

import numpy as np

from ..._checks import NNGPInputError
from ...inference.symmetry import parity_test
from ...sampling.stats import CorrelatorStats, normalised_deviation
from ...theory.exact import check_net, exact_correlator_tuples, max_exact_order
from ...theory.wick import gp_correlator_tuples
from .sample import add_trusted_ensemble_argument
from .train import is_trained_file, show_trained

__all__ = [
    "SHOWN_ORDERS",
    "register",
    "exact_unavailable",
    "deviation_table",
    "run",
]

SHOWN_ORDERS = (4, 6)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "show",
        help="print the normalised deviations m_4, m_6 of a sampled run from the GP",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
    )
    p.add_argument("file", metavar="RUN.nc", help="file written by `nngp-ppl sample`")
    add_trusted_ensemble_argument(p)
    p.add_argument("--no-exact", action="store_true",
                   help="skip the exact finite-width column (quadrature for erf/relu)")
    p.set_defaults(func=run)


def exact_unavailable(net, orders) -> str | None:
    """Why the exact column cannot be computed for ``net`` at ``orders``, or None: the
    oracle capability the ensemble declares (``exact_moments``, ``exact_max_order``),
    checked the way the oracle itself checks it, as ``reproduce`` does."""

    if max_exact_order(net) == 0:
        return (f"{type(net).__name__} declares no exact-moment oracle (exact_moments = "
                f"{getattr(net, 'exact_moments', None)!r})")
    try:
        check_net(net, "the exact column")
    except NNGPInputError as err:
        return str(err)
    top = max_exact_order(net)
    if orders and max(orders) > top:
        return (f"the ensemble's exact oracle reaches order {top}, not "
                f"{max(orders)} (exact_max_order)")
    return None


def deviation_table(stats, *, exact: bool = True) -> list[dict]:
    """Rows {width, n_nets, (n, kind): value} with kind in sampled / exact / noise."""

    net, X = stats.net, stats.X
    K = np.asarray(net.kernel(X))
    orders = [n for n in SHOWN_ORDERS if n in stats.orders]
    gp = {n: gp_correlator_tuples(K, n) for n in orders}
    rows = []
    for w in stats.widths:
        row = {"width": w, "n_nets": stats.n_nets(w)}
        for n in orders:
            row[n, "sampled"] = normalised_deviation(stats.correlator_tuples(n, w), gp[n])
            row[n, "noise"] = normalised_deviation(gp[n] + stats.stderr_tuples(n, w), gp[n])
            if exact:

                row[n, "exact"] = normalised_deviation(
                    exact_correlator_tuples(net, X, w, n), gp[n]
                )
        rows.append(row)
    return rows


def run(args) -> int:

    if is_trained_file(args.file):  # written by `nngp-ppl train`: one table per step
        return show_trained(args.file, sys.stdout)
    stats = CorrelatorStats.from_netcdf(args.file)
    net = stats.net
    out = sys.stdout
    print(f"{args.file}: {net.describe()}, {stats.k} inputs, seed {stats.seed}, "
          f"orders {','.join(map(str, stats.orders))}", file=out)
    if stats.has_covariance and any(n % 2 for n in stats.orders):

        for w in stats.widths:
            print(f"symmetry, N={w}: {parity_test(stats, w).verdict}", file=out)
    orders = [n for n in SHOWN_ORDERS if n in stats.orders]
    if not orders:
        print("no 4- or 6-point functions in this run; nothing to compare", file=out)
        return 0
    if not getattr(net, "zero_mean", True):
        print("non-zero means: no zero-mean GP to compare m_n with", file=out)
        return 0
    exact = not args.no_exact
    why = exact_unavailable(net, orders) if exact else None
    if why is not None:
        # Like `reproduce` for a study without an oracle: the sampled values and their
        # noise alone, and why the exact comparison is missing.
        print(f"exact comparison unavailable: {why}; showing the sampled values and their "
              "noise (--no-exact skips this note)", file=out)
        exact = False
    rows = deviation_table(stats, exact=exact)
    kinds = ["sampled", "exact", "noise"] if exact else ["sampled", "noise"]
    print("m_n = <|G_n - G_GP| / |G_GP|> over tuples; noise = <stderr / |G_GP|>", file=out)
    head = f"{'width':>7} {'n_nets':>10}" + "".join(
        f" {f'm_{n} {kind}':>13}" for n in orders for kind in kinds
    )
    print(head, file=out)
    for row in rows:
        line = f"{row['width']:>7} {row['n_nets']:>10}" + "".join(
            f" {row[n, kind]:>13.3e}" for n in orders for kind in kinds
        )
        print(line, file=out)
    return 0
