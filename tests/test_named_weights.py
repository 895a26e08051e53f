"""The authors' models by name: download (Drive confirmation page, resume, size/hash checks), tar archives, conversion
into the cache and ``--weights NAME`` resolution, against a local HTTP server (the real hosts are not reachable).

The checkpoints are built from the released key/shape tables at tiny widths (:mod:`prvql.model.released_layout`),
without the dead ``query_down_heads`` tensors so that they stay small (~20 MB).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import torch

import prvql.named_weights as nw
from prvql.errors import CheckpointError, PRVQLError
from prvql.model.released_layout import TINY, random_state, released_shapes
from prvql.model.released_weights import load_released
from prvql.weights_file import read_weights_file

DRIVE_PAGE = """<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>
<div class="uc-main"><p class="uc-warning-caption">Google Drive can't scan this file for viruses.</p>
<p class="uc-warning-subcaption"><span class="uc-name-size"><a href="/open?id=ID1">prvql.pth</a> (1.1G)</span>
is too large for Google to scan for viruses. Would you still like to download this file?</p>
<form id="download-form" action="{base}/download" method="get">
<input type="submit" id="uc-download-link" class="goog-inline-block jfk-button" value="Download anyway"/>
<input type="hidden" name="id" value="ID1"><input type="hidden" name="export" value="download">
<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="u-42&amp;x"></form>
</div></body></html>"""
REFUSAL_PAGE = """<html><body><div class="uc-main"><p class="uc-error-caption">Sorry, you can't view or download this
file at this time.</p><p class="uc-error-subcaption">Too many users have viewed or downloaded this file
recently. Please try accessing the file again later.</p></div></body></html>"""


class Site:
    """A local HTTP server standing in for the authors' hosts.

    Attributes:
        files: path -> body served (``/download`` only with the Drive form's ``confirm`` and ``uuid``).
        pages: path -> HTML page served instead of a file.
        cut: path -> bytes sent before the connection is closed (once; ``cut_always``: every time).
        honour_range: answer ``Range`` requests with 206 (else the whole file, 200).
        log: (path with query, Range header or None) of every request.
        sent: file bytes sent.
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.pages: dict[str, str] = {}
        self.cut: dict[str, int] = {}
        self.cut_always = False
        self.honour_range = True
        self.log: list[tuple[str, str | None]] = []
        self.sent = 0
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep the test output clean
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                site.log.append((self.path, self.headers.get("Range")))
                url = urlsplit(self.path)
                if url.path in site.pages:
                    return self._send(200, site.pages[url.path].format(base=site.url).encode(), "text/html")
                query = parse_qs(url.query)
                if url.path == "/download" and (query.get("confirm") != ["t"] or query.get("uuid") != ["u-42&x"]):
                    return self._send(403, b"forbidden", "text/plain")
                if url.path not in site.files:
                    return self._send(404, b"not found", "text/plain")
                body, start = site.files[url.path], 0
                ask = self.headers.get("Range")
                if ask and site.honour_range:
                    start = int(ask.removeprefix("bytes=").rstrip("-"))
                    if start >= len(body):
                        return self._send(416, b"", "text/plain")
                cut = site.cut.get(url.path) if site.cut_always else site.cut.pop(url.path, None)
                extra = {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"} if start else {}
                self._send(206 if start else 200, body[start:], "application/octet-stream", extra, cut)

            def _send(self, code: int, body: bytes, kind: str, extra: dict | None = None, cut: int | None = None):
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (extra or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                shown = body if cut is None or kind == "text/html" else body[:cut]
                self.wfile.write(shown)
                if kind == "application/octet-stream":
                    site.sent += len(shown)
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def checkpoint_bytes(model: str, cab: str) -> bytes:
    """A tiny training checkpoint of the released layout, as ``torch.save`` writes it."""
    state = random_state(released_shapes(model, cab, **TINY))
    state = {k: v for k, v in state.items() if ".query_down_heads." not in k and not k.startswith("query_down")}
    buffer = io.BytesIO()
    torch.save({"epoch": 3, "state_dict": state, "best_prob": 0.5}, buffer)
    return buffer.getvalue()


def tar_bytes(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    """A tar archive of regular files ``members`` (name -> content) and symbolic ``links`` (name -> target)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def vqloc_file() -> bytes:
    return checkpoint_bytes("vqloc", "decoder")


def converted_tensors(tmp_path: Path, content: bytes) -> dict[str, torch.Tensor]:
    """What ``prvql convert`` makes of ``content``: the model's state dict."""
    src = tmp_path / "direct.pth"
    src.write_bytes(content)
    return load_released(src).model.state_dict()


def assert_cached(cache: Path, name: str, expected: dict[str, torch.Tensor], content: bytes) -> None:
    """The cache holds exactly the converted model ``name``, with every tensor of ``expected`` and the source's
    size and hash; the download is gone."""
    tensors, metadata = read_weights_file(cache / "weights" / f"{name}.safetensors")
    assert tensors.keys() == expected.keys()
    assert all(torch.equal(tensors[k], expected[k]) for k in expected)
    assert metadata["source_sha256"] == hashlib.sha256(content).hexdigest()
    assert metadata["source_bytes"] == str(len(content)) and metadata["backbone"] == "included"
    assert sorted(p.name for p in (cache / "weights").iterdir()) == [f"{name}.safetensors"]
    assert list((cache / "downloads").iterdir()) == []


def test_drive_confirmation_page_then_an_interrupted_transfer_resumes(site, cache, tmp_path, monkeypatch, prvql_file):
    site.pages["/uc"] = DRIVE_PAGE
    site.files["/download"] = prvql_file
    cut = len(prvql_file) // 3
    site.cut["/download"] = cut
    monkeypatch.setenv("PRVQL_WEIGHTS_URL_PRVQL", f"{site.url}/uc?export=download&id=ID1")
    fetched = nw.get_released("prvql", progress=False)
    assert fetched is not None and fetched.path == cache / "weights" / "prvql.safetensors"
    assert fetched.size == len(prvql_file) and fetched.sha256 == hashlib.sha256(prvql_file).hexdigest()
    assert "PRVQL, 3 stage(s)" in fetched.summary
    paths = [(urlsplit(p).path, r) for p, r in site.log]
    assert paths == [("/uc", None), ("/download", None), ("/download", f"bytes={cut}-")]
    assert site.sent == len(prvql_file)  # the second request sent only the rest
    assert_cached(cache, "prvql", converted_tensors(tmp_path, prvql_file), prvql_file)
    assert nw.get_released("prvql", progress=False) is None  # cached: nothing asked of the server
    assert len(site.log) == 3


@pytest.mark.parametrize("honour_range", [True, False])
def test_a_part_file_left_by_an_earlier_run_is_resumed(site, cache, tmp_path, monkeypatch, prvql_file, honour_range):
    site.files["/prvql.pth"] = prvql_file
    site.honour_range = honour_range
    monkeypatch.setenv("PRVQL_WEIGHTS_URL_PRVQL", f"{site.url}/prvql.pth")
    kept = len(prvql_file) // 2
    (cache / "downloads").mkdir(parents=True)
    (cache / "downloads" / "prvql.part").write_bytes(prvql_file[:kept])
    nw.get_released("prvql", progress=False)
    assert site.log == [("/prvql.pth", f"bytes={kept}-")]
    assert site.sent == (len(prvql_file) - kept if honour_range else len(prvql_file))  # else: all over again
    assert_cached(cache, "prvql", converted_tensors(tmp_path, prvql_file), prvql_file)


def test_vqloc_tar_archive_gives_its_checkpoint_member_and_never_follows_links(
    site, cache, tmp_path, monkeypatch, vqloc_file
):
    archive = tar_bytes({"vqloc/cpt_best_prob.pth.tar": vqloc_file, "vqloc/readme.txt": b"hi"}, {"evil.pth": "/x"})
    site.files["/static/v.tar"] = archive
    monkeypatch.setenv("PRVQL_WEIGHTS_URL_VQLOC", f"{site.url}/static/v.tar")
    fetched = nw.get_released("vqloc", progress=False)
    assert fetched is not None and "VQLOC, 1 stage(s)" in fetched.summary
    tensors, _ = read_weights_file(fetched.path)
    expected = converted_tensors(tmp_path, vqloc_file)
    assert tensors.keys() == expected.keys() and all(torch.equal(tensors[k], expected[k]) for k in expected)
    assert fetched.sha256 == hashlib.sha256(archive).hexdigest()
    assert list((cache / "downloads").iterdir()) == []  # neither the archive nor the member is left


@pytest.mark.parametrize(
    ("members", "links", "expected"),
    [
        ({"a/readme.txt": b"x"}, {"model.pth": "/etc/passwd"}, "found none"),
        ({"a.pth": b"1", "b.pth": b"2"}, {}, "found a.pth, b.pth"),
    ],
)
def test_tar_without_exactly_one_checkpoint_is_refused(site, cache, monkeypatch, members, links, expected):
    site.files["/v.tar"] = tar_bytes(members, links)
    monkeypatch.setenv("PRVQL_WEIGHTS_URL_VQLOC", f"{site.url}/v.tar")
    with pytest.raises(CheckpointError, match=expected):
        nw.get_released("vqloc", progress=False)
    assert not (cache / "weights" / "vqloc.safetensors").exists() and list((cache / "downloads").iterdir()) == []


@pytest.mark.parametrize("case", ["garbage", "truncated", "size", "sha256", "other model"])
def test_a_corrupt_or_wrong_file_is_refused_and_nothing_is_cached(
    site, cache, monkeypatch, prvql_file, vqloc_file, case
):
    served = {"garbage": b"<not a checkpoint>" * 500, "truncated": prvql_file[: len(prvql_file) // 2]}
    site.files["/p.pth"] = served.get(case, vqloc_file if case == "other model" else prvql_file)
    monkeypatch.setenv("PRVQL_WEIGHTS_URL_PRVQL", f"{site.url}/p.pth")
    published = {"size": len(prvql_file) + 1} if case == "size" else {}
    if case == "sha256":
        published["sha256"] = hashlib.sha256(b"the published file").hexdigest()
    monkeypatch.setitem(nw.RELEASES, "prvql", dataclasses.replace(nw.RELEASES["prvql"], **published))
    reason = {
        "garbage": "not a readable checkpoint",
        "truncated": "truncated or corrupt",
        "size": f"got {len(prvql_file)} bytes, the published file has {len(prvql_file) + 1}",
        "sha256": "differs from the published",
        "other model": "holds a VQLOC checkpoint, not PRVQL",
    }[case]
    with pytest.raises(CheckpointError, match=reason) as caught:
        nw.get_released("prvql", progress=False)
    assert "\n" not in str(caught.value)
    assert not (cache / "weights" / "prvql.safetensors").exists()
    assert list((cache / "downloads").iterdir()) == []  # the bad file is not kept for a resume


def test_a_transfer_still_interrupted_after_the_retries_keeps_its_part_for_the_next_run(
    site, cache, monkeypatch, prvql_file
):
    site.files["/p.pth"] = prvql_file
    site.cut["/p.pth"], site.cut_always = 1000, True  # every answer stops 1000 bytes in
    monkeypatch.setenv("PRVQL_WEIGHTS_URL_PRVQL", f"{site.url}/p.pth")
    monkeypatch.setattr(nw, "RETRIES", 2)
    with pytest.raises(CheckpointError, match=f"interrupted at 3000 of {len(prvql_file)} bytes.*run the command again"):
        nw.get_released("prvql", progress=False)
    assert [r for _, r in site.log] == [None, "bytes=1000-", "bytes=2000-"]
    assert (cache / "downloads" / "prvql.part").read_bytes() == prvql_file[:3000]
    assert not (cache / "weights").exists() or list((cache / "weights").iterdir()) == []


@pytest.mark.parametrize(
    ("name", "page", "expected"),
    [
        ("prvql", REFUSAL_PAGE, r"Google Drive refused the download \(Too many users have viewed or downloaded"),
        ("vqloc", DRIVE_PAGE, "sent a web page, not the checkpoint"),  # an HTML answer from a host that is not Drive
    ],
)
def test_web_pages_that_do_not_lead_to_the_file_are_refused(site, cache, monkeypatch, name, page, expected):
    site.pages["/uc"] = page
    monkeypatch.setenv(f"PRVQL_WEIGHTS_URL_{name.upper()}", f"{site.url}/uc?id=ID1")
    with pytest.raises(CheckpointError, match=expected):
        nw.get_released(name, progress=False)
    assert not (cache / "weights" / f"{name}.safetensors").exists()


def test_http_errors_and_unreachable_hosts_are_one_line(site, cache, monkeypatch):
    monkeypatch.setenv("PRVQL_WEIGHTS_URL_PRVQL", f"{site.url}/missing.pth")
    with pytest.raises(CheckpointError, match="the server answered HTTP 404"):
        nw.get_released("prvql", progress=False)
    site.stop()
    monkeypatch.setenv("PRVQL_WEIGHTS_URL_PRVQL", f"{site.url}/missing.pth")
    with pytest.raises(CheckpointError, match="cannot download"):
        nw.get_released("prvql", progress=False)
    monkeypatch.setenv("PRVQL_WEIGHTS_URL_PRVQL", "ftp://example.org/x.pth")
    with pytest.raises(CheckpointError, match="not an http"):
        nw.get_released("prvql", progress=False)


def test_resolve_weights_names_the_cached_file_or_says_how_to_get_it(cache, tmp_path):
    with pytest.raises(CheckpointError, match=r"not downloaded yet .*run `prvql weights get prvql`") as caught:
        nw.resolve_weights("prvql")
    assert caught.value.field == "weights"
    (cache / "weights").mkdir(parents=True)
    (cache / "weights" / "vqloc.safetensors").write_bytes(b"x")
    assert nw.resolve_weights(Path("vqloc")) == cache / "weights" / "vqloc.safetensors"
    for other in (None, "prvql.safetensors", tmp_path / "prvql", "PRVQL"):
        assert nw.resolve_weights(other) == other


def test_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("PRVQL_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert nw.cache_dir() == tmp_path / "xdg" / "prvql"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert nw.cache_dir() == tmp_path / "home" / ".cache" / "prvql"
    monkeypatch.setenv("PRVQL_CACHE", str(tmp_path / "elsewhere"))
    assert nw.cached_path("prvql") == tmp_path / "elsewhere" / "weights" / "prvql.safetensors"


def test_an_unusable_cache_folder_is_refused_before_any_download(site, tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("x")
    monkeypatch.setenv("PRVQL_CACHE", str(tmp_path / "a_file"))
    monkeypatch.setenv("PRVQL_WEIGHTS_URL_PRVQL", f"{site.url}/p.pth")
    with pytest.raises(PRVQLError, match=r"a_file is a file, not a folder \(the cache folder; PRVQL_CACHE moves it\)"):
        nw.get_released("prvql", progress=False)
    assert site.log == []
