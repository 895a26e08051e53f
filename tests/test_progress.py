"""prvql.progress off a terminal (a CI log, a pipe): short lines, never a bar redrawn with carriage returns.

The bar on a terminal is checked end to end with a pseudo-terminal in tests/commands/test_progress_cli.py.
"""

from __future__ import annotations

import io

import pytest

import prvql.progress as progress
from prvql.progress import LineBar, PhaseBars, progress_bar, tracked


class Clock:
    """A stand-in for time.monotonic that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(progress.time, "monotonic", clock)
    return clock


def test_off_a_terminal_a_phase_is_one_line_when_it_ends(clock: Clock) -> None:
    out = io.StringIO()
    bar = LineBar("searching", 120, "frame", file=out)
    for _ in range(120):
        bar.update(1)
    assert out.getvalue() == ""
    clock.now += 4.0
    bar.close()
    bar.close()  # once only
    assert out.getvalue() == "searching: 120/120 frames in 4.0 s, 30.0 frames/s\n"


def test_a_long_phase_prints_a_line_a_minute_with_the_time_left(clock: Clock) -> None:
    out = io.StringIO()
    bar = LineBar("train", 400, "it", initial=100, file=out)
    bar.set_postfix(loss="0.5", refresh=False)
    for _ in range(120):
        clock.now += 0.25
        bar.update(1)  # 30 s: no line yet
    assert out.getvalue() == ""
    for _ in range(120):
        clock.now += 0.25
        bar.update(1)  # 60 s: one line; 240 done in 60 s, 60 to go -> 15 s left
    lines = out.getvalue().splitlines()
    assert lines == ["train: 340/400 its in 60 s, about 15 s left, loss=0.5"]
    assert "\r" not in out.getvalue()


def test_phase_bars_give_each_phase_its_own_bar(clock: Clock, capsys) -> None:
    with PhaseBars() as bars:
        for done in range(0, 11):
            bars("search", done, 10)
        clock.now += 2.0
        for done in range(1, 6):
            bars("render", done, 5)
            clock.now += 1.0
        assert capsys.readouterr().err == "searching: 10/10 frames in 2.0 s, 5.0 frames/s\n"
    assert capsys.readouterr().err == "rendering: 5/5 frames in 5.0 s, 1.0 frames/s\n"


def test_disabled_progress_prints_nothing_and_tracked_passes_items_through(capsys) -> None:
    with PhaseBars(enabled=False) as bars:
        bars("search", 3, 3)
    with progress_bar("x", 2, enabled=False) as bar:
        bar.update(2)
        assert bar.n == 2
    assert list(tracked(iter("abc"), "quiet", 3, enabled=False)) == ["a", "b", "c"]
    assert capsys.readouterr().err == ""
    assert list(tracked([1, 2], "counting", unit="clip")) == [1, 2]
    assert capsys.readouterr().err.startswith("counting: 2/2 clips in ")
