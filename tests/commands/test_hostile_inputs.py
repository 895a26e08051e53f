"""Hostile and broken inputs through the real CLI entry point (``prvql.cli.main``), in-process.

Generated malformed annotation, predictions, config, image and video files (each a deterministic mutation of a
valid one) and hostile cases (uids that are paths, outputs that cannot be written, pickles, bombs).
Every case must: exit 2, print exactly one ``prvql: error:`` line, print no traceback, and leave every file under the
test's folder as it was (no output, no temporary file, no overwritten input): nothing is written before validation.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import pickle
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from prvql.cli import main

W, H = 96, 64  # original_width / original_height of every box
CLIP_FRAMES = 11  # video_start_frame 0 .. video_end_frame 60 at 30 -> 5 fps
DELETE = object()  # mutation value: remove the key
HUGE = {"@@HUGE400@@": "9" * 400, "@@HUGE5000@@": "9" * 5000}  # integer literals json.dumps cannot write
HUGE400, HUGE5000 = "@@HUGE400@@", "@@HUGE5000@@"


# ----------------------------------------------------------------------------------------------------------------------
# Valid documents and their mutations


def box(frame: int, x: float = 10, y: float = 8, w: float = 30, h: float = 20) -> dict:
    return {"frame_number": frame, "x": x, "y": y, "width": w, "height": h, "original_width": W, "original_height": H}


def query_set(query_frame: int, crop: int, track: range) -> dict:
    return {
        "is_valid": True,
        "query_frame": query_frame,
        "object_title": "mug",
        "visual_crop": box(crop),
        "response_track": [box(f) for f in track],
    }


def valid_annotations() -> dict:
    return {
        "version": "1.0.5",
        "videos": [
            {
                "video_uid": "vid1",
                "clips": [
                    {
                        "clip_uid": "clip1",
                        "video_start_frame": 0,
                        "video_end_frame": 60,
                        "clip_fps": 5.0,
                        "annotations": [
                            {
                                "annotation_uid": "ann1",
                                "query_sets": {"1": query_set(8, 6, range(3, 6)), "2": query_set(10, 9, range(1, 3))},
                            }
                        ],
                    }
                ],
            }
        ],
    }


def valid_predictions() -> dict:
    def track(frames: range) -> dict:
        return {"bboxes": [{"fno": f, "x1": 10.0, "y1": 8.0, "x2": 40.0, "y2": 28.0} for f in frames], "score": 1.0}

    sets = {"1": track(range(3, 6)), "2": track(range(1, 3))}
    preds = [{"annotation_uid": "ann1", "query_sets": sets}]
    return {
        "version": "1.0.5",
        "challenge": "ego4d_vq2d_challenge",
        "results": {"videos": [{"video_uid": "vid1", "clips": [{"clip_uid": "clip1", "predictions": preds}]}]},
    }


def mutate(doc: object, path: list, value: object) -> object:
    """A copy of ``doc`` with the element at ``path`` replaced by ``value`` (removed for DELETE)."""
    doc = copy.deepcopy(doc)
    if not path:
        return value
    node = doc
    for key in path[:-1]:
        node = node[key]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


def dump(doc: object) -> str:
    text = json.dumps(doc)
    for marker, digits in HUGE.items():
        text = text.replace(f'"{marker}"', digits)
    return text


def label(value: object) -> str:
    if value is DELETE:
        return "deleted"
    text = repr(value)
    return text if len(text) <= 24 else f"{text[:21]}..."


VS = ["videos", 0]
CLIP = [*VS, "clips", 0]
ANN = [*CLIP, "annotations", 0]
QS = [*ANN, "query_sets", "1"]
NAN, INF = math.nan, math.inf

NUMBER_BAD = ["12", None, True, [], {}, NAN, INF, -INF, 1e308, -1e308, HUGE400, HUGE5000, DELETE]
FRAME_BAD = ["3", None, False, 3.5, NAN, -1, CLIP_FRAMES, 10**12, HUGE400, HUGE5000, DELETE]
SIZE_BAD = [0, -1, 10**6, "96", 96.5, None, HUGE400, DELETE]
UID_BAD = ["../videos/vid1", "/etc/passwd", "a/b", "..", ".", "", "a\\b", "a\x00b", "x" * 300, 5, [], " pad"]

ANNOTATION_MUTATIONS: list[tuple[list, object]] = [
    *[(p, v) for p in ([*QS, "visual_crop", k] for k in ("x", "y", "width", "height")) for v in NUMBER_BAD],
    *[([*QS, "response_track", 1, "x"], v) for v in NUMBER_BAD],
    *[([*QS, "response_track", 0, "height"], v) for v in NUMBER_BAD],
    *[([*QS, "query_frame"], v) for v in FRAME_BAD],
    *[([*QS, "visual_crop", "frame_number"], v) for v in FRAME_BAD],
    *[([*QS, "response_track", 2, "frame_number"], v) for v in FRAME_BAD if v is not DELETE],
    *[([*QS, "visual_crop", "original_width"], v) for v in SIZE_BAD],
    *[([*QS, "response_track", 0, "original_height"], v) for v in SIZE_BAD],
    *[([*VS, "video_uid"], v) for v in [*UID_BAD, None, DELETE]],
    *[([*CLIP, "clip_uid"], v) for v in UID_BAD],
    *[([*ANN, "annotation_uid"], v) for v in UID_BAD],
    *[([*CLIP, "clip_fps"], v) for v in [0, -5, NAN, INF, "5", 1e308, True]],
    *[([*CLIP, "video_end_frame"], v) for v in [-1, "60", 1.5, HUGE400, HUGE5000]],
    *[([*CLIP, "video_start_frame"], v) for v in [61, -3, HUGE5000]],
    *[([], v) for v in [None, 5, "x", [], [{}]]],
    *[(["videos"], v) for v in [None, 5, "x", {}]],
    *[(["version"], v) for v in [DELETE, None, [], {}]],
    *[([*VS, "clips"], v) for v in [None, {}, DELETE]],
    *[(CLIP, v) for v in [None, "clip1", []]],
    *[([*CLIP, "annotations"], v) for v in [None, {}, DELETE]],
    *[(ANN, v) for v in [None, 5]],
    *[([*ANN, "query_sets"], v) for v in [None, [], DELETE]],
    *[(QS, v) for v in [None, "x", [], {}]],
    *[([*QS, "visual_crop"], v) for v in [None, [], DELETE, {}]],
    *[([*QS, "response_track"], v) for v in [None, [], {}, "x", [5], [box(3), box(3)], [box(3), box(5)]]],
    *[([*QS, "is_valid"], v) for v in ["yes", 1]],
    # boxes that cannot be right: outside the frame, or reaching far beyond it
    ([*QS, "visual_crop"], box(6, x=W + 5)),
    ([*QS, "visual_crop"], box(6, y=-50)),
    ([*QS, "visual_crop"], box(6, w=3 * W)),
    ([*QS, "response_track", 0], box(3, x=-2 * W)),
]


def _duplicate_clip(doc: dict) -> dict:
    doc = copy.deepcopy(doc)
    clip = copy.deepcopy(doc["videos"][0]["clips"][0])
    clip["annotations"][0]["annotation_uid"] = "ann2"
    doc["videos"][0]["clips"].append(clip)
    return doc


def _duplicate_annotation(doc: dict) -> dict:
    doc = copy.deepcopy(doc)
    doc["videos"][0]["clips"][0]["annotations"].append(copy.deepcopy(doc["videos"][0]["clips"][0]["annotations"][0]))
    return doc


def _query_set_named(name: str) -> Callable[[dict], dict]:
    def edit(doc: dict) -> dict:
        doc = copy.deepcopy(doc)
        sets = doc["videos"][0]["clips"][0]["annotations"][0]["query_sets"]
        sets[name] = sets.pop("2")
        return doc

    return edit


ANNOTATION_EDITS = {
    "duplicate clip_uid": _duplicate_clip,
    "duplicate annotation_uid": _duplicate_annotation,
    "query set named ../2": _query_set_named("../2"),
    "query set named a/b": _query_set_named("a/b"),
    "query set named ..": _query_set_named(".."),
    "query key too long": _query_set_named("q" * 198),
}

PQ = ["results", "videos", 0, "clips", 0, "predictions", 0, "query_sets", "1"]
PREDICTION_MUTATIONS: list[tuple[list, object]] = [
    *[(["version"], v) for v in ["9.9", DELETE, HUGE5000]],
    *[(["challenge"], v) for v in ["other", DELETE, None]],
    *[(["results"], v) for v in [DELETE, [], None]],
    *[(["results", "videos"], v) for v in [{}, [], None]],
    (["results", "videos", 0, "video_uid"], "other"),
    *[(["results", "videos", 0, "clips", 0, "clip_uid"], v) for v in ["other", DELETE]],
    *[(["results", "videos", 0, "clips", 0, "predictions"], v) for v in [None, []]],
    (["results", "videos", 0, "clips", 0, "predictions", 0, "annotation_uid"], "other"),
    *[(PQ[:-1], v) for v in [[], None]],
    *[(PQ, v) for v in [None, [], "x", DELETE]],
    *[([*PQ, "bboxes"], v) for v in [None, {}, "x", [5]]],
    *[([*PQ, "score"], v) for v in [NAN, INF, "1", None, DELETE, HUGE5000]],
    *[([*PQ, "bboxes", 0, "fno"], v) for v in [-1, "3", 2.5, None, HUGE400, 10**12, True]],
    *[([*PQ, "bboxes", 1, "fno"], v) for v in [3, 9]],
    *[([*PQ, "bboxes", 0, "x1"], v) for v in [NAN, INF, 1e308, "1", None, HUGE5000, DELETE]],
    *[([*PQ, "bboxes", 2, "y2"], v) for v in [-1e308, 0.0]],
    ([*PQ[:-1], "9"], {"bboxes": [], "score": 0.0}),
]

CONFIG_TEXTS = {
    "unclosed flow": "model: {dim: 8\n",
    "bad indent": "model:\n  dim: 3\n   x: [1\n",
    "tab": "model:\n\tdim: 3\n",
    "undefined alias": "a: *x\n",
    "python tag": "model: !!python/object/apply:os.system ['touch pwned']\n",
    "top-level list": "[1, 2]\n",
    "top-level number": "42\n",
    "unknown key": "foo: 1\n",
    "unknown nested key": "model: {nope: 1}\n",
    "section is a number": "model: 5\n",
    "int is text": "model: {dim: abc}\n",
    "int is float": "model: {dim: 1.5}\n",
    "int is bool": "model: {dim: true}\n",
    "400 digits": "model: {dim: " + "9" * 400 + "}\n",
    "5000 digits": "model: {dim: " + "9" * 5000 + "}\n",
    "inf float": "train: {lr: .inf}\n",
    "nan float": "train: {lr: .nan}\n",
    "overflowing float": "train: {lr: 1e999}\n",
    "bool is text": "model: {backbone: {frozen: maybe}}\n",
    "tuple too short": "data: {color_jitter: [1, 2]}\n",
    "tuple is text": "model: {head: {anchor_sizes: abc}}\n",
    "deep nesting": "[" * 5000,
    "binary": "\x00\x01\x02\xff",
    "list in place of section": "train: [1, 2]\n",
}
CONFIG_BYTES = {"not utf-8": b"model: {dim: \xff\xfe}\n", "utf-16": "model: {dim: 8}\n".encode("utf-16")}
OVERRIDES = ["model.dim=abc", "nope.x=1", "model=5", "train.lr=nan", "train.lr=1e999", "model.dim=" + "9" * 400]


# ----------------------------------------------------------------------------------------------------------------------
# Media files


def png_bytes(width: int, height: int, body: bytes = b"\0" * 16) -> bytes:
    """A PNG whose header claims ``width x height`` (RGB, 8 bit) with a tiny, short body."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(body)) + chunk(b"IEND", b"")


