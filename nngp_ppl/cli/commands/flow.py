r"""``nngp-ppl flow``: β-function posteriors from a coupling posterior.

Example::

    nngp-ppl flow erf-posterior.nc -o erf-beta.nc --plot erf-beta.png

Maps each posterior draw of the noise-free correlators through every cutoff's estimand and
differentiates in log Λ (:mod:`nngp_ppl.inference.flow`): β(Λ) = dλ/d log Λ with credible
intervals, the local exponent γ(Λ) = -β/λ, and the asymptotic exponent γ (λ ∝ Λ^-γ), printed
beside the analytic value of physics.md §8, each interval labelled by its source (the
networks, or the networks plus the extrapolation's systematic error).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np

from ... import _checks
from ..._io import BETA_FORMAT, BETA_VERSION
from ...inference import beta_function, read_posterior
from ...inference.plots import plot_beta
from .infer import checked_figure, checked_output, save_figure, write_datatree
from .sample import add_trusted_ensemble_argument, parse_integer, parse_real

__all__ = [
    "register",
    "print_table",
    "run",
]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "flow",
        help="β-functions and the running exponent γ from a coupling posterior",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
    )
    p.add_argument("file", metavar="POSTERIOR.nc", help="file written by `nngp-ppl infer`")
    add_trusted_ensemble_argument(p)
    p.add_argument("--reference-cutoff", default=None, metavar="Λ",
                   help="cutoff γ is extrapolated from (default: the largest)")
    p.add_argument("--seed", default="0", metavar="SEED",
                   help="seed of the extrapolation-systematic draws (default 0)")
    p.add_argument("--plot", default=None, metavar="FIG.png", help="also draw the β band")
    p.add_argument("-o", "--output", required=True, metavar="BETA.nc",
                   help="output netCDF file (ArviZ DataTree)")
    p.set_defaults(func=run)


def _interval(draws) -> str:
    """Median [5%, 95%] of the draws, and their sd only where it describes them.

    The extrapolated γ of a few draws can lie far out (Aitken's step d·r/(1 − r) for r near
    its 0.9 limit), so the sd may exceed the whole 90% interval ("1.002 ± 0.012 [1.002,
    1.002]"). A normal's sd is the 90% interval's width / 3.29; where the draws' sd exceeds
    twice that, the sd is printed as what it is — the reach of the tail draws — with the
    largest distance from the median."""
    d = np.asarray(draws, dtype=np.float64).ravel()
    d = d[np.isfinite(d)]
    if d.size == 0:
        return "n/a"
    lo, med, hi = np.quantile(d, [0.05, 0.5, 0.95])
    text = f"{med:.4g} [{lo:.4g}, {hi:.4g}]"
    sd = float(d.std())
    if sd > 2 * (hi - lo) / 3.29:
        text += (f" (heavy tail: sd {sd:.2g} from the draws outside the interval, "
                 f"largest |x − median| {np.max(np.abs(d - med)):.2g})")
    else:
        text += f", sd {sd:.2g}"
    return text


def print_table(beta, out=None) -> None:
    """Per width and cutoff: λ, β and the local γ (median [90%]); per width the exponents
    (median [90%], with the sd where the draws are not heavy-tailed)."""
    # Resolved at call time: a default bound at import would pin a replaced stdout.
    out = sys.stdout if out is None else out
    post = beta["posterior"].to_dataset()
    const = beta["constant_data"].to_dataset()
    coupling = beta.attrs["gamma_coupling"]
    print(f"β = d{coupling}/d log Λ (posterior median [90%]; spread from the networks); "
          f"γ_local = -β/{coupling}; γ extrapolated from Λ = "
          f"{beta.attrs['reference_cutoff']:g}", file=out)
    print(f"{'width':>6} {'cutoff':>9} {'β':>34} {'γ_local':>28}", file=out)
    for w in post["width"].values:
        for c in post["cutoff"].values:
            b = post["beta"].sel(width=w, cutoff=c, coupling=coupling).values
            g = post["gamma_local"].sel(width=w, cutoff=c).values
            print(f"{int(w):>6} {c:>9.3g} {_pm(b):>34} {_pm(g):>28}", file=out)
        sel = {"width": w}
        syst = float(const["gamma_systematic"].sel(sel))
        print(f"{'':>6} N={int(w)}: γ asymptotic, networks only (90%) "
              f"{_interval(post['gamma_data'].sel(sel).values)}", file=out)
        print(f"{'':>6}        γ asymptotic, networks + extrapolation systematic "
              f"({syst:.2g}) {_interval(post['gamma'].sel(sel).values)}; analytic "
              f"{float(const['gamma_analytic']):g}", file=out)
        print(f"{'':>6}        γ slope over the posterior's cutoffs (networks) "
              f"{_interval(post['gamma_slope'].sel(sel).values)}", file=out)


def _pm(draws) -> str:
    """Median and 90% interval: ratios such as γ = -β/λ have no useful mean where λ's
    posterior reaches zero."""
    d = np.asarray(draws, dtype=np.float64).ravel()
    d = d[np.isfinite(d)]
    if d.size == 0:
        return "n/a"
    lo, med, hi = np.quantile(d, [0.05, 0.5, 0.95])
    return f"{med:.4g} [{lo:.3g}, {hi:.3g}]"


def run(args) -> int:

    src = Path(args.file)
    out = checked_output("-o/--output", args.output, src)
    plot = None if args.plot is None else checked_figure("--plot", args.plot, src, out)
    ref = None if args.reference_cutoff is None else parse_real("--reference-cutoff",
                                                           args.reference_cutoff)
    seed = _checks.seed("--seed", parse_integer("--seed", args.seed, minimum=0))
    # Checksum, format, groups, cutoffs and finite draws: one line for anything else.
    posterior = read_posterior(src, name="POSTERIOR.nc")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        beta = beta_function(posterior, reference_cutoff=ref, seed=seed)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    print_table(beta)
    write_datatree(beta, out, file_format=BETA_FORMAT, version=BETA_VERSION)
    print(f"wrote {out}")
    if plot is not None:

        save_figure(plot_beta(beta), plot)
        print(f"wrote {plot}")
    return 0
