"""Atomic outputs: ordinary permissions, no temporary file left on any error, several files published together."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from prvql.atomic import atomic_outputs, atomic_path


def _mode(path: Path) -> int:
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    return path.stat().st_mode & 0o777


def test_weights_files_get_ordinary_permissions(tmp_path: Path, tiny_weights: Path) -> None:
    """safetensors recreates the file 0600; the published weights are 0644 (with umask 022) like every output."""
    _mode(tiny_weights)


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_atomic_path_leaves_nothing_on_any_error(tmp_path: Path, error: type[BaseException]) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(error), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"] and target.read_text() == "old"


def test_atomic_outputs_publish_all_or_none(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_outputs() as stage:
        stage(tmp_path / "a.txt").write_text("new a")
        stage(tmp_path / "b.txt").write_text("new b")
        raise RuntimeError("the last output failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"] and (tmp_path / "a.txt").read_text() == "old"
    with atomic_outputs() as stage:
        stage(tmp_path / "a.txt").write_text("new a")
        stage(tmp_path / "sub" / "b.txt").write_text("new b")
    assert (tmp_path / "a.txt").read_text() == "new a" and (tmp_path / "sub" / "b.txt").read_text() == "new b"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.txt", "b.txt", "sub"]
    _mode(tmp_path / "sub" / "b.txt")
