"""``nngp-ppl reproduce``: a whole study — sample, exact, fit, infer, flow, report.

Example::

    nngp-ppl reproduce --preset quick --out demo_out
    nngp-ppl reproduce --preset paper --out paper_out        # hours on a CPU; resumable
    nngp-ppl reproduce --config examples/tanh_2d.toml --out tanh_out   # your own study

``--config`` reads a study described as data (TOML: ensembles, inputs, widths, cutoffs;
schema in :mod:`nngp_ppl.study.spec`); the presets are two such files shipped with the package.

Writes every stage's file into the output directory, then ``report.md``, ``summary.json``
and ``figures/*.png`` (see :mod:`nngp_ppl.study.stages`). Rerunning resumes: stages whose
outputs exist and match their inputs are skipped, and sampling reuses finished parts.
"""

from __future__ import annotations

from ..._checks import NNGPInputError
from ...study.spec import check_preset_overrides, get_preset
from ...study.stages import reproduce

__all__ = [
    "add_common_options",
    "register",
    "execute",
    "run",
]


def _count(option: str, text: str, *, minimum: int) -> int:
    """An integer option that also accepts exact float notation (1e5)."""
    try:
        value = float(text)
    except ValueError:
        raise NNGPInputError(f"{option} must be an integer, got {text!r}") from None
    if not value.is_integer() or value < minimum:
        raise NNGPInputError(f"{option} must be an integer >= {minimum}, got {text!r}")
    return int(value)


def add_common_options(p, *, default_out: str | None) -> None:
    """Options shared by ``reproduce`` and ``demo``."""
    p.add_argument("--out", default=default_out, required=default_out is None, metavar="DIR",
                   help="output directory" + (f" (default {default_out})" if default_out
                                              else ""))
    p.add_argument("--redo", default=None, metavar="STAGES",
                   help="comma-separated stage names or prefixes to rerun even if up to date, "
                        "e.g. report or fit,infer_erf; all reruns everything")
    p.add_argument("--dry-run", action="store_true",
                   help="list the stages and whether each would run; compute nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "reproduce",
        help="rerun the paper's experiments with posteriors; write a report (resumable)",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
    )
    src = p.add_mutually_exclusive_group()
    # No default here: argparse ignores a conflict whose value equals the default, so
    # "--preset quick --config s.toml" would pass silently; run() supplies "quick".
    src.add_argument("--preset", default=None, metavar="NAME",
                     help="quick (minutes on a laptop) or paper (1e6 networks per width, ten "
                          "widths, d_in = 1, 2, 3); default quick")
    src.add_argument("--config", default=None, metavar="STUDY.toml",
                     help="a study described in TOML (ensembles, inputs, widths, cutoffs; "
                          "see nngp_ppl.study.spec); instead of --preset")
    add_common_options(p, default_out=None)
    p.add_argument("--n-nets", default=None, metavar="COUNT",
                   help="override the preset's networks per width (e.g. 1e4 to time a "
                        "scaled-down run)")
    p.add_argument("--seed", default=None, metavar="SEED", help="override the seed (default 0)")
    p.add_argument("--only", default=None, metavar="RUNS",
                   help="comma-separated runs to do, e.g. erf,relu_sb1 (default: all; see "
                        "--dry-run for the names)")
    p.set_defaults(func=run)


def execute(preset_name: str, args, *, n_nets=None, seed=None, only=None) -> int:

    if str(preset_name).endswith(".toml"):
        preset = get_preset(preset_name)
    else:
        preset = get_preset(preset_name.strip().lower())
    preset = check_preset_overrides(
        preset,
        n_nets=None if n_nets is None else _count("--n-nets", n_nets, minimum=1),
        seed=None if seed is None else _count("--seed", seed, minimum=0),
        only=None if only is None else only.split(","),
    )
    redo = [r.strip() for r in (args.redo or "").split(",") if r.strip()]
    result = reproduce(preset, args.out, redo=redo, progress=not args.no_progress,
                       dry_run=args.dry_run, log=lambda line: print(line, flush=True))
    if not args.dry_run:
        ran = sum(1 for s in result.status.values() if s == "ran")
        print(f"{ran} stage(s) ran, {len(result.status) - ran} up to date.")
        print(f"Report: {result.report}")
        print(f"Numbers: {result.summary}; figures: {result.out / 'figures'}")
    return 0


def run(args) -> int:
    try:
        if args.config is not None:
            if not str(args.config).endswith(".toml"):
                raise NNGPInputError(f"config must be a .toml file, got {args.config!r}")
            study = args.config
        else:
            study = "quick" if args.preset is None else args.preset
        return execute(study, args, n_nets=args.n_nets, seed=args.seed, only=args.only)
    except NNGPInputError as err:
        msg = str(err)
        if msg.startswith(("preset ", "only ", "redo", "out ", "out:", "config")):
            msg = "--" + msg
        raise NNGPInputError(msg) from None

