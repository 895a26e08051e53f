"""The shared options: ``--output`` (and the old ``--out``), and library errors named by the command's flags."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import pytest
import torch

from prvql.cli import COMMANDS, build_parser, main
from prvql.commands.options import add_output_option
from prvql.errors import PRVQLError


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of ``parser`` and of its subcommands' parsers."""
    found = set()
    for action in parser._actions:
        found.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _option_strings(sub)
    return found


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_flag_a_command_maps_an_error_field_to_is_one_of_its_options(name: str) -> None:
    module = importlib.import_module(f"prvql.commands.{COMMANDS[name]}")
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    flags = set(getattr(module, "FLAGS", {}).values())
    assert flags <= _option_strings(parser)
    assert flags or name in ("bench", "convert", "evaluate", "synth")  # these call nothing that raises with a field


def test_output_option_and_its_deprecated_spelling(capsys) -> None:
    parser = argparse.ArgumentParser(prog="x")
    add_output_option(parser, "output folder", deprecated="--out")
    assert parser.parse_args(["--output", "a"]).output == Path("a")
    assert capsys.readouterr().err == ""
    assert parser.parse_args(["--out", "b"]).output == Path("b")
    assert capsys.readouterr().err == "prvql: warning: --out is deprecated, use --output\n"
    assert "--out " not in parser.format_help() and "--output OUTPUT" in parser.format_help()
    for argv in ([], ["--out", "a", "--output", "b"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
        assert "--output" in capsys.readouterr().err


def test_synth_and_data_take_output_and_still_out(capsys) -> None:
    parser = build_parser()
    for argv in (["synth"], ["data", "extract-clips", "--annotations", "a.json", "--videos", "v"]):
        assert parser.parse_args([*argv, "--output", "o"]).output == Path("o")
        assert parser.parse_args([*argv, "--out", "o"]).output == Path("o")
        assert capsys.readouterr().err.count("deprecated") == 1


def test_library_errors_name_the_input_and_the_command_its_flag(tmp_path: Path, capsys) -> None:
    from prvql.infer.trained_model import load_inference_model, resolve_device

    with pytest.raises(PRVQLError) as error:
        resolve_device("nonsense")
    assert (error.value.field, str(error.value)) == ("device", "device: not a device name ('nonsense')")
    with pytest.raises(PRVQLError) as error:
        load_inference_model("tiny", None)
    assert error.value.field == "weights" and "--" not in str(error.value)
    if not torch.cuda.is_available():
        from prvql.distributed import init_distributed

        with pytest.raises(PRVQLError) as error:
            init_distributed("cuda")
        assert str(error.value) == "device: cuda asked for but CUDA is not available"

    out = tmp_path / "out"
    assert main(["demo", "--output", str(out), "--config", "tiny", "--device", "nonsense"]) == 2
    assert capsys.readouterr().err == "prvql: error: --device: not a device name ('nonsense')\n"
    assert main(["demo", "--output", str(out), "--config", "tiny", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prvql: error: --weights: missing: a config alone") and len(err.splitlines()) == 1
    assert not out.exists()
