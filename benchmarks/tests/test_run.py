"""`python -m benchmarks`: the sections a device runs by default, refused options, and a quick run's report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.run import SECTIONS, main, parse_args


def test_default_sections_follow_the_device() -> None:
    cpu = parse_args(["--device", "cpu"])
    assert cpu.sections == [n for n, s in SECTIONS.items() if "cpu" in s.devices]
    assert {"e2e", "decode", "inference", "training_step"} <= set(cpu.sections)
    assert "throughput" not in cpu.sections  # explicit only on the CPU (gpu_check.sh --device cpu --quick)
    assert (cpu.config, cpu.rounds, cpu.e2e_depth) == ("prvql_vitb14", 3, 12)
    quick = parse_args(["--device", "cpu", "--quick", "--sections", "throughput"])
    assert (quick.sections, quick.config, quick.rounds) == (["throughput"], "tiny", 1)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sections", "nope"], "--sections: unknown ['nope']"),
        (["--sections", ","], "--sections: unknown empty list"),
        (["--rounds", "0"], "--rounds: must be >= 1 (got 0)"),
        (["--video-seconds", "0"], "--video-seconds: must be > 0"),
    ],
)
def test_bad_options_exit_2(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--device", "cpu", *argv])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_quick_report_has_every_section_asked(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    argv = ["--device", "cpu", "--quick", "--sections", "inference,window_memory", "--output", str(out)]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert report["sections"] == ["inference", "window_memory"] and report["quick"] is True
    runs = report["inference"]["runs"]
    assert [r["clip_frames"] for r in runs] == [12, 24] and report["inference"]["checks"]["backbone_once"]
    assert report["window_memory"]["window_frames"] == report["inference"]["window_frames"]
    assert set(report["section_wall_s"]) == {"inference", "window_memory"}
