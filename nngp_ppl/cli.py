"""The ``nngp-ppl`` command line.

Each subcommand lives in ``nngp_ppl/commands/<name>.py`` and exposes
``register(subparsers)`` (adds its parser, sets ``func``) so that the stages of the
pipeline stay independent. Bad input exits with status 2 and one line on stderr, never a
traceback; an interrupt exits with status 130 and leaves no half-written file.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Order here is the order in `nngp-ppl --help`.
COMMANDS = ["sample", "show", "fit", "infer", "flow", "lattice", "reproduce", "demo"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own usage errors: same one-line style, exit 2
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nngp-ppl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(f"nngp_ppl.commands.{name}").register(sub)
    return parser


def main(argv=None) -> int:
    from ._checks import NNGPInputError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except NNGPInputError as err:
        print(f"nngp-ppl {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, PermissionError, IsADirectoryError) as err:
        print(f"nngp-ppl {args.command}: error: {err.strerror}: {err.filename}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nngp-ppl {args.command}: interrupted; no partial output written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