def image_bytes(fmt: str, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def broken_images() -> dict[str, bytes]:
    png, jpeg = image_bytes("PNG"), image_bytes("JPEG")
    cases = {f"random bytes {seed}": np.random.default_rng(seed).bytes(500) for seed in range(4)}
    cases.update({f"png cut at {f:.0%}": png[: int(len(png) * f)] for f in (0.05, 0.3, 0.6, 0.9)})
    cases.update({f"jpeg cut at {f:.0%}": jpeg[: int(len(jpeg) * f)] for f in (0.01, 0.05)})
    bad_crc = bytearray(png)
    bad_crc[29] ^= 0xFF  # inside IHDR's CRC
    cases.update(
        {
            "empty": b"",
            "text": b"this is not an image\n",
            "png signature only": png[:8],
            "png bad header crc": bytes(bad_crc),
            "bomb 100000x100000": png_bytes(100_000, 100_000),
            "bomb 9000x9000": png_bytes(9000, 9000),
            "gif garbage": b"GIF89a" + b"\xff" * 40,
            "bmp garbage": b"BM" + b"\x00" * 60,
        }
    )
    return cases


def write_video_file(path: Path, frames: int = 12) -> None:
    from prvql.data.video import write_video

    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (frames, 8, 12, 3), dtype=np.uint8)
    write_video(path, small.repeat(8, axis=1).repeat(8, axis=2), fps=5.0)


