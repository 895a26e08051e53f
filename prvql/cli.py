"""The ``prvql`` command line: one console script with subcommands.

Each subcommand lives in ``prvql/commands/<name>.py`` and exposes ``add_arguments(parser)`` and
``run(args) -> int``; its module docstring's first line is the help text. Command modules import heavy
dependencies inside ``run`` so that ``prvql --help`` stays fast.

Bad input raises :class:`prvql.errors.PRVQLError`; it is printed as one line and the exit status is 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from prvql.allocator import tune_allocator
from prvql.errors import PRVQLError

# subcommand name -> module in prvql.commands
COMMANDS = {
    "synth": "synth",
    "data": "data",
    "train": "train",
    "predict": "predict",
    "evaluate": "evaluate",
    "locate": "locate",
    "visualize": "visualize",
    "bench": "bench",
    "demo": "demo",
}


def build_parser() -> argparse.ArgumentParser:
    """The ``prvql`` parser with one subparser per entry of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="prvql", description="PRVQL: visual query localization in egocentric videos (Ego4D VQ2D)."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"prvql.commands.{module_name}")
        summary = (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""
        p = sub.add_parser(
            name,
            help=summary,
            description=(module.__doc__ or "").strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit status (2 for a :class:`PRVQLError`, 130 for Ctrl-C)."""
    tune_allocator()  # before any command imports torch (prvql/allocator.py)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    try:
        return int(args._run(args) or 0)
    except PRVQLError as exc:
        print(f"prvql: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prvql: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
