"""The authors' trained models by name (``vqloc``, ``prvql``): download, check, convert and cache.

:func:`get_released` downloads the checkpoint the authors published (:data:`RELEASES`), checks it, converts it with
:mod:`prvql.model.released_weights` and publishes one self-contained weights file, ``<cache>/weights/NAME.safetensors``,
which stores its config like every weights file; :func:`resolve_weights` turns ``--weights NAME`` into that file.

- Cache: ``$PRVQL_CACHE``, else ``$XDG_CACHE_HOME/prvql``, else ``~/.cache/prvql`` (:func:`cache_dir`).
- Source: the registry's address, or ``$PRVQL_WEIGHTS_URL_<NAME>`` (a mirror; the tests' local server).
- Download: into ``<cache>/downloads/NAME.part``; an interrupted transfer is resumed with an HTTP ``Range`` request,
  a few times in the same run and by the next run (a server that ignores ``Range`` sends the whole file again).
  The size is checked against the one the server announced and the registry's, the SHA-256 against the registry's
  when known. A file that fails a check, or that is not a readable checkpoint of the named model, is deleted: the
  cache gets nothing. The converted file is written atomically; the download is deleted after conversion.
- Google Drive answers a large file with a "can't scan this file for viruses" page first: its download form
  (action + hidden fields, e.g. ``confirm``) or its ``/uc?export=download`` link gives the file's address; a page
  without either (quota exceeded, file not shared) is an error quoting the page's message.
- Checkpoints from elsewhere are untrusted: read with ``torch.load(weights_only=True)``
  (:func:`prvql.weights_file.torch_load_untrusted`); a tar archive's member is read through
  :meth:`tarfile.TarFile.extractfile` into a file this module names, so no member name becomes a path.

The HTTP client is the standard library's ``urllib`` (redirects, cookies), not ``gdown``: gdown applies its Drive
confirmation step only to drive.google.com addresses (so the step could not be tested offline against a local
server), would bring ``requests`` and ``beautifulsoup4``, and reports some failures by printing rather than raising.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from http.cookiejar import CookieJar
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode, urljoin, urlsplit
from urllib.request import HTTPCookieProcessor, OpenerDirector, Request, build_opener

from prvql.errors import CheckpointError, PRVQLError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Release:
    """One model the authors published.

    Attributes:
        name: what ``--weights`` and ``prvql weights get`` call it.
        title: the model and its paper, for messages.
        url: the public address of the checkpoint as published.
        drive: a Google Drive address (expect the confirmation page).
        size: the file's size in bytes, when known.
        sha256: the file's SHA-256 (hex), when known.
    """

    name: str
    title: str
    url: str
    drive: bool = False
    size: int | None = None
    sha256: str | None = None


# Neither host can be reached from the machines this package is developed on, so the real files' sizes and
# hashes are unknown: the size the server announces is checked, and `prvql weights get` prints both of the file.
RELEASES = {
    "vqloc": Release(
        "vqloc", "VQLoC (NeurIPS 2023)", "https://utexas.box.com/shared/static/3j3q9qsc1kovpwfxtnsful7pvdy234q6.tar"
    ),
    "prvql": Release(
        "prvql",
        "PRVQL (ICCV 2025)",
        "https://drive.google.com/uc?export=download&id=1A6JTGqG32Ja-4Qo2T44KIcL74hcKEo8T",
        drive=True,
    ),
}
CHUNK = 1 << 20  # bytes per read
RETRIES = 3  # reconnections after an interrupted transfer, each resuming where the last stopped
TIMEOUT = 60.0  # seconds without an answer before a connection counts as interrupted
MAX_PAGES = 3  # web pages (Drive confirmation) followed before giving up
_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".pth.tar", ".ckpt")


@dataclass(frozen=True)
class Fetched:
    """What :func:`get_released` did.

    Attributes:
        path: the cached weights file.
        source: where the checkpoint came from (address or local file).
        size: its size in bytes.
        sha256: its SHA-256 (hex).
        summary: the converter's one-line summary (:meth:`prvql.model.released_weights.Converted.summary`).
    """

    path: Path
    source: str
    size: int
    sha256: str
    summary: str


def cache_dir() -> Path:
    """``$PRVQL_CACHE``, else ``$XDG_CACHE_HOME/prvql``, else ``~/.cache/prvql`` (not created here)."""
    if os.environ.get("PRVQL_CACHE"):
        return Path(os.environ["PRVQL_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "prvql"


def cached_path(name: str) -> Path:
    """Where the converted model ``name`` lives in the cache."""
    return cache_dir() / "weights" / f"{name}.safetensors"


def source_url(release: Release) -> str:
    """``$PRVQL_WEIGHTS_URL_<NAME>`` when set, else the published address."""
    return os.environ.get(f"PRVQL_WEIGHTS_URL_{release.name.upper()}") or release.url


def resolve_weights(weights: str | Path | None) -> str | Path | None:
    """``weights`` itself, or for a model name of :data:`RELEASES` (``"prvql"``; a file of that name is given by a
    path with a folder, e.g. ``/data/prvql``) its cached weights file.

    Raises:
        CheckpointError: (field ``"weights"``) the named model is not in the cache yet.
    """
    if weights is None or str(weights) not in RELEASES:
        return weights
    path = cached_path(str(weights))
    if not path.is_file():
        raise CheckpointError(
            f"{weights}: the authors' {RELEASES[str(weights)].title} model is not downloaded yet "
            f"(no {path}); run `prvql weights get {weights}`",
            field="weights",
        )
    return path


def get_released(
    name: str, *, source_file: str | Path | None = None, force: bool = False, progress: bool = True
) -> Fetched | None:
    """Download (or take ``source_file``), check, convert and cache the authors' model ``name``.

    Args:
        name: a key of :data:`RELEASES`.
        source_file: the checkpoint (or the published archive) already on disk: nothing is downloaded.
        force: replace a cached model.
        progress: show a progress bar (on a terminal only).

    Returns:
        what was done, or ``None`` when the model was already cached (and not ``force``).

    Raises:
        PRVQLError: an unknown name; an unwritable cache; a refused, interrupted or
            mis-sized download; a file that is not the named model's checkpoint. Nothing is cached then;
            an interrupted download's part file stays, for the next run to resume.
    """
    from prvql.model.released_weights import load_released
    from prvql.paths import check_input_file, check_output_dir
    from prvql.weights_file import save_weights

    if name not in RELEASES:
        raise PRVQLError(f"unknown model {name!r} (known: {', '.join(RELEASES)})", field="name")
    release = RELEASES[name]
    target = cached_path(name)
    downloads = cache_dir() / "downloads"
    try:
        check_output_dir(target.parent, "cache")
        check_output_dir(downloads, "cache")
    except PRVQLError as exc:
        raise PRVQLError(f"{exc.detail} (the cache folder; PRVQL_CACHE moves it)") from None
    if target.is_file() and not force:
        return None
    if source_file is not None:
        check_input_file(source_file, "checkpoint", field="source_file")
    downloads.mkdir(parents=True, exist_ok=True)
    if source_file is not None:
        origin, file = str(source_file), Path(source_file)
    else:
        origin, file = source_url(release), downloads / f"{name}.part"
        _download(release, origin, file, progress)
    delete = source_file is None  # a download is deleted, whatever happens next
    try:
        size, digest = _check_file(release, origin, file)
        with _checkpoint_in(file, origin, downloads) as checkpoint:
            try:
                converted = load_released(checkpoint)
            except CheckpointError as exc:  # name the source, not the temporary file (deleted below)
                raise CheckpointError(str(exc).replace(str(checkpoint), origin)) from None
            if converted.detected.model != name:
                raise CheckpointError(
                    f"{origin}: holds a {converted.detected.model.upper()} checkpoint, not {release.title}"
                )
            extra = {"source": origin, "source_bytes": str(size), "source_sha256": digest, "name": name}
            save_weights(converted.model, target, converted.cfg, include_backbone=True, extra=extra)
    finally:
        if delete:
            file.unlink(missing_ok=True)
    return Fetched(target, origin, size, digest, converted.summary(origin))


def _check_file(release: Release, origin: str, file: Path) -> tuple[int, str]:
    """The size and SHA-256 of ``file``, checked against the registry's when known."""
    size = file.stat().st_size
    if release.size is not None and size != release.size:
        raise CheckpointError(f"{origin}: got {size} bytes, the published file has {release.size}")
    digest = hashlib.sha256()
    with file.open("rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    if release.sha256 is not None and digest.hexdigest() != release.sha256.lower():
        raise CheckpointError(f"{origin}: SHA-256 {digest.hexdigest()} differs from the published {release.sha256}")
    return size, digest.hexdigest()


@contextlib.contextmanager
def _checkpoint_in(file: Path, origin: str, folder: Path) -> Iterator[Path]:
    """``file`` itself, or when it is a tar archive its one checkpoint member copied to a temporary file in
    ``folder`` (deleted afterwards; the member's name is never used as a path)."""
    if not tarfile.is_tarfile(file):
        yield file
        return
    fd, name = tempfile.mkstemp(prefix=".member.", suffix=".pth", dir=folder)
    tmp = Path(name)
    try:
        try:
            with os.fdopen(fd, "wb") as out, tarfile.open(file) as tar:
                source = tar.extractfile(_checkpoint_member(tar, origin))
                assert source is not None  # a regular file member always has content
                shutil.copyfileobj(source, out, CHUNK)
        except (tarfile.TarError, EOFError) as exc:
            raise CheckpointError(f"{origin}: a truncated or corrupt tar archive ({exc})") from None
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def _checkpoint_member(tar: tarfile.TarFile, origin: str) -> tarfile.TarInfo:
    """The archive's checkpoint: its one regular file named ``*.pth`` / ``*.pt`` / ``*.pth.tar`` / ``*.ckpt`` (or,
    among several, the one named ``*best*``). Links and other special members are never taken."""
    found = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(_CHECKPOINT_SUFFIXES)]
    if len(found) > 1:
        found = [m for m in found if "best" in Path(m.name).name] or found
    if len(found) != 1:
        names = ", ".join(m.name for m in found[:4]) or "none"
        raise CheckpointError(f"{origin}: expected one checkpoint file in the tar archive, found {names}")
    return found[0]