def broken_videos(good: bytes) -> dict[str, bytes]:
    cases = {f"random bytes {seed}": np.random.default_rng(seed).bytes(2000) for seed in range(3)}
    cases.update({f"mp4 cut at {f:.0%}": good[: int(len(good) * f)] for f in (0.02, 0.1, 0.4, 0.8, 0.97)})
    cases.update({"empty": b"", "text": b"not a video\n", "ftyp only": good[:32]})
    return cases


# ----------------------------------------------------------------------------------------------------------------------
# The runner


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under ``root`` -> (size, mtime_ns, mode): a new, changed or removed file shows."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            out[str(path.relative_to(root))] = (st.st_size if not path.is_dir() else 0, st.st_mtime_ns, st.st_mode)
    return out


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch) -> Path:
    """Inputs in ``tmp_path/in``; commands run from ``tmp_path/cwd``; outputs are asked for in ``tmp_path/out``."""
    (tmp_path / "in").mkdir()
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return tmp_path


def refused(root: Path, argv: list[str], capsys, must_name: str | None = None) -> str:
    """Run ``prvql argv``; assert exit 2, one ``prvql: error:`` line, no traceback, nothing changed under ``root``."""
    before = snapshot(root)
    capsys.readouterr()
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    err = captured.err
    lines = [line for line in err.splitlines() if "prvql: error:" in line]
    assert status == 2, f"exit {status}; stderr: {err[-2000:]}"
    assert len(lines) == 1 and lines[0].startswith("prvql: error: "), err[-2000:]
    assert "Traceback" not in err + captured.out
    assert snapshot(root) == before, "files changed under the test folder"
    if must_name is not None:
        assert must_name in lines[0], lines[0]
    return lines[0]


