r"""``nngp-ppl fit``: the paper's point-estimate EFT couplings of a sampled run.

Example::

    nngp-ppl fit erf.nc --cutoffs 10,100,1000 --propagator full -o erf-fit.nc

For every width of the run and every cutoff Λ it computes (physics.md §7–§8, see
:mod:`nngp_ppl.inference.eft`): the mean quartic coupling λ̄(Λ) of the per-tuple estimates
λ_t = -(G4 - G4_GP)_t / (24 ∫ Π K), the weighted least-squares (λ, κ) from the 4- and
6-pt data with the run's estimator covariance, the 6-pt check (GP + ΔG6(λ̄) against
experiment; improvement = m6(GP) / m6(EFT)), and the running: β = dλ̄/d log Λ, the fitted
exponent γ (λ̄ ∝ Λ^-γ) beside the analytic asymptotic one. The fit file records the run
file's SHA-256; ``nngp-ppl fit RUN.nc --verify FIT.nc`` checks that a fit belongs to a run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ... import _checks
from ..._checks import NNGPInputError
from ..._io import output_file
from ...inference import centring, eft
from ...inference.problem import coupling_names
from ...study.presets import PAPER_CUTOFFS
from .sample import add_trusted_ensemble_argument
from .stepped import COUPLING_STEP, add_step_argument, read_run

__all__ = [
    "register",
    "parse_cutoffs",
    "parse_widths",
    "usable_widths",
    "print_table",
    "run",
]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "fit",
        help="point-estimate EFT couplings (λ, κ), 6-pt check and running of a sampled run",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
    )
    p.add_argument("file", metavar="RUN.nc", help="file written by `nngp-ppl sample`")
    add_trusted_ensemble_argument(p)
    add_step_argument(p, what=COUPLING_STEP)
    p.add_argument("--cutoffs", metavar="Λ,Λ,...",
                   help='cutoffs, e.g. "10,100,1000", or "paper" for the paper\'s 21 (7 .. 1e5)')
    p.add_argument("--propagator", default="full", metavar="NAME",
                   help="propagator on vertex legs: full (K) or bias_subtracted (K - σ_b²); "
                        "default full")
    p.add_argument("--widths", default=None, metavar="N,N,...",
                   help="widths to fit (default: every width in the run)")
    p.add_argument("--couplings", default=None, metavar="NAMES",
                   help="couplings of the joint fit (default lambda,kappa; g3,lambda for a "
                        "net with non-zero means, fitted centred)")
    p.add_argument("--fit-from", default=None, metavar="Λ",
                   help="regress log|λ̄| on log Λ over cutoffs >= this (default: all)")
    p.add_argument("--order", default="1", metavar="P",
                   help="perturbative order: 1 (the paper's) or 2 (the joint fit becomes the "
                        "second-order estimand, and λ̄ and the 6-pt check at second order "
                        "are added: λ̄₂, m6 EFT₂, impr6₂)")
    p.add_argument("-o", "--output", metavar="FIT.nc", help="output netCDF file")
    p.add_argument("--verify", metavar="FIT.nc", default=None,
                   help="only check that FIT.nc was made from RUN.nc (exit 2 if not)")
    p.set_defaults(func=run)


def parse_cutoffs(text: str) -> np.ndarray:

    if text.strip().lower() == "paper":
        return np.asarray(PAPER_CUTOFFS, dtype=np.float64)
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise NNGPInputError(f"--cutoffs must be numbers separated by commas or 'paper', "
                             f"got {text!r}") from None
    if not values:
        raise NNGPInputError("--cutoffs must list at least one cutoff")
    arr = np.asarray(values)
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise NNGPInputError(f"--cutoffs must be positive finite numbers, got {text!r}")
    if len(set(values)) != len(values):
        raise NNGPInputError(f"--cutoffs must not repeat a cutoff, got {text!r}")
    return np.sort(arr)


def parse_widths(text):
    """``--widths``: None (every width of the run) or a non-empty list of integers."""
    if text is None:
        return None
    try:
        widths = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise NNGPInputError(
            f"--widths must be integers separated by commas, got {text!r}"
        ) from None
    if not widths:
        raise NNGPInputError(
            f"--widths must list at least one width of the run, got {text!r}; omit it to use "
            "every width"
        )
    return widths


def usable_widths(stats, widths) -> list[int]:
    """The widths to fit: sampled, each with at least two networks (a standard error)."""
    chosen = list(stats.widths) if widths is None else widths
    missing = [w for w in chosen if w not in stats.widths]
    if missing:
        raise NNGPInputError(f"--widths must be widths of the run {stats.widths}, got "
                             f"{missing}")
    few = [w for w in chosen if stats.n_nets(w) < 2]
    if few:
        raise NNGPInputError(
            f"the run has fewer than 2 networks at width(s) {few}: no standard error, so "
            "nothing to fit; sample more networks or leave those widths out with --widths"
        )
    return chosen


def _float(option, text):
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise NNGPInputError(f"{option} must be a number, got {text!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise NNGPInputError(f"{option} must be a positive number, got {text!r}")
    return value


def _fmt(x: float) -> str:
    return f"{x:>11.3e}" if np.isfinite(x) else f"{'nan':>11}"


def print_centred_table(ds, out=None) -> None:
    """A centred fit (net with non-zero means, physics.md §6d) as a table: per width and
    cutoff each coupling of the estimand ± σ, its running d/d log Λ ± σ, χ² and τ.

    The centred fit file holds no λ̄, 6-pt check or γ (their free part is Wick(K) of raw
    moments); the columns are read from the file's variables and attributes."""
    out = sys.stdout if out is None else out
    names = [str(c) for c in ds["coupling"].values]
    print(f"propagator {ds.attrs['propagator']}; centred fit (expanded around the measured "
          f"mean, data orders {ds.attrs.get('data_orders', '?')}): fit = "
          f"{ds['fit'].attrs.get('long_name', 'centred estimand')} of "
          f"({', '.join(names)}); {ds.attrs.get('free_part', '')}", file=out)
    head = f"{'width':>6} {'cutoff':>9}"
    for c in names:
        head += f" {c:>11} {'±':>9} {'d/dlogΛ':>11} {'±':>9}"
    head += f" {'chi2':>10} {'tau':>10}"
    print(head, file=out)
    for i, w in enumerate(ds["width"].values):
        for j, c in enumerate(ds["cutoff"].values):
            line = f"{int(w):>6} {c:>9.3g}"
            for m in range(len(names)):
                line += (f" {_fmt(float(ds['fit'][i, j, m]))}"
                         f" {float(ds['fit_stderr'][i, j, m]):>9.2e}"
                         f" {_fmt(float(ds['beta_fit'][i, j, m]))}"
                         f" {float(ds['beta_fit_stderr'][i, j, m]):>9.2e}")
            line += (f" {float(ds['fit_chi2'][i, j]):>10.3e}"
                     f" {float(ds['tau'][i, j]):>10.3e}")
            print(line, file=out)