class _DrivePage(HTMLParser):
    """What leads from a Google Drive page to the file: the ``download-form`` (action and hidden fields), a
    ``/uc?export=download`` link, and the error caption of a refusal page."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self.link: str | None = None
        self.error = ""
        self._in_form = self._in_error = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and a.get("id") == "download-form":
            self.action, self._in_form = a.get("action", ""), True
        elif tag == "input" and self._in_form and a.get("type") == "hidden" and a.get("name"):
            self.fields[a["name"]] = a.get("value", "")
        elif tag == "a" and self.link is None and "export=download" in a.get("href", ""):
            self.link = a["href"]
        elif tag == "p" and "uc-error-subcaption" in a.get("class", ""):
            self._in_error = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False
        elif tag == "p":
            self._in_error = False

    def handle_data(self, data: str) -> None:
        if self._in_error:
            self.error += data


def _confirmed_url(page: str, page_url: str, origin: str) -> str:
    """The file's address from a Google Drive confirmation page.

    Raises:
        CheckpointError: the page leads nowhere (quoting its error caption when it has one).
    """
    parser = _DrivePage()
    parser.feed(page)
    if parser.action:
        return f"{urljoin(page_url, parser.action)}?{urlencode(parser.fields)}"
    if parser.link:
        return urljoin(page_url, parser.link)
    reason = " ".join(parser.error.split()) or "no download form or link on the page"
    raise CheckpointError(f"{origin}: Google Drive refused the download ({reason}); try again later")


def _download(release: Release, url: str, part: Path, progress: bool) -> None:
    """Download ``url`` into ``part``, resuming what ``part`` already holds (see the module docstring).

    Raises:
        CheckpointError: an address that is not http(s), an HTTP error, an unreachable host, a web page instead of
            the file, or a transfer still interrupted after :data:`RETRIES` reconnections (``part`` is kept).
    """
    if urlsplit(url).scheme not in ("http", "https"):
        raise CheckpointError(f"{url}: not an http(s) address")
    opener = build_opener(HTTPCookieProcessor(CookieJar()))
    target, pages, failures = url, 0, 0
    total: int | None = None
    while True:
        offset = part.stat().st_size if part.exists() else 0
        response = _request(opener, target, offset, url)
        if response is None:  # the part file was longer than the file: start again
            part.unlink()
            continue
        with response:
            if response.headers.get_content_type() == "text/html":
                if not release.drive or pages == MAX_PAGES:
                    raise CheckpointError(f"{url}: the server sent a web page, not the checkpoint")
                pages += 1
                page = response.read(CHUNK).decode("utf-8", "replace")
                target = _confirmed_url(page, response.geturl(), url)
                continue
            offset, total = _resume_point(response, offset)
            reason = _receive(response, part, offset, total, f"downloading {release.name}", progress)
            if reason is None:
                return
        failures += 1
        got, size = part.stat().st_size, total if total is not None else "?"
        if failures > RETRIES:
            raise CheckpointError(
                f"{url}: download interrupted at {got} of {size} bytes ({reason}); run the command again to resume"
            )
        logger.warning("download interrupted at %d of %s bytes (%s); resuming", got, size, reason)


def _receive(
    response: http.client.HTTPResponse, part: Path, offset: int, total: int | None, desc: str, progress: bool
) -> str | None:
    """Write the answer's body into ``part`` from byte ``offset`` on, counting megabytes on a progress bar.

    Returns:
        None when the file is complete (``total`` bytes, or the end of an answer of unknown length), else why the
        transfer stopped. Errors writing ``part`` (a full disk) are raised as they are.
    """
    from prvql.progress import progress_bar

    mb = 10**6
    shown = None if total is None else -(-total // mb)
    with (
        part.open("r+b" if offset else "wb") as out,
        progress_bar(desc, shown, unit="megabyte", initial=offset // mb, enabled=progress) as bar,
    ):
        out.seek(offset)
        out.truncate()
        while True:
            try:
                block = response.read(CHUNK)
            except (http.client.HTTPException, OSError) as exc:  # a reset or timed-out connection
                return f"{type(exc).__name__}: {exc}"
            if not block:
                break
            out.write(block)
            if out.tell() // mb > bar.n:
                bar.update(out.tell() // mb - bar.n)
        if total is not None and out.tell() != total:
            return "the connection closed early"
        bar.update(-(-out.tell() // mb) - bar.n)  # the last, partial megabyte
    return None


def _request(opener: OpenerDirector, target: str, offset: int, url: str) -> http.client.HTTPResponse | None:
    """GET ``target`` from byte ``offset`` on; ``None`` when the server says the offset is past the end."""
    headers = {"User-Agent": "prvql", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return opener.open(Request(target, headers=headers), timeout=TIMEOUT)
    except HTTPError as exc:
        if exc.code == 416 and offset:
            return None
        raise CheckpointError(f"{url}: the server answered HTTP {exc.code} {exc.reason}") from None
    except (URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise CheckpointError(f"{url}: cannot download ({reason})") from None


def _resume_point(response: http.client.HTTPResponse, offset: int) -> tuple[int, int | None]:
    """(where the body starts in the file, the file's total size or None): ``offset`` for a ``206`` answer whose
    ``Content-Range`` starts there, else 0 (the server sends the whole file)."""
    length = response.headers.get("Content-Length")
    if response.status == 206:
        unit, _, spec = (response.headers.get("Content-Range") or "").partition(" ")
        span, _, size = spec.partition("/")
        start = span.partition("-")[0]
        if unit == "bytes" and start.isdigit() and int(start) == offset:
            return offset, int(size) if size.isdigit() else None
        raise CheckpointError(f"{response.geturl()}: the server resumed at the wrong place ({spec or 'no range'})")
    return 0, int(length) if length and length.isdigit() else None