VALID = object()  # write_inputs: the valid document


def write_inputs(root: Path, annotations: object = VALID, predictions: object = VALID) -> dict[str, Path]:
    paths = {}
    for name, doc, default in (
        ("ann.json", annotations, valid_annotations),
        ("pred.json", predictions, valid_predictions),
    ):
        path = root / "in" / name
        path.write_text(dump(default() if doc is VALID else doc))
        paths[name] = path
    return paths


# ----------------------------------------------------------------------------------------------------------------------
# Generated files


def test_the_valid_documents_are_accepted(workspace: Path, capsys) -> None:
    """The mutations start from documents that evaluate cleanly (so each refusal is the mutation's doing)."""
    paths = write_inputs(workspace)
    assert main(["evaluate", "--annotations", str(paths["ann.json"]), "--predictions", str(paths["pred.json"])]) == 0


@pytest.mark.parametrize(
    ("path", "value"),
    ANNOTATION_MUTATIONS,
    ids=[f"{'.'.join(map(str, p[-3:])) or 'root'}={label(v)}" for p, v in ANNOTATION_MUTATIONS],
)
def test_malformed_annotations_are_refused(workspace: Path, capsys, path: list, value: object) -> None:
    paths = write_inputs(workspace, annotations=mutate(valid_annotations(), path, value))
    argv = ["evaluate", "--annotations", paths["ann.json"], "--predictions", paths["pred.json"]]
    line = refused(workspace, argv, capsys)
    assert "ann.json" in line


@pytest.mark.parametrize("edit", list(ANNOTATION_EDITS.values()), ids=list(ANNOTATION_EDITS))
def test_duplicate_and_path_like_keys_are_refused(workspace: Path, capsys, edit) -> None:
    paths = write_inputs(workspace, annotations=edit(valid_annotations()))
    argv = ["evaluate", "--annotations", paths["ann.json"], "--predictions", paths["pred.json"]]
    assert "ann.json" in refused(workspace, argv, capsys)


