"""Command-line options that several commands share: the output, the trained model, the device, config overrides.

Not a command itself (``prvql.cli.COMMANDS`` does not list it). Each ``add_*`` function adds its options to a
command's parser with the same names, meaning and help text everywhere. :data:`MODEL_FLAGS` maps the fields the
library's errors name (:class:`prvql.errors.PRVQLError`) to these options, for the commands' ``FLAGS``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

# library error field -> the option of add_model_options / add_device_option / add_process_device_option
MODEL_FLAGS = {"config": "--config", "weights": "--weights", "device": "--device"}


class _DeprecatedSpelling(argparse.Action):
    """An old spelling of an option: stores the value as the new one does and warns, one line on stderr."""

    def __init__(self, option_strings: list[str], dest: str, replacement: str, **kwargs: Any) -> None:
        self.replacement = replacement
        super().__init__(option_strings, dest, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(f"prvql: warning: {option_string} is deprecated, use {self.replacement}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_output_option(parser: argparse.ArgumentParser, help: str, deprecated: str | None = None, **kwargs: Any) -> None:
    """The required ``--output`` (``args.output``, a :class:`Path`) every writing command takes.

    Args:
        parser: the command's parser.
        help: its help text.
        deprecated: an old spelling still accepted, with a warning (e.g. ``"--out"``); hidden from the help.
        kwargs: more ``add_argument`` settings, e.g. ``metavar``.
    """
    if deprecated is None:
        parser.add_argument("--output", required=True, type=Path, help=help, **kwargs)
        return
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--output", type=Path, help=help, **kwargs)
    group.add_argument(
        deprecated, dest="output", type=Path, action=_DeprecatedSpelling, replacement="--output", help=argparse.SUPPRESS
    )


def check_range(option: str, value: float | None, least: float, most: float, shown: str | None = None) -> None:
    """The range check of every numeric option: raise ``PRVQLError("OPTION: must be in [least, most] (got v)")``
    unless ``least <= value <= most`` (``None``, an absent optional value, passes).

    Args:
        shown: the range as printed when it is not ``[least, most]``, e.g. ``"[0, 2**32)"``.
    """
    from prvql.errors import PRVQLError

    if value is not None and not least <= value <= most:
        raise PRVQLError(f"{option}: must be in {shown or f'[{least}, {most}]'} (got {value})")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--config`` and ``--weights``, read by :func:`prvql.infer.trained_model.load_inference_model`."""
    parser.add_argument("--config", help="config file or preset (default: the one stored in --weights)")
    parser.add_argument(
        "--weights",
        type=Path,
        help="trained weights: a .safetensors file, the authors' VQLoC/PRVQL .pth checkpoint, or vqloc / prvql, the "
        "authors' model downloaded by `prvql weights get` (with neither option: the shipped demo model)",
    )


def add_device_option(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """``--device`` for one process, read by :func:`prvql.infer.trained_model.resolve_device`.

    Args:
        parser: the command's parser.
        default: the device when the option is absent; ``None`` = CUDA when available.
    """
    when_absent = "cuda when available" if default is None else default
    parser.add_argument("--device", default=default, help=f"cpu, cuda, cuda:1 ... (default: {when_absent})")


def add_process_device_option(parser: argparse.ArgumentParser) -> None:
    """``--device`` for commands that may run under torchrun (:func:`prvql.distributed.init_distributed`)."""
    parser.add_argument(
        "--device",
        default="auto",
        choices=("auto", "cpu", "cuda"),
        help="auto = CUDA when available (default; under torchrun: the local rank's GPU)",
    )


def add_override_option(parser: argparse.ArgumentParser, example: str) -> None:
    """Repeatable ``--set KEY=VALUE`` config overrides, collected in ``args.overrides``.

    Args:
        parser: the command's parser.
        example: an override shown in the help text, e.g. ``"inference.windows_per_batch=8"``.
    """
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"config override, e.g. {example} (repeatable)",
    )
