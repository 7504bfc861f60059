"""``nngp-ppl demo``: the quick reproduction into ``demo_out/`` (what ``make demo`` runs).

Same as ``nngp-ppl reproduce --preset quick --out demo_out``: about 1e5 networks at four
widths per ensemble, point estimates at the paper's 21 cutoffs, short NUTS runs at three
cutoffs; a few minutes on a 2-core CPU. Rerunning it skips what is already done.
"""

from __future__ import annotations

from .reproduce import add_common_options, execute

__all__ = [
    "register",
    "run",
]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="quick end-to-end reproduction into demo_out/ (= reproduce --preset quick)",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
    )

    add_common_options(p, default_out="demo_out")
    p.set_defaults(func=run)


def run(args) -> int:

    return execute("quick", args)
