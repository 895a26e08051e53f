"""`prvql locate` progress (a moving bar on a terminal, one line per phase elsewhere), quiet `-v`, `--search`."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import numpy as np
import pytest

from prvql.cli import main
from prvql.data.video import write_video

FRAMES, FPS = 40, 5.0  # at the model's 5 fps every frame is searched


@pytest.fixture
def video(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (FRAMES, 8, 12, 3), dtype=np.uint8).repeat(8, 1).repeat(8, 2)
    path = tmp_path / "walk.mp4"
    write_video(path, frames, fps=FPS)
    return path


def locate_argv(video: Path, weights: Path, out: Path, *query: str) -> list[str]:
    return ["locate", "--video", str(video), *query, "--weights", str(weights), "--output", str(out), "--device", "cpu"]


def run_on_terminal(argv: list[str], cwd: Path) -> tuple[int, str]:
    """Run ``python -m prvql argv`` with a 120-column pseudo-terminal as its stdout and stderr; (status, output)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    # every bar update drawn (tqdm's own setting), so a short run still shows its steps; one thread on shared CPUs
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_MININTERVAL": "0", "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-m", "prvql", *argv], stdout=slave, stderr=slave, cwd=cwd, env=env)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + 300  # a guard against a hung child, not a speed check
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 1.0)[0]:
                if child.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
        if child.poll() is None:
            child.kill()
    return child.wait(), b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.slow
def test_locate_on_a_terminal_shows_a_moving_bar_and_v_shows_only_prvql_debug_lines(
    video: Path, tiny_weights: Path, tmp_path: Path
) -> None:
    argv = [
        "-v",
        *locate_argv(video, tiny_weights, tmp_path / "out", "--query-frame", "35", "--query-box", "8,8,30,20"),
    ]
    status, text = run_on_terminal(argv, tmp_path)
    assert status == 0, text[-3000:]
    states = re.split(r"[\r\n]+", text)
    searching = {int(m.group(1)) for s in states if (m := re.match(r"searching:\s+(\d+)%\|", s))}
    rendering = {int(m.group(1)) for s in states if (m := re.match(r"rendering:\s+(\d+)%\|", s))}
    assert len(searching) >= 5 and 100 in searching, searching  # the bar moves, redrawn in place
    assert len(rendering) >= 5 and 100 in rendering, rendering
    assert text.count("\r") > 20
    assert re.search(r"\| 35/35 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+frame/s\]", text)  # count, elapsed<left, frames/s
    debug = [s for s in states if " DEBUG " in s]
    assert debug and all(" DEBUG prvql." in s for s in debug), debug  # no matplotlib, PIL, ... lines
    assert "search: the frames before frame 35" in text


def test_locate_off_a_terminal_prints_one_line_per_phase_and_the_search_mode(
    video: Path, tiny_weights: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    assert main(locate_argv(video, tiny_weights, out, "--query-frame", "30", "--query-box", "8,8,30,20")) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == (
        "search: the frames before frame 30 (--search before; --search anywhere: the whole video)"
    )
    phases = [line.split(":")[0] for line in captured.err.splitlines()]
    assert phases == ["searching", "rendering"] and "\r" not in captured.err
    assert captured.err.startswith("searching: 30/30 frames in ")
    assert json.loads((out / "track.json").read_text())["query"]["search"] == "before"


def test_search_anywhere_searches_the_whole_video_with_a_box_query(
    video: Path, tiny_weights: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    query = ["--query-frame", "30", "--query-box", "8,8,30,20", "--search", "anywhere", "--no-progress"]
    assert main(locate_argv(video, tiny_weights, out, *query)) == 0
    captured = capsys.readouterr()
    assert "search: the whole video (--search anywhere)" in captured.out and captured.err == ""
    report = json.loads((out / "track.json").read_text())
    assert report["query"]["search"] == "anywhere" and report["searched_frames"] == FRAMES


def test_search_before_with_an_image_query_is_refused(video: Path, tiny_weights: Path, tmp_path: Path, capsys) -> None:
    from PIL import Image

    image = tmp_path / "mug.png"
    Image.fromarray(np.full((24, 16, 3), 200, np.uint8)).save(image)
    out = tmp_path / "out"
    assert main(locate_argv(video, tiny_weights, out, "--query", str(image), "--search", "before")) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("prvql: error: --search before needs a box query") and not captured.out
    assert len(captured.err.splitlines()) == 1 and not out.exists()


def test_synth_and_data_off_a_terminal_print_one_line_per_phase(tmp_path: Path, capsys) -> None:
    root = tmp_path / "synth"
    argv = ["synth", "--output", str(root), "--clips", "1", "--frames", "10", "--width", "64", "--height", "64"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert [line.split(":")[0] for line in err.splitlines()] == ["rendering videos", "extracting clips"]
    assert err.startswith("rendering videos: 1/1 videos in ") and "extracting clips: 1/1 clips in " in err
    argv = ["data", "cache-frames", "--annotations", str(root / "vq_train.json"), "--clips", str(root / "clips")]
    assert main([*argv, "--output", str(tmp_path / "frames"), "--window", "4"]) == 0
    assert capsys.readouterr().err.startswith("caching frames: 1/1 clips in ")


def test_verbose_logging_shows_prvql_debug_lines_and_only_warnings_of_other_libraries() -> None:
    """In a fresh interpreter (pytest's own log handlers would hide what the CLI sets up)."""
    code = (
        "import logging; from prvql.cli import configure_logging; configure_logging(True); "
        "[logging.getLogger(n).debug('chatter %s', n) for n in ('matplotlib.font_manager', 'PIL.PngImagePlugin', "
        "'urllib3.connectionpool', 'asyncio', 'h5py', 'prvql.infer.locate')]; "
        "logging.getLogger('urllib3').info('chatter info'); logging.getLogger('PIL').warning('kept warning')"
    )
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr
    assert [line.split(" ", 2)[2] for line in err.splitlines()] == [
        "DEBUG prvql.infer.locate: chatter prvql.infer.locate",
        "WARNING PIL: kept warning",
    ]