@pytest.mark.parametrize(
    ("path", "value"),
    PREDICTION_MUTATIONS,
    ids=[f"{'.'.join(map(str, p[-3:])) or 'root'}={label(v)}" for p, v in PREDICTION_MUTATIONS],
)
def test_malformed_predictions_are_refused(workspace: Path, capsys, path: list, value: object) -> None:
    paths = write_inputs(workspace, predictions=mutate(valid_predictions(), path, value))
    argv = ["evaluate", "--annotations", paths["ann.json"], "--predictions", paths["pred.json"]]
    line = refused(workspace, argv, capsys)
    assert "pred.json" in line


JSON_TEXTS = {
    "empty": "",
    "truncated": dump(valid_annotations())[:100],
    "nested 100000 deep": "[" * 100_000 + "]" * 100_000,
    "objects nested 100000 deep": '{"a":' * 100_000 + "1" + "}" * 100_000,
    "NaN document": "NaN",
    "trailing garbage": dump(valid_annotations()) + " x",
    "single quotes": "{'version': '1'}",
}


@pytest.mark.parametrize("which", ["ann.json", "pred.json"])
@pytest.mark.parametrize("text", list(JSON_TEXTS.values()), ids=list(JSON_TEXTS))
def test_unparsable_json_is_refused(workspace: Path, capsys, which: str, text: str) -> None:
    paths = write_inputs(workspace)
    paths[which].write_text(text)
    argv = ["evaluate", "--annotations", paths["ann.json"], "--predictions", paths["pred.json"]]
    assert which in refused(workspace, argv, capsys)


@pytest.mark.parametrize("which", ["ann.json", "pred.json"])
def test_json_that_is_not_text_or_is_a_folder_is_refused(workspace: Path, capsys, which: str) -> None:
    paths = write_inputs(workspace)
    argv = ["evaluate", "--annotations", paths["ann.json"], "--predictions", paths["pred.json"]]
    paths[which].write_bytes(b"\xff\xfe\x00garbage")
    refused(workspace, argv, capsys, must_name=which)
    paths[which].unlink()
    paths[which].mkdir()
    assert "is a folder" in refused(workspace, argv, capsys, must_name=which)


@pytest.mark.parametrize("text", list(CONFIG_TEXTS.values()), ids=list(CONFIG_TEXTS))
def test_malformed_configs_are_refused(workspace: Path, capsys, text: str) -> None:
    config = workspace / "in" / "bad.yaml"
    config.write_text(text)
    argv = ["train", "--config", config, "--output", workspace / "out" / "run"]
    refused(workspace, argv, capsys, must_name="bad.yaml")
    assert not (workspace / "cwd" / "pwned").exists()


@pytest.mark.parametrize("data", list(CONFIG_BYTES.values()), ids=list(CONFIG_BYTES))
def test_config_bytes_that_are_not_utf8_are_refused(workspace: Path, capsys, data: bytes) -> None:
    config = workspace / "in" / "bad.yaml"
    config.write_bytes(data)
    argv = ["train", "--config", config, "--output", workspace / "out" / "run"]
    refused(workspace, argv, capsys, must_name="bad.yaml")


@pytest.mark.parametrize("override", OVERRIDES, ids=[o[:24] for o in OVERRIDES])
def test_bad_overrides_are_refused_wherever_they_stand(workspace: Path, capsys, override: str) -> None:
    out = workspace / "out" / "run"
    key = override.split("=")[0].split(".")[0]
    refused(workspace, ["train", "--config", "tiny", override, "--output", out], capsys, must_name=key)
    refused(workspace, ["train", "--config", "tiny", "--output", out, override], capsys, must_name=key)


@pytest.fixture
def media(workspace: Path) -> dict[str, Path]:
    video, query = workspace / "in" / "clip.mp4", workspace / "in" / "query.png"
    write_video_file(video)
    query.write_bytes(image_bytes("PNG"))
    return {"video": video, "query": query}


@pytest.mark.parametrize("name", list(broken_images()))
def test_broken_query_images_are_refused(workspace: Path, media: dict, capsys, name: str) -> None:
    bad = workspace / "in" / "bad.png"
    bad.write_bytes(broken_images()[name])
    argv = ["locate", "--video", media["video"], "--query", bad, "--output", workspace / "out" / "loc"]
    refused(workspace, argv, capsys, must_name="bad.png")


