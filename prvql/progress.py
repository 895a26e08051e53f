"""Progress of long commands on the terminal: a moving bar on a terminal, a few short lines anywhere else.

:func:`progress_bar` makes one bar for one phase of work (decoding, searching, rendering, training ...). When
standard error is a terminal it is a :class:`tqdm.tqdm` bar (done/total, rate in units per second, time left) and
log records go above it instead of through it; anywhere else (a CI log, a file, a pipe) it prints one line when the
phase ends (``searching: 120/120 frames in 3.2 s, 37.5 frames/s``) and, for a long phase, one line a minute while
it runs, so logs stay small. Both kinds have the same methods (the subset of tqdm's that prvql uses).

:func:`tracked` counts the items of an iterable on such a bar. :class:`PhaseBars` adapts a
``progress(phase, done, total)`` callback (as :func:`prvql.infer.locate.locate_video` takes) to one bar per phase.

Example::

    with progress_bar("indexing", total=len(frames), unit="frame") as bar:
        for frame in frames:
            ...
            bar.update(1)

    with PhaseBars() as progress:
        locate_video(..., progress=progress)
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sized
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, Protocol, TextIO, TypeVar

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

T = TypeVar("T")

LINE_EVERY_S = 60.0  # off a terminal: a line at most this often while a phase runs (and one when it ends)

# phase names of progress callbacks -> what the bar says
PHASE_LABELS = {"decode": "decoding", "search": "searching", "render": "rendering", "index": "indexing"}


class Bar(Protocol):
    """What :func:`progress_bar` returns: a tqdm bar, or :class:`LineBar` off a terminal."""

    n: float
    total: float | None

    def update(self, n: float = 1) -> Any: ...

    def set_postfix(
        self, ordered_dict: Mapping[str, object] | None = None, refresh: bool = True, **kwargs: Any
    ) -> None: ...

    def write(self, s: str) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Bar: ...

    def __exit__(self, *exc: object) -> Any: ...


def on_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default: standard error, where bars go) is a terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced by an object without isatty, or closed
        return False


def _rate_text(n: float, seconds: float, unit: str) -> str:
    return f"{n / seconds:.1f} {unit}s/s" if seconds > 0 and n > 0 else f"0 {unit}s/s"


class LineBar:
    """The bar off a terminal: short lines on ``file`` (one per :data:`LINE_EVERY_S` at most while running, one at
    :meth:`close`) instead of a bar redrawn in place. Same methods as the tqdm bar."""

    def __init__(
        self, desc: str, total: float | None, unit: str, initial: float = 0, file: TextIO | None = None
    ) -> None:
        self.desc, self.total, self.unit = desc, total, unit
        self.n = self.initial = initial
        self.file = file
        self.postfix = ""
        self.start = self.last_line = time.monotonic()
        self.closed = False

    def _print(self, text: str) -> None:
        print(text, file=self.file if self.file is not None else sys.stderr, flush=True)

    def _counted(self) -> str:
        return f"{self.n:g}/{self.total:g} {self.unit}s" if self.total else f"{self.n:g} {self.unit}s"

    def update(self, n: float = 1) -> None:
        """``n`` more units done; prints a line when the last one is :data:`LINE_EVERY_S` old."""
        self.n += n
        now = time.monotonic()
        if now - self.last_line >= LINE_EVERY_S:
            self.last_line = now
            elapsed, done = now - self.start, self.n - self.initial
            left = ""
            if self.total and done > 0:
                left = f", about {(self.total - self.n) * elapsed / done:.0f} s left"
            self._print(f"{self.desc}: {self._counted()} in {elapsed:.0f} s{left}{self.postfix}")

    def set_postfix(
        self, ordered_dict: Mapping[str, object] | None = None, refresh: bool = True, **kwargs: Any
    ) -> None:
        """Values shown after the count (e.g. ``loss=0.31``)."""
        values = {**(ordered_dict or {}), **kwargs}
        self.postfix = "".join(f", {k}={v}" for k, v in values.items())

    def write(self, s: str) -> None:
        """A message line, on standard output (as tqdm's ``write``)."""
        print(s, flush=True)

    def close(self) -> None:
        """The phase's line: units done, seconds, rate (printed once)."""
        if self.closed:
            return
        self.closed = True
        elapsed = time.monotonic() - self.start
        rate = _rate_text(self.n - self.initial, elapsed, self.unit)
        self._print(f"{self.desc}: {self._counted()} in {elapsed:.1f} s, {rate}{self.postfix}")

    def __enter__(self) -> LineBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _TerminalBar(tqdm):
    """tqdm, with log records printed above the bar (not through it) while it is open."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._logs: AbstractContextManager[None] = logging_redirect_tqdm()
        self._logs.__enter__()
        super().__init__(*args, **kwargs)

    def close(self) -> None:
        super().close()
        if self._logs is not None:
            logs, self._logs = self._logs, None
            logs.__exit__(None, None, None)


class _Silent:
    """The bar when progress is off: counts, prints nothing."""

    def __init__(self, total: float | None, initial: float) -> None:
        self.n, self.total = initial, total

    def update(self, n: float = 1) -> None:
        self.n += n

    def set_postfix(
        self, ordered_dict: Mapping[str, object] | None = None, refresh: bool = True, **kwargs: Any
    ) -> None:
        pass

    def write(self, s: str) -> None:
        print(s, flush=True)

    def close(self) -> None:
        pass

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def progress_bar(
    desc: str,
    total: float | None = None,
    unit: str = "frame",
    *,
    initial: float = 0,
    enabled: bool = True,
    position: int | None = None,
) -> Bar:
    """One phase's progress on standard error; use it as a context manager (or call ``close()``).

    Args:
        desc: what is being done, e.g. ``"searching"``.
        total: units to do (``None``: unknown, no time left shown).
        unit: the unit's name, singular (the rate reads ``frames/s``).
        initial: units already done (a resumed run).
        enabled: False = print nothing (``--no-progress``, or ranks other than the main one).
        position: line of the bar on the terminal when several processes share it (e.g. the rank).

    Returns:
        A tqdm bar on a terminal; a :class:`LineBar` elsewhere; a silent counter when not ``enabled``.
    """
    if not enabled:
        return _Silent(total, initial)
    if not on_terminal():
        return LineBar(desc, total, unit, initial)
    try:  # a terminal that states no width (0 columns, e.g. a bare pseudo-terminal) gets 80 columns
        sized = os.get_terminal_size(sys.stderr.fileno()).columns > 0
    except (OSError, ValueError):
        sized = False
    return _TerminalBar(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        dynamic_ncols=sized,
        ncols=None if sized else 80,
        position=position,
        leave=True,
    )


def tracked(
    items: Iterable[T],
    desc: str,
    total: float | None = None,
    unit: str = "item",
    *,
    enabled: bool = True,
    position: int | None = None,
) -> Iterator[T]:
    """``items`` as they come, counted on a :func:`progress_bar` (``total``: ``len(items)`` when it has one), which
    closes when the items end or the loop stops."""
    if total is None and isinstance(items, Sized):
        total = len(items)
    with progress_bar(desc, total, unit, enabled=enabled, position=position) as bar:
        for item in items:
            yield item
            bar.update(1)


class PhaseBars:
    """``progress(phase, done, total)`` -> one :func:`progress_bar` per phase (a new phase closes the previous
    bar; so does leaving the ``with`` block). Phase names are shown through :data:`PHASE_LABELS` (else as they are).

    Args:
        unit: the unit of every phase.
        enabled: False = print nothing.
        labels: more phase name -> label entries.
    """

    def __init__(self, unit: str = "frame", enabled: bool = True, labels: Mapping[str, str] | None = None) -> None:
        self.unit, self.enabled = unit, enabled
        self.labels = {**PHASE_LABELS, **(labels or {})}
        self.phase: str | None = None
        self.bar: Bar | None = None

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase != self.phase or self.bar is None:
            self.close()
            self.phase = phase
            self.bar = progress_bar(self.labels.get(phase, phase), total, self.unit, enabled=self.enabled)
        if self.bar.total != total:
            self.bar.total = total
        if done != self.bar.n:
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        """Close the current phase's bar."""
        if self.bar is not None:
            self.bar.close()
        self.bar = self.phase = None

    def __enter__(self) -> PhaseBars:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
