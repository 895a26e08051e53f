"""The ``prvql`` command line: one console script with subcommands.

Each subcommand lives in ``prvql/commands/<name>.py`` and exposes ``add_arguments(parser)`` and
``run(args) -> int``; its module docstring's first line is the help text. Command modules import heavy
dependencies inside ``run`` so that ``prvql --help`` stays fast. A module's optional ``FLAGS`` dict maps the
``field`` of a library error (:class:`prvql.errors.PRVQLError`, e.g. ``"device"``) to the option that gave it
(``"--device"``): the line printed names the option.

Exit status (docs/ERRORS.md): 0 success; 2 bad input, printed as ONE line ``prvql: error: ...`` (a
:class:`prvql.errors.PRVQLError`, or an :class:`OSError` such as a full disk or a read-only folder, shown with its path
and reason); 130 interrupted (Ctrl-C); anything else is a bug. Dotted ``KEY=VALUE`` config overrides are accepted
anywhere on the line for the commands that take overrides (``train``'s positional ones, ``--set`` elsewhere).

Standard error also carries log records (prvql's from INFO, DEBUG with ``-v``; other libraries' from WARNING only)
and the progress of long commands (:mod:`prvql.progress`: a bar on a terminal, a short line per phase elsewhere).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import NoReturn

from prvql.allocator import tune_allocator
from prvql.errors import PRVQLError, one_line

# subcommand name -> module in prvql.commands
COMMANDS = {
    "synth": "synth",
    "data": "data",
    "train": "train",
    "predict": "predict",
    "evaluate": "evaluate",
    "locate": "locate",
    "index": "index",
    "visualize": "visualize",
    "bench": "bench",
    "demo": "demo",
    "app": "app",
    "convert": "convert",
    "weights": "weights",
}


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is ONE ``prvql: error:`` line (exit 2) pointing at ``--help``, not the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"prvql: error: {one_line(message)} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``prvql`` parser with one subparser per entry of :data:`COMMANDS`."""
    parser = _OneLineParser(
        prog="prvql", description="PRVQL: visual query localization in egocentric videos (Ego4D VQ2D)."
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="prvql's debug log lines (other libraries' stay at WARNING)"
    )
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
        p.set_defaults(_run=module.run, _flags=getattr(module, "FLAGS", {}))
    return parser


def configure_logging(verbose: bool) -> None:
    """Log records on standard error: prvql's own from INFO (DEBUG with ``-v``), other libraries' (matplotlib, PIL,
    urllib3, asyncio ...) from WARNING only, with or without ``-v``."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("prvql").setLevel(logging.DEBUG if verbose else logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit status (2 for a :class:`PRVQLError`, 130 for Ctrl-C)."""
    tune_allocator()  # before any command imports torch (prvql/allocator.py)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        overrides = [a for a in extra if "=" in a and not a.startswith("-")]
        if len(overrides) != len(extra) or not hasattr(args, "overrides"):
            parser.error(f"{args.command}: unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *overrides]
    configure_logging(args.verbose)
    try:
        return int(args._run(args) or 0)
    except PRVQLError as exc:
        flag = args._flags.get(exc.field)
        print(f"prvql: error: {one_line(exc.named(flag) if flag else str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # the machine refused: read-only folder, full disk, too many open files ...
        from prvql.paths import os_error_message

        print(f"prvql: error: {one_line(os_error_message(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prvql: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