@pytest.mark.parametrize("name", list(broken_videos(b"\0" * 4000)))
def test_broken_videos_are_refused(workspace: Path, media: dict, capsys, name: str) -> None:
    bad = workspace / "in" / "bad.mp4"
    bad.write_bytes(broken_videos(media["video"].read_bytes())[name])
    argv = ["locate", "--video", bad, "--query", media["query"], "--output", workspace / "out" / "loc"]
    refused(workspace, argv, capsys, must_name="bad.mp4")


# ----------------------------------------------------------------------------------------------------------------------
# Hostile cases found by a later pass


PATH_UIDS = ["../videos/vid1", "../../escape", "/tmp/abs", "sub/clip"]


@pytest.mark.parametrize("uid", PATH_UIDS)
def test_uids_that_are_paths_never_reach_the_file_system(workspace: Path, capsys, uid: str) -> None:
    """A clip uid of ../videos/<video_uid> used to make extract-clips overwrite the source video with its clip."""
    videos, clips = workspace / "in" / "videos", workspace / "in" / "clips"
    videos.mkdir()
    clips.mkdir()
    write_video_file(videos / "vid1.mp4", frames=61)
    write_video_file(clips / "clip1.mp4")
    paths = write_inputs(workspace, annotations=mutate(valid_annotations(), [*CLIP, "clip_uid"], uid))
    out = workspace / "out"
    for argv in (
        ["data", "extract-clips", "--annotations", paths["ann.json"], "--videos", videos, "--output", clips],
        ["data", "extract-clips", "--annotations", paths["ann.json"], "--videos", videos, "--output", out / "c"],
        ["data", "cache-frames", "--annotations", paths["ann.json"], "--clips", clips, "--output", out / "frames"],
        ["predict", "--annotations", paths["ann.json"], "--clips", clips, "--output", out / "p.json"],
    ):
        assert "clip_uid" in refused(workspace, argv, capsys, must_name="ann.json")
    if uid.startswith("/"):
        assert not any(Path(uid + suffix).exists() for suffix in (".mp4", ""))


def test_predict_refuses_duplicate_uids_before_any_work(workspace: Path, capsys) -> None:
    clips = workspace / "in" / "clips"
    clips.mkdir()
    write_video_file(clips / "clip1.mp4")
    for edit in (_duplicate_clip, _duplicate_annotation):
        paths = write_inputs(workspace, annotations=edit(valid_annotations()))
        argv = [
            "predict",
            "--annotations",
            paths["ann.json"],
            "--clips",
            clips,
            "--output",
            workspace / "out" / "p.json",
        ]
        assert "duplicate" in refused(workspace, argv, capsys)


def _outputs(workspace: Path, media: dict) -> dict[str, tuple[list, str]]:
    """command -> (argv without the output option, the output option): one writing command each."""
    paths = write_inputs(workspace)
    clips = workspace / "in" / "clips"
    clips.mkdir(exist_ok=True)
    return {
        "predict": (["predict", "--annotations", paths["ann.json"], "--clips", clips], "--output"),
        "visualize": (
            ["visualize", "--annotations", paths["ann.json"], "--predictions", paths["pred.json"], "--clips", clips]
            + ["--query", "ann1_1"],
            "--output",
        ),
        "bench": (["bench", "--config", "tiny", "--frames", "4"], "--output"),
        "locate": (["locate", "--video", media["video"], "--query", media["query"]], "--output"),
        "demo": (["demo", "--no-video"], "--output"),
        "train": (["train", "--config", "tiny"], "--output"),
        "synth": (["synth", "--clips", "1", "--no-progress"], "--output"),
        "extract-clips": (["data", "extract-clips", "--annotations", paths["ann.json"], "--videos", clips], "--output"),
        "cache-frames": (["data", "cache-frames", "--annotations", paths["ann.json"], "--clips", clips], "--output"),
    }


FILE_OUTPUTS = {"predict", "visualize", "bench"}  # the others write a folder


