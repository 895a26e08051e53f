"""Atomic file writes: write to a temporary file in the destination folder, then rename over the target.

A crash or a Ctrl-C never leaves a half-written output behind. Outputs are created with ordinary permissions
(``0666`` less the umask, i.e. 0644 usually), whatever the writer did to the temporary file. :func:`atomic_outputs`
stages several files and renames them together at the end, so that a run leaves all of them or none of its new ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def _ordinary_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _temp_next_to(path: Path, suffix: str | None) -> Path:
    """Create (empty) and return a hidden temporary file in ``path``'s folder (the folder is created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=suffix if suffix is not None else path.suffix, dir=path.parent
    )
    os.close(fd)
    return Path(tmp)


def _publish(tmp: Path, path: Path) -> None:
    """Give ``tmp`` ordinary permissions (writers such as safetensors recreate it 0600) and rename it to ``path``."""
    os.chmod(tmp, _ordinary_mode())
    os.replace(tmp, path)


def _discard(tmp: Path | None) -> None:
    if tmp is not None:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed to ``path``, on error removed.

    ``suffix`` defaults to the target's suffix, so writers that choose a format by extension (PyAV, PIL,
    matplotlib) behave as they would for the real name.
    """
    path = Path(path)
    tmp = None
    try:
        tmp = _temp_next_to(path, suffix)
        yield tmp
        _publish(tmp, path)
    finally:
        _discard(tmp)


@contextlib.contextmanager
def atomic_outputs() -> Iterator[Callable[[str | Path], Path]]:
    """Stage several outputs and publish them together when the block ends without error.

    Yields ``stage(path) -> temporary path``; write each output to its temporary path. On success every staged file
    is renamed to its target, in the order staged (stage the file that marks a complete run last); on error all are
    removed, so an existing output folder keeps its previous files and a new one gets none.
    """
    staged: list[tuple[Path, Path]] = []

    def stage(path: str | Path, suffix: str | None = None) -> Path:
        path = Path(path)
        tmp = _temp_next_to(path, suffix)
        staged.append((tmp, path))
        return tmp

    try:
        yield stage
        mode = _ordinary_mode()
        for tmp, _ in staged:
            os.chmod(tmp, mode)
        for tmp, path in staged:
            os.replace(tmp, path)
    finally:
        for tmp, _ in staged:
            _discard(tmp)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = None) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent))
