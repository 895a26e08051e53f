"""Paths from untrusted data and from the command line: the checks every command makes before its work starts.

- :func:`plain_name`: a uid or key read from a data file that becomes part of a file name (``<clip_uid>.mp4``,
  ``<annotation_uid>_<query_set>.npz``, ``FRAMES_DIR/<clip_uid>/``) must be a plain name: no path separator, not
  ``.`` or ``..``, not absolute, no NUL or control character, at most :data:`MAX_NAME_LENGTH` characters. A file
  that names ``../videos/x`` is refused instead of reading or writing outside the folder it was given.
- :func:`check_output_file` / :func:`check_output_dir`: the pre-flight check of an output, made before any work
  and without creating anything: a folder where a file is expected (or the reverse), a parent that is a file, a
  folder that is not writable, are refused with one line naming the path and the reason.
- :func:`check_input_file` / :func:`check_input_dir`: an input that is missing, or a folder where a file is
  expected (or the reverse), says so.
- :func:`os_error_message`: the one-line text of an :class:`OSError` (path and reason), as the CLI prints it.

Every refusal raises :class:`~prvql.errors.PRVQLError` (or the subclass given).
"""

from __future__ import annotations

import os
from pathlib import Path

from prvql.errors import PRVQLError

MAX_NAME_LENGTH = 200  # file systems allow 255 bytes per name; suffixes such as ".mp4" or "_12.npz" are added


def plain_name(value: str, where: str, error: type[PRVQLError] = PRVQLError) -> str:
    """``value`` if it can be used as one file name inside a folder, else raise ``error``.

    Args:
        value: the uid or key.
        where: the file and field it comes from, e.g. ``'vq_val.json: videos[0].clips[2].clip_uid'``.
        error: the exception class to raise (e.g. :class:`~prvql.errors.AnnotationError`).

    Raises:
        ``error``: naming ``where`` and what is wrong with ``value``.
    """
    reason = None
    if not isinstance(value, str):
        reason = f"expected a string, got {value!r:.60}"
    elif not value or value.strip() != value:
        reason = "must be a non-empty name without leading or trailing spaces"
    elif value in (".", ".."):
        reason = "must be a plain name, not '.' or '..'"
    elif "/" in value or "\\" in value or (os.sep in value) or (os.altsep and os.altsep in value):
        reason = "must be a plain name without a path separator"
    elif any(ord(c) < 32 or ord(c) == 127 for c in value):
        reason = "must not contain NUL or control characters"
    elif os.path.isabs(value) or (len(value) > 1 and value[1] == ":"):
        reason = "must not be an absolute path"
    elif len(value) > MAX_NAME_LENGTH:
        reason = f"must be at most {MAX_NAME_LENGTH} characters (got {len(value)})"
    if reason is not None:
        shown = value if isinstance(value, str) and len(value) <= 80 else f"{str(value)[:80]}..."
        raise error(f"{where}: {reason} (got {shown!r})")
    return value


def file_in(folder: str | Path, name: str, suffix: str = "") -> Path:
    """``folder / (name + suffix)`` for a uid ``name`` from data, refused unless it is a plain name.

    Raises:
        PRVQLError: ``name`` is not a plain name (so the path would leave ``folder``).
    """
    plain_name(name, f"{folder}: file name {str(name)[:80]!r}")
    return Path(folder) / f"{name}{suffix}"


def os_error_message(exc: OSError, path: str | Path | None = None) -> str:
    """``"<path>: <reason>"`` for an OSError (``path`` when the error names no file)."""
    target = exc.filename if exc.filename is not None else path
    reason = exc.strerror or str(exc) or type(exc).__name__
    if getattr(exc, "filename2", None) is not None:
        target = f"{target} -> {exc.filename2}"
    return f"{target}: {reason}" if target is not None else reason


def _nameable(path: Path, field: str) -> None:
    """Refuse a path the operating system cannot name: a NUL byte, or a component longer than 255 bytes."""
    if "\x00" in str(path):
        raise PRVQLError(f"{str(path)!r}: contains a NUL byte", field=field)
    for part in path.parts:
        if len(os.fsencode(part)) > 255:
            raise PRVQLError(f"{path}: the name {part[:40]!r}... is longer than 255 bytes", field=field)


def _existing_ancestor(path: Path, field: str) -> Path:
    """The nearest existing ancestor of ``path``; it must be a writable folder."""
    parent = path.parent
    while not parent.exists():
        if parent == parent.parent:
            break
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise PRVQLError(f"{path}: cannot be created, {parent} is a file, not a folder", field=field)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PRVQLError(f"{path}: cannot be written, permission denied on {parent}", field=field)
    return parent


def check_output_file(path: str | Path, field: str) -> Path:
    """Pre-flight check of an output file (nothing is created).

    Args:
        path: the file to be written.
        field: the input that gave it, e.g. ``"output"`` (a library parameter) or ``"--output"`` (a command's flag):
            the error's :attr:`~prvql.errors.PRVQLError.field`.

    Raises:
        PRVQLError: ``path`` is a folder, sits under a file, or its folder is not writable.
    """
    path = Path(path)
    _nameable(path, field)
    if path.is_dir():
        raise PRVQLError(f"{path}: is a folder, expected a file name", field=field)
    if path.name in ("", ".", ".."):
        raise PRVQLError(f"{path}: expected a file name", field=field)
    if path.exists() and not os.access(path, os.W_OK) and not os.access(path.parent, os.W_OK):
        raise PRVQLError(f"{path}: cannot be written, permission denied", field=field)
    _existing_ancestor(path, field)
    return path


def check_output_dir(path: str | Path, field: str) -> Path:
    """Pre-flight check of an output folder (nothing is created); ``field`` as in :func:`check_output_file`.

    Raises:
        PRVQLError: ``path`` is a file, sits under a file, or cannot be written.
    """
    path = Path(path)
    _nameable(path, field)
    if path.exists():
        if not path.is_dir():
            raise PRVQLError(f"{path}: is a file, expected a folder", field=field)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PRVQLError(f"{path}: cannot be written, permission denied", field=field)
        return path
    _existing_ancestor(path, field)
    return path


def check_input_file(
    path: str | Path, what: str, error: type[PRVQLError] = PRVQLError, field: str | None = None
) -> Path:
    """``path`` if it is a readable file, else raise ``error`` (with ``field``, the input that gave the path, if
    given) saying it is missing, a folder or unreadable."""
    path = Path(path)
    if "\x00" in str(path):
        raise error(f"{str(path)!r}: {what} not found (the name contains a NUL byte)", field=field)
    if path.is_dir():
        raise error(f"{path}: is a folder, expected {what}", field=field)
    if not path.exists():
        raise error(f"{path}: {what} not found", field=field)
    if not os.access(path, os.R_OK):
        raise error(f"{path}: {what} cannot be read, permission denied", field=field)
    return path


def check_input_dir(
    path: str | Path, what: str, error: type[PRVQLError] = PRVQLError, field: str | None = None
) -> Path:
    """``path`` if it is a folder, else raise ``error`` (with ``field`` as in :func:`check_input_file`) saying it
    is missing or a file."""
    path = Path(path)
    if not path.exists():
        raise error(f"{path}: {what} not found", field=field)
    if not path.is_dir():
        raise error(f"{path}: is a file, expected {what}", field=field)
    return path
