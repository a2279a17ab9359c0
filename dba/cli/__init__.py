"""The ``dba`` command line. One module per subcommand, each with ``add_command(subparsers)``; :data:`COMMANDS` is the
registry (adding a subcommand = one new module + one line there). Defaults and help text come from
:mod:`dba.config`; library modules never import this package.

User errors (:class:`dba.errors.DBAError`) print one message and exit with status 2, without a traceback.
"""
from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..errors import DBAError
from . import anchor, compare, export, info, train
from . import eval as eval_command

COMMANDS = [
    info,
    anchor,
    train,
    eval_command,
    compare,
    export,
]
"""The subcommands, in ``dba --help`` order: modules with ``add_command(subparsers)``."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dba", description="DBA Studio: fine-tune once with Dynamic Boosted "
                                                             "Annealing (global-gradient boost, dynamic correction, "
                                                             "annealed learning rate).")
    parser.add_argument("--version", action="version", version=f"dba-studio {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except DBAError as e:
        print(f"dba {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        detail = str(e) if len(str(e)) > 8 else ""  # a run's RunInterrupted says what was saved and how to resume
        print(f"dba {args.command}: interrupted" + (f": {detail}" if detail else ""), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