@pytest.mark.parametrize(
    "command", ["predict", "visualize", "bench", "locate", "demo", "train", "synth", "extract-clips", "cache-frames"]
)
def test_outputs_that_cannot_be_written_are_refused_before_the_work(
    workspace: Path, media: dict, capsys, command: str
) -> None:
    argv, option = _outputs(workspace, media)[command]
    a_file = workspace / "in" / "a_file"
    a_file.write_text("x")
    a_folder = workspace / "in" / "a_folder"
    a_folder.mkdir()
    wrong_kind = a_folder if command in FILE_OUTPUTS else a_file
    expected = "is a folder" if command in FILE_OUTPUTS else "is a file"
    assert expected in refused(workspace, [*argv, option, wrong_kind], capsys, must_name=option)
    under_a_file = a_file / "sub" / ("out.json" if command in FILE_OUTPUTS else "out")
    assert "is a file, not a folder" in refused(workspace, [*argv, option, under_a_file], capsys, must_name=option)
    assert "NUL" in refused(workspace, [*argv, option, workspace / "out" / "a\x00b"], capsys, must_name=option)
    assert "255 bytes" in refused(workspace, [*argv, option, workspace / "out" / ("n" * 300)], capsys)
    if os.geteuid() != 0:  # root writes anywhere
        read_only = workspace / "in" / "read_only"
        read_only.mkdir()
        read_only.chmod(0o555)
        try:
            assert "permission denied" in refused(workspace, [*argv, option, read_only / "out"], capsys)
        finally:
            read_only.chmod(0o755)


@pytest.mark.parametrize("command", ["synth", "extract-clips", "cache-frames"])
def test_the_old_out_spelling_still_works_with_one_warning_line(
    workspace: Path, media: dict, capsys, command: str
) -> None:
    """``--out`` was these commands' output option before every command took ``--output``."""
    argv, _ = _outputs(workspace, media)[command]
    a_file = workspace / "in" / "a_file"
    a_file.write_text("x")
    line = refused(workspace, [*argv, "--out", a_file], capsys, must_name="--output")
    assert "is a file" in line and "a_file" in line
    main([str(a) for a in [*argv, "--out", a_file]])
    warnings = [w for w in capsys.readouterr().err.splitlines() if "warning" in w]
    assert warnings == ["prvql: warning: --out is deprecated, use --output"]


def test_predict_refuses_bad_inference_settings_before_creating_its_cache(workspace: Path, capsys) -> None:
    """`--set inference.windows_per_batch=0` used to be refused after OUTPUT.cache/meta.json was written."""
    clips = workspace / "in" / "clips"
    clips.mkdir()
    write_video_file(clips / "clip1.mp4")
    paths = write_inputs(workspace)
    argv = ["predict", "--annotations", paths["ann.json"], "--clips", clips, "--output", workspace / "out" / "p.json"]
    line = refused(workspace, [*argv, "--set", "inference.windows_per_batch=0"], capsys)
    assert "windows_per_batch (0) must be >= 1" in line


def test_predict_cache_that_is_a_file_is_refused(workspace: Path, capsys) -> None:
    paths = write_inputs(workspace)
    clips = workspace / "in" / "clips"
    clips.mkdir()
    cache = workspace / "in" / "cache"
    cache.write_text("x")
    argv = ["predict", "--annotations", paths["ann.json"], "--clips", clips, "--output", workspace / "out" / "p.json"]
    refused(workspace, [*argv, "--cache", cache], capsys, must_name="--cache")


def test_inputs_that_are_folders_say_so(workspace: Path, media: dict, capsys) -> None:
    folder = workspace / "in" / "folder"
    folder.mkdir()
    paths = write_inputs(workspace)
    out = workspace / "out" / "x"
    cases = [
        ["evaluate", "--annotations", folder, "--predictions", paths["pred.json"]],
        ["evaluate", "--annotations", paths["ann.json"], "--predictions", folder],
        ["locate", "--video", folder, "--query", media["query"], "--output", out],
        ["locate", "--video", media["video"], "--query", folder, "--output", out],
        ["locate", "--video", media["video"], "--query", media["query"], "--weights", folder, "--output", out],
        ["train", "--config", folder, "--output", out],
    ]
    for argv in cases:
        assert "is a folder" in refused(workspace, argv, capsys, must_name=str(folder))
    argv = ["predict", "--annotations", paths["ann.json"], "--clips", paths["pred.json"], "--output", out]
    assert "is a file" in refused(workspace, argv, capsys, must_name="pred.json")