def print_table(ds, out=None) -> None:
    """The fit as a table: per width and cutoff λ̄, (λ, κ) ± σ, m6 and γ (a centred fit:
    :func:`print_centred_table`)."""
    # Resolved at call time: a default bound at import would pin a replaced stdout.
    out = sys.stdout if out is None else out
    if int(ds.attrs.get("centred", 0)):
        print_centred_table(ds, out)
        return
    names = [str(c) for c in ds["coupling"].values]
    print(f"propagator {ds.attrs['propagator']}; λ̄ = mean_t -(G4 - G4_GP)_t / (24 ∫ Π K); "
          f"fit = weighted least squares of ({', '.join(names)}) on 4- and 6-pt data"
          + (" (the second-order estimand)" if int(ds.attrs.get("order", 1)) == 2 else "")
          + "; "
          "impr6 = m6(GP) / m6(GP + ΔG6(λ̄))", file=out)
    head = f"{'width':>6} {'cutoff':>9} {'λ̄':>11}"
    for c in names:
        head += f" {c:>11} {'±':>9}"
    head += f" {'m6 GP':>10} {'m6 EFT':>10} {'impr6':>8} {'γ local':>8}"
    print(head, file=out)
    gamma_a = float(ds.attrs["gamma_analytic"])
    for i, w in enumerate(ds["width"].values):
        for j, c in enumerate(ds["cutoff"].values):
            line = f"{int(w):>6} {c:>9.3g} {_fmt(float(ds['lambda_mean'][i, j]))}"
            for m in range(len(names)):
                line += (f" {_fmt(float(ds['fit'][i, j, m]))}"
                         f" {float(ds['fit_stderr'][i, j, m]):>9.2e}")
            line += (f" {float(ds['m6_gp'][i, j]):>10.3e} {float(ds['m6_eft'][i, j]):>10.3e}"
                     f" {float(ds['improvement6'][i, j]):>8.3f}"
                     f" {float(ds['gamma_local'][i, j]):>8.3f}")
            print(line, file=out)
        if "lambda_mean2" in ds:
            for j, c in enumerate(ds["cutoff"].values):
                print(f"{'':>6} {c:>9.3g} second order: λ̄₂ "
                      f"{_fmt(float(ds['lambda_mean2'][i, j]))}, m6 EFT₂ "
                      f"{float(ds['m6_eft2'][i, j]):.3e}, impr6₂ "
                      f"{float(ds['improvement6_2'][i, j]):.3f}", file=out)
        g, e = float(ds["gamma_fit"][i]), float(ds["gamma_fit_stderr"][i])
        fitted = "n/a (one cutoff)" if not np.isfinite(g) else (
            f"{g:.4f}" + (f" ± {e:.1e}" if np.isfinite(e) else ""))
        print(f"{'':>6} running at N={int(w)}: λ̄ ∝ Λ^-γ, γ fitted {fitted}, "
              f"analytic asymptotic γ = {gamma_a:g}", file=out)


