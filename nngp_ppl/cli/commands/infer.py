r"""``nngp-ppl infer``: coupling posteriors (NUTS) of a sampled run at each width and cutoff.

Example::

    nngp-ppl infer erf.nc --cutoffs 10,100,1000 -o erf-posterior.nc

For every width of the run one NUTS posterior of the noise-free correlators
(:mod:`nngp_ppl.inference.models.couplings`, conditioned on the sampled 4- and 6-pt functions under
the
estimator's noise model) gives the couplings at every cutoff Λ as the declared estimand of
:mod:`nngp_ppl.inference.problem` (for λ alone the paper's equal-weight mean of the per-tuple
couplings on the exact correlators). Prints the ArviZ summary, the model discrepancy, the
models' ELPD (GP, λ, λ + κ, ...) with the basis chosen among the nested ones (the simplest
unless a richer one raises the ELPD by more than max(4, 2 paired s.e.):
:func:`nngp_ppl.inference.evidence.choose_nested_basis`) and the diagnostics gate (R-hat
<= 1.01 or within its Monte Carlo error at the measured ESS, bulk ESS >= 400, no divergences:
:mod:`nngp_ppl.inference.diagnostics`), and writes an ArviZ DataTree (netCDF). Exits 3
when the gate fails, unless ``--allow-failed-gate``. ``nngp-ppl flow`` turns the file into
β-functions.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import arviz_stats
import pandas as pd

from ... import _checks
from ..._checks import NNGPInputError, fits_in_memory
from ..._io import POSTERIOR_FORMAT, POSTERIOR_VERSION, atomic_path, output_file, write_netcdf
from ...inference import centring, diagnostics_gate, infer_couplings
from ...inference.compare import stored_choice
from ...inference.evidence import ELPD_NEGLIGIBLE, ELPD_SE_MULTIPLE
from ...inference.plots import plot_running
from ...inference.problem import basis, coupling_names
from ...tuples import distinct_tuples
from .fit import parse_cutoffs, parse_widths, usable_widths
from .sample import add_trusted_ensemble_argument, parse_integer, parse_integer_list, parse_real
from .stepped import COUPLING_STEP, add_step_argument, read_run

__all__ = [
    "register",
    "write_datatree",
    "save_figure",
    "checked_output",
    "checked_figure",
    "run",
    "elpd_table",
]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "infer",
        help="posterior of the couplings (λ, κ) at each width and cutoff (NUTS, ArviZ)",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
    )
    p.add_argument("file", metavar="RUN.nc", help="file written by `nngp-ppl sample`")
    add_trusted_ensemble_argument(p)
    add_step_argument(p, what=COUPLING_STEP)
    p.add_argument("--cutoffs", required=True, metavar="Λ,Λ,...",
                   help='cutoffs, e.g. "10,100,1000", or "paper" for the paper\'s 21')
    p.add_argument("--couplings", default=None, metavar="NAMES",
                   help="couplings to infer: lambda or lambda,kappa, either with g3 (or "
                        "g3,g5), fitted to the odd correlators (sample orders 1,3); default "
                        "lambda")
    p.add_argument("--max-dimension", default=None, metavar="K",
                   help="instead of --couplings: every local operator f^k, 3 <= k <= K "
                        "(4, 5 or 6), that respects --symmetry")
    p.add_argument("--symmetry", default=None, metavar="SYM",
                   help="with --max-dimension: the declared symmetry, z2 (f -> -f: even "
                        "operators only) or none (default: none)")
    p.add_argument("--widths", default=None, metavar="N,N,...",
                   help="widths to fit (default: every width in the run)")
    p.add_argument("--orders", default=None, metavar="n,n",
                   help="correlator orders that define the couplings, from 4,6 (and 1,3,5 "
                        "with odd couplings; default: 4 for λ alone, 4,6 with κ, 1,3 added "
                        "with g3)")
    p.add_argument("--propagator", default="full", metavar="NAME",
                   help="propagator on vertex legs: full (K) or bias_subtracted (K - σ_b²)")
    p.add_argument("--order", default="1", metavar="P",
                   help="perturbative order of the EFT prediction: 1 (the paper's) or 2 "
                        "(adds the λ² two-vertex diagrams, consistent at O(1/N²); the "
                        "ELPD table then ranks both orders)")
    p.add_argument("--chains", default="4", metavar="C", help="NUTS chains (default 4)")
    p.add_argument("--samples", default="1000", metavar="S",
                   help="draws per chain after warmup (default 1000)")
    p.add_argument("--warmup", default="500", metavar="W", help="warmup steps (default 500)")
    p.add_argument("--seed", default="0", metavar="SEED", help="random seed (default 0)")
    p.add_argument("--covariance", default="auto", metavar="KIND",
                   help="noise model: auto (default: exact finite-width moments where the "
                        "oracle covers the ensemble, the run's sample moments with a "
                        "Student-t likelihood where tails are heavy), exact, sample or gp")
    p.add_argument("--rcond", default="1e-6", metavar="R",
                   help="eigenvalue floor of the estimator's correlation matrix (default 1e-6)")
    p.add_argument("--plot", default=None, metavar="FIG.png",
                   help="also draw the running of the couplings (posterior bands) to a figure")
    p.add_argument("-o", "--output", required=True, metavar="POSTERIOR.nc",
                   help="output netCDF file (ArviZ DataTree)")
    p.add_argument("--no-progress", action="store_true", help="no progress messages")
    p.add_argument("--allow-failed-gate", action="store_true",
                   help="exit 0 and keep the file even when the diagnostics gate fails")
    p.set_defaults(func=run)


def write_datatree(dt, path, *, file_format: str | None = None,
                   version: int | None = None) -> Path:
    """Write an ArviZ DataTree to netCDF atomically (complete or absent), checksummed."""

    return write_netcdf(dt, path, file_format=file_format, version=version)


def save_figure(fig, path) -> Path:

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=120)
    return path


def checked_output(option: str, text: str, *inputs: Path) -> Path:
    """An output file checked before any work (see :func:`nngp_ppl._io.output_file`)."""

    return output_file(option, text, inputs=inputs)


def checked_figure(option: str, text: str, *inputs: Path) -> Path:
    """A figure path whose format matplotlib can write, checked before any work."""
    from matplotlib.backend_bases import FigureCanvasBase

    out = checked_output(option, text, *inputs)
    kinds = FigureCanvasBase.get_supported_filetypes()
    suffix = out.suffix.lstrip(".").lower()
    if suffix and suffix not in kinds:
        raise NNGPInputError(
            f"{option}: cannot draw a .{suffix} figure; use one of "
            f"{', '.join('.' + k for k in sorted(kinds))}"
        )
    return out


def _couplings(text: str) -> tuple[str, ...]:
    """``--couplings``: the validator ``fit`` and the library share (``--couplings`` named)."""

    return coupling_names(text, name="--couplings")


def _basis(args) -> tuple[str, ...]:
    """The couplings of ``--couplings``, or the basis of ``--max-dimension``/``--symmetry``
    (:func:`nngp_ppl.inference.problem.basis`)."""

    if args.max_dimension is None:
        if args.symmetry is not None:
            raise NNGPInputError("--symmetry needs --max-dimension (the symmetry prunes the "
                                 "basis of operators up to that dimension)")
        return _couplings("lambda" if args.couplings is None else args.couplings)
    if args.couplings is not None:
        raise NNGPInputError("give either --couplings or --max-dimension, not both")
    k = parse_integer("--max-dimension", args.max_dimension, minimum=4)
    if k > 6:
        raise NNGPInputError(f"--max-dimension must be 4, 5 or 6 (the fits reach the 6-pt "
                             f"function), got {args.max_dimension!r}")
    sym = args.symmetry
    if sym not in (None, "z2", "none"):
        raise NNGPInputError(f"--symmetry must be z2 or none, got {sym!r}")
    return basis(k, None if sym in (None, "none") else sym)


#: Float64 values of one NUTS draw per (width, cutoff) besides the per-observation groups:
#: couplings, spread and six sampler statistics, for the memory check.
_VALUES_PER_DRAW = 9


def run(args) -> int:

    run_path = Path(args.file)
    out = checked_output("-o/--output", args.output, run_path)
    plot = None if args.plot is None else checked_figure("--plot", args.plot, run_path, out)
    cutoffs = parse_cutoffs(args.cutoffs)
    couplings = _basis(args)
    orders = None if args.orders is None else parse_integer_list("--orders", args.orders, minimum=1)
    chains = parse_integer("--chains", args.chains, minimum=2)
    samples = parse_integer("--samples", args.samples, minimum=1)
    warmup = parse_integer("--warmup", args.warmup, minimum=1)
    seed = _checks.seed("--seed", parse_integer("--seed", args.seed, minimum=0))
    order = parse_integer("--order", args.order, minimum=1)
    if order not in (1, 2):
        raise NNGPInputError(f"--order must be 1 or 2, got {args.order!r}")
    rcond = parse_real("--rcond", args.rcond)
    if not 0 < rcond < 1:
        raise NNGPInputError(f"--rcond must be a number in (0, 1), got {args.rcond!r}")
    widths = parse_widths(args.widths)
    stats = read_run(run_path, args.step, "infer")  # --step of a trained file
    if orders is None and not getattr(stats.net, "zero_mean", True):
        _checks.sampled_orders(str(run_path), stats.orders,
                               centring.raw_orders(centring.default_centred_orders(couplings)),
                               f"inferring {' and '.join(couplings)} centred (a net with "
                               "non-zero means: centred moments from the raw ones)")
    elif orders is None:
        _checks.sampled_orders(str(run_path), stats.orders,
                               (4, 6) if "kappa" in couplings else (4,),
                               f"inferring {' and '.join(couplings)}")
    widths = usable_widths(stats, widths)
    n_fits = len(cutoffs) * len(widths)
    # The latent correlators (588 for six inputs with the 6-pt function) per draw and width.
    latent = sum(len(distinct_tuples(stats.k, n)) for n in (1, 3, 4, 5, 6)
                 if n in stats.orders)
    fits_in_memory("--chains/--samples",
                   chains * samples * (n_fits * _VALUES_PER_DRAW + 2 * latent * len(widths))
                   * 8.0,
                   f"{chains} chains x {samples} draws at {n_fits} (width, cutoff) pairs",
                   advice="use fewer --chains or --samples")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dt = infer_couplings(
            stats,
            cutoffs=cutoffs,
            couplings=couplings,
            widths=widths,
            num_chains=chains,
            num_samples=samples,
            num_warmup=warmup,
            seed=seed,
            orders=orders,
            propagator=args.propagator,
            covariance=args.covariance,
            rcond=rcond,
            progress=not args.no_progress,
            order=order,
        )
    net = stats.net
    attrs = dt.attrs
    print(f"{run_path}: {net.describe()}, {stats.k} inputs; propagator {attrs['propagator']}; "
          f"couplings from orders {json.loads(attrs['orders'])}, conditioned on orders "
          f"{json.loads(attrs['data_orders'])}; noise model {attrs['covariance']} "
          f"({attrs['likelihood']} likelihood); perturbative order {attrs['order']}")
    if int(attrs.get("centred", 0)):
        # The stored estimand text names the zero-mean deviations; say which ones were fitted.
        print("centred fit (a net with non-zero means, expanded around the measured mean): "
              "the estimand below acts on the centred deviations r = C - Wick(C2), "
              f"{attrs['free_part']}")
    print(f"estimand: {attrs['estimand']}")
    names = [v for v in dt["posterior"].data_vars if v != "deviation"]
    summary = arviz_stats.summary(dt, var_names=names, ci_prob=0.9, ci_kind="eti")
    with _pandas_wide():
        print(summary.to_string())
    print("spread = model discrepancy: rms over tuples of the per-tuple coupling's deviation "
          "from the estimand (not part of the interval)")
    print(elpd_table(dt))
    gate = diagnostics_gate(dt, warn=False)
    with _pandas_wide():
        print(gate)
    for w in caught:
        if not issubclass(w.category, RuntimeWarning) or "GATE" not in str(w.message):
            print(f"warning: {w.message}", file=sys.stderr)
    write_datatree(dt, out, file_format=POSTERIOR_FORMAT, version=POSTERIOR_VERSION)
    print(f"wrote {out}")
    if plot is not None:

        save_figure(plot_running(dt), plot)
        print(f"wrote {plot}")
    if not gate.passed:
        where = ", ".join(
            "(" + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in f) + ")"
            for f in gate.failures
        )
        print(
            f"error: the posterior FAILS the diagnostics gate at {where}; rerun with more "
            "--samples/--warmup before using it (--allow-failed-gate accepts it)",
            file=sys.stderr,
        )
        return 0 if args.allow_failed_gate else 3
    return 0


def elpd_table(dt) -> str:
    """The models' PSIS-LOO ELPD at every width and cutoff, as text, and the basis chosen
    among the nested models by :func:`nngp_ppl.inference.evidence.choose_nested_basis`
    (the simplest unless a richer nested one raises the ELPD by more than max(4, 2 paired
    s.e.)), with the highest-ELPD model named where it differs."""
    const = dt["constant_data"].to_dataset()
    if "elpd" not in const:
        return "ELPD: not computed"
    elpd, se = const["elpd"], const["elpd_se"]
    models = [str(m) for m in elpd["model"].values]
    pointwise = "log_likelihood" in dt.children
    rule = (f"chosen: the simplest basis unless a richer nested one earns its place, ΔELPD > "
            f"max({ELPD_NEGLIGIBLE:g}, {ELPD_SE_MULTIPLE:g} paired s.e.) "
            "(nngp_ppl.inference.evidence.choose_nested_basis); [highest: ...] where the "
            "highest ELPD is another model" if pointwise else
            "chosen: the highest ELPD (no pointwise log-likelihood stored, so the nested "
            "rule of nngp_ppl.inference.evidence cannot be applied)")
    lines = ["ELPD (PSIS-LOO, correlators of orders "
             f"{json.loads(dt.attrs['data_orders'])}; higher is better):",
             f"{'width':>6} {'cutoff':>9}  " + "  ".join(f"{m:>18}" for m in models)
             + "  chosen"]
    for w in elpd["width"].values:
        for c in elpd["cutoff"].values:
            vals = elpd.sel(width=w, cutoff=c).values
            errs = se.sel(width=w, cutoff=c).values
            cells = "  ".join(f"{v:>10.1f} ± {e:<5.1f}" for v, e in zip(vals, errs,
                                                                         strict=True))
            highest = models[int(vals.argmax())]
            choice = highest
            if pointwise:
                choice = stored_choice(dt, w, c, models)
            note = "" if choice == highest else f" [highest: {highest}]"
            lines.append(f"{int(w):>6} {float(c):>9g}  {cells}  {choice}{note}")
    lines.append(rule)
    return "\n".join(lines)


class _pandas_wide:
    def __enter__(self):

        self._ctx = pd.option_context("display.width", 200, "display.max_rows", 500)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)

