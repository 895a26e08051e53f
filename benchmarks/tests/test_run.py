"""`python -m benchmarks`: the sections a device runs by default, refused options, a quick run's report, and the
report that survives a failing section, a deadline and SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.run import REPORT_NAME, SECTIONS, Section, main, parse_args

ROOT = Path(__file__).resolve().parents[2]  # the repository


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
        (["--memory-models", "demo,big"], "--memory-models: a comma-separated subset of demo,demo_overlap0,paper"),
        (["--memory-storages", "bf16"], "--memory-storages: float16, int8, both or none"),
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


# Stand-in sections (``module:function`` entries of SECTIONS) for the report's failure handling.
def fake_ok(args) -> dict:
    return {"ok": True}


def fake_boom(args) -> dict:
    args.progress.add({"row": 1})
    raise ValueError("boom")


def fake_rows_then_wait(args) -> dict:
    args.progress.add({"row": 1})
    print("fake: waiting", file=sys.stderr, flush=True)
    time.sleep(120)
    return {"never": True}


def _fake_sections(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("fake_ok", "fake_boom", "fake_rows_then_wait"):
        monkeypatch.setitem(SECTIONS, name, Section(f"benchmarks.tests.test_run:{name}", ("cpu",), name))
    monkeypatch.setitem(SECTIONS, "fake_after", Section("benchmarks.tests.test_run:fake_ok", ("cpu",), "fake_after"))


def test_a_section_that_raises_is_recorded_and_the_next_runs(tmp_path: Path, monkeypatch) -> None:
    _fake_sections(monkeypatch)
    argv = ["--output", str(tmp_path), "--sections", "fake_ok,fake_boom,fake_after", "--device", "cpu"]
    assert main(argv) == 1  # a failed section makes the status 1
    report = json.loads((tmp_path / REPORT_NAME).read_text())  # --output FOLDER -> FOLDER/benchmarks.json
    assert report["fake_ok"] == {"ok": True}
    assert report["fake_boom"]["error"] == "ValueError: boom" and report["fake_boom"]["rows"] == [{"row": 1}]
    assert any("fake_boom" in line for line in report["fake_boom"]["traceback"])
    assert report["errors"] == {"fake_boom": "ValueError: boom"}
    assert report["fake_after"] == {"ok": True}  # the run went on


def test_sections_after_the_deadline_are_skipped(tmp_path: Path, monkeypatch) -> None:
    _fake_sections(monkeypatch)
    out = tmp_path / "r.json"
    argv = ["--device", "cpu", "--sections", "fake_ok", "--deadline-s", "1e-9", "--output", str(out)]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert report["fake_ok"] == {"skipped": "started after --deadline-s 1e-09"} and report["section_wall_s"] == {}


def test_options_in_any_order() -> None:
    orders = [
        ["--output", "o.json", "--no-compile", "--device", "cpu", "--quick", "--sections", "compile,throughput"],
        ["--no-compile", "--sections", "compile,throughput", "--quick", "--device", "cpu", "--output", "o.json"],
    ]
    assert parse_args(["--device", "cpu", "--output", "new/"]).output == Path("new") / REPORT_NAME  # a folder
    parsed = [parse_args(argv) for argv in orders]
    for args in parsed:
        assert (args.output, args.sections, args.quick, args.compile_backend) == (
            Path("o.json"),
            ["throughput"],  # --no-compile drops the compile section
            True,
            "eager",
        )


def test_sigterm_in_the_third_section_leaves_the_first_two(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    script = (
        "import sys; from benchmarks.run import SECTIONS, Section, main\n"
        "SECTIONS['fake_rows_then_wait'] = Section('benchmarks.tests.test_run:fake_rows_then_wait', ('cpu',), '')\n"
        "for name in ('fake_ok', 'fake_after'):\n"
        "    SECTIONS[name] = Section('benchmarks.tests.test_run:fake_ok', ('cpu',), '')\n"
        f"sys.exit(main(['--device', 'cpu', '--output', {str(out)!r}, '--sections', "
        "'fake_ok,fake_after,fake_rows_then_wait,fake_ok']))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        for line in proc.stderr:  # wait until the third section is running
            if line.startswith("fake: waiting"):
                break
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()
    report = json.loads(out.read_text())
    assert report["interrupted"] == "SIGTERM"
    assert report["fake_ok"] == report["fake_after"] == {"ok": True}
    assert report["fake_rows_then_wait"] == {"error": "interrupted by SIGTERM", "rows": [{"row": 1}]}
    assert set(report["section_wall_s"]) == {"fake_ok", "fake_after"}  # the fourth never started
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left


def test_benchmark_modules_import_without_pyav() -> None:
    """The lent GPU machine has no PyAV: the check's import path must not need it."""
    script = (
        "import sys; sys.modules['av'] = None\n"
        "import benchmarks.run, benchmarks.gpu, benchmarks.train_step\n"
        "assert sys.modules['av'] is None\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=True, timeout=120)