def _check_centred(run_path, stats, couplings, order) -> None:
    """A run of a net with non-zero means is fitted centred (physics.md §6d): at order 1,
    from the raw moments 1..max of the centred data orders of ``couplings``."""
    if order != 1:
        raise NNGPInputError(f"--order {order:g}: {run_path} is a net with non-zero means "
                             "(mu_w, mu_b), fitted centred, at order 1 only")
    data_orders = centring.default_centred_orders(couplings)
    need = tuple(centring.raw_orders(data_orders))
    _checks.sampled_orders(str(run_path), stats.orders, need,
                           f"the centred fit of {', '.join(couplings)} (a net with non-zero "
                           f"means: centred orders {list(data_orders)} from the raw moments)")


def run(args) -> int:

    run_path = Path(args.file)
    if args.verify is not None:
        if args.output is not None or args.cutoffs is not None:
            raise NNGPInputError("--verify only checks a fit file; it takes no --cutoffs or -o")
        eft.load_fit(args.verify, run_path=run_path)
        print(f"{args.verify} is intact (checksum verified) and was made from {run_path} "
              "(run file sha256 matches)")
        return 0
    if args.cutoffs is None:
        raise NNGPInputError("--cutoffs is required, e.g. --cutoffs 10,100,1000 or paper")
    if args.output is None:
        raise NNGPInputError("-o/--output FIT.nc is required")
    out_path = output_file("-o/--output", args.output, inputs=(run_path,))
    cutoffs = parse_cutoffs(args.cutoffs)

    fit_from = _float("--fit-from", args.fit_from)
    order = _float("--order", args.order)
    if order not in (1, 2):
        raise NNGPInputError(f"--order must be 1 or 2, got {args.order!r}")
    widths = parse_widths(args.widths)
    stats = read_run(run_path, args.step, "fit")  # --step of a trained file
    centred = not getattr(stats.net, "zero_mean", True)
    couplings = coupling_names(args.couplings or ("g3,lambda" if centred else "lambda,kappa"),
                               name="--couplings")
    if centred:
        _check_centred(run_path, stats, couplings, order)
    else:
        _checks.sampled_orders(str(run_path), stats.orders, (4, 6),
                               "fitting lambda and kappa and the 6-pt check")
    widths = usable_widths(stats, widths)
    ds = eft.fit_dataset(stats, cutoffs, args.propagator, widths=widths,
                         couplings=couplings, fit_from=fit_from, order=int(order))
    net = stats.net
    print(f"{run_path}: {net.describe()}, {stats.k} inputs")
    print_table(ds)
    eft.write_fit(ds, out_path, run_path)
    print(f"wrote {out_path}")
    return 0