class Payload:
    """A pickle that would create a folder if it ever ran."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return os.mkdir, (str(self.target),)


def test_pickled_or_random_checkpoints_are_refused_in_one_line(workspace: Path, media: dict, capsys) -> None:
    run = workspace / "in" / "run"
    run.mkdir()
    pwned = workspace / "pwned"
    checkpoint = run / "checkpoint.pt"
    argv = ["train", "--config", "tiny", "--output", run, "--resume"]
    for content in (
        pickle.dumps({"model": Payload(pwned)}),
        np.random.default_rng(0).bytes(3000),
        b"PK\x03\x04" + b"\0" * 100,
        b"",
    ):
        checkpoint.write_bytes(content)
        refused(workspace, argv, capsys, must_name="checkpoint.pt")
    evil = workspace / "in" / "evil.pth"
    evil.write_bytes(pickle.dumps(Payload(pwned)))
    argv = ["locate", "--video", media["video"], "--query", media["query"], "--weights", evil]
    refused(workspace, [*argv, "--output", workspace / "out" / "x"], capsys, must_name="evil.pth")
    assert not pwned.exists()


def test_train_resume_in_an_empty_or_missing_folder_says_what_is_missing(workspace: Path, capsys) -> None:
    empty = workspace / "in" / "empty"
    empty.mkdir()
    for folder in (empty, workspace / "out" / "missing"):
        line = refused(workspace, ["train", "--output", folder, "--resume"], capsys)
        assert "holds no checkpoint.pt" in line


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--frames", "100000"],
        ["demo", "--frames", "1"],
        ["demo", "--seed", str(2**40)],
        ["bench", "--frames", str(10**9)],
        ["bench", "--height", str(10**6)],
        ["bench", "--queries-per-clip", str(10**7)],
        ["bench", "--config", "tiny", "--set", "model.num_frames=-3"],
        ["bench", "--config", "tiny", "model.dim=" + str(10**9)],
        ["synth", "--seed", "-1", "--clips", "1"],
        ["synth", "--frames", str(10**6), "--clips", "1"],
        ["synth", "--width", str(10**6), "--clips", "1"],
        ["synth", "--width", "2", "--height", "2", "--clips", "1"],  # below the smallest frame objects fit in
        ["synth", "--clips", str(10**9)],
        ["data", "cache-frames", "--annotations", "a.json", "--clips", "c", "--window", str(10**9)],
        ["data", "extract-clips", "--annotations", "a.json", "--videos", "v", "--workers", str(10**6)],
    ],
    ids=lambda argv: " ".join(argv[:3]),
)
def test_sizes_a_user_can_pass_are_bounded(workspace: Path, capsys, argv: list[str]) -> None:
    refused(workspace, [*argv, "--output", workspace / "out" / "x"], capsys)


@pytest.mark.parametrize(
    "argv",
    [
        ["train"],
        ["train", "--output"],
        ["bogus"],
        ["evaluate", "--annotations", "a", "--predictions", "p", "stray"],
        ["demo", "model.dim=8"],
        ["bench", "--frames", "many"],
        ["data", "extract-clips", "--annotations", "a"],
    ],
    ids=" ".join,
)
def test_usage_errors_are_one_line_too(workspace: Path, capsys, argv: list[str]) -> None:
    before = snapshot(workspace)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("prvql: error: ")
    assert "--help" in err and snapshot(workspace) == before


def test_key_value_overrides_are_read_after_options(workspace: Path, capsys) -> None:
    """Used to be "unrecognized arguments"; now the override is read and judged like any other."""
    line = refused(workspace, ["bench", "--config", "tiny", "--frames", "0", "model.dim=8"], capsys)
    assert "--frames" in line
    line = refused(workspace, ["train", "--config", "tiny", "--output", workspace / "out", "train.nope=1"], capsys)
    assert "train.nope" in line


def test_model_settings_that_do_not_fit_the_weights_are_named(workspace: Path, media: dict, capsys) -> None:
    """`--set model.dim=8` used to be reported as a weights file that does not fit; now the setting is named."""
    argv = ["locate", "--video", media["video"], "--query", media["query"], "--output", workspace / "out" / "x"]
    line = refused(workspace, [*argv, "--set", "model.dim=8"], capsys)
    assert "model.dim=8 (trained: 64)" in line
    line = refused(workspace, [*argv, "model.num_frames=0"], capsys)
    assert "model.num_frames: must be in [1," in line
