"""The video memory: tracks from a memory equal tracks from the video; refused and corrupt memories; resume after a
kill; a reader while a writer appends; following a growing video."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from prvql.config import Config, load_config
from prvql.data.transforms import prepare_frames
from prvql.data.video import VideoReader, write_video
from prvql.infer.locate import Query, locate_video
from prvql.infer.memory import (
    MemoryFileError,
    VideoMemory,
    index_video,
    locate_memory,
    model_identity,
    model_inputs,
    open_memory,
    partial_path,
    thumbnails,
)

CPU = torch.device("cpu")


def frames_of(count: int, seed: int = 0) -> np.ndarray:
    """``count`` frames 64x96: smooth noise with a bright square moving right."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (count, 8, 12, 3), dtype=np.uint8).repeat(8, 1).repeat(8, 2)
    for i, frame in enumerate(frames):
        frame[20:40, 10 + i : 30 + i] = 255
    return frames


@pytest.fixture
def video(tmp_path: Path) -> Path:
    """40 frames at 10 fps (20 sampled at the model's 5 fps)."""
    path = tmp_path / "walk.mp4"
    write_video(path, frames_of(40), fps=10.0)
    return path


@pytest.fixture
def fused(tiny_model: torch.nn.Module) -> torch.nn.Module:
    return tiny_model.fuse_for_inference()


def assert_same_tracks(a: object, b: object) -> None:
    """Two LocatedVideo: the same searched frames, track frames, scores and boxes (to 1e-4 px)."""
    ra, rb = a.result, b.result
    assert len(ra) == len(rb) > 0
    assert a.info.sources == b.info.sources
    assert ra.track.extent == rb.track.extent
    np.testing.assert_allclose(rb.scores, ra.scores, atol=1e-6, rtol=0)
    np.testing.assert_allclose(rb.boxes, ra.boxes, atol=1e-4, rtol=0)
    np.testing.assert_allclose(rb.track.boxes, ra.track.boxes, atol=1e-4, rtol=0)


def both(cfg: Config, model: torch.nn.Module, video: Path, memory: Path, query: Query, tmp_path: Path) -> tuple:
    from_video = locate_video(cfg, model, CPU, video, query, tmp_path / "v", name="walk.mp4", render_video=False)
    with VideoMemory.open(memory) as m:
        from_memory = locate_memory(cfg, model, CPU, m, query, tmp_path / "m", name="walk.mp4", render_video=False)
    return from_video, from_memory


@pytest.mark.parametrize("verification", [False, True])
def test_memory_gives_the_video_track_for_box_and_crop_queries(
    tiny_cfg: Config, fused: torch.nn.Module, video: Path, tmp_path: Path, verification: bool
) -> None:
    from PIL import Image

    tiny_cfg.inference.verification.enabled = verification
    memory = index_video(tiny_cfg, fused, CPU, video, tmp_path / "walk.h5").path
    with VideoMemory.open(memory) as m:
        assert len(m) == 20 and m.complete and m.sources == tuple(range(0, 40, 2))
    box = Query(frame=33, search="before", box=(50.0, 20.0, 70.0, 40.0))
    assert_same_tracks(*both(tiny_cfg, fused, video, memory, box, tmp_path / "box"))
    crop = tmp_path / "crop.png"
    Image.fromarray(frames_of(40)[30, 16:48, 32:72]).save(crop)
    image = Query(frame=0, search="anywhere", crop=crop)
    assert_same_tracks(*both(tiny_cfg, fused, video, memory, image, tmp_path / "crop"))


@pytest.mark.slow
def test_memory_gives_the_video_track_with_a_paper_size_model(video: Path, tmp_path: Path) -> None:
    """The paper's architecture (ViT-B/14 backbone, 256 channels, three stages), random weights; a 112 px input and
    4-frame windows instead of 448 px and 30 frames, so that it takes seconds on a CPU (same code path)."""
    from prvql.model import build_prvql

    cfg = load_config("prvql_vitb14", ["model.backbone.weights=null", "model.input_size=112", "model.num_frames=4"])
    torch.manual_seed(0)
    model = build_prvql(cfg.model).eval().fuse_for_inference()
    short = tmp_path / "short.mp4"
    write_video(short, frames_of(12), fps=10.0)
    memory = index_video(cfg, model, CPU, short, tmp_path / "short.h5").path
    query = Query(frame=11, search="before", box=(40.0, 16.0, 64.0, 40.0))
    assert_same_tracks(*both(cfg, model, short, memory, query, tmp_path))


def test_thumbnails_rebuild_the_model_inputs_exactly(tiny_cfg: Config) -> None:
    frames = frames_of(3)
    size, pad = tiny_cfg.model.input_size, tiny_cfg.data.pad_value
    thumbs = thumbnails(frames, size)
    assert thumbs.dtype == np.uint8 and max(thumbs.shape[1:3]) == size
    assert torch.equal(model_inputs(thumbs, size, pad), prepare_frames(torch.from_numpy(frames), size, pad))


@pytest.mark.parametrize("storage", ["float16", "int8"])
def test_compact_storage_stays_close_to_the_features(
    tiny_cfg: Config, fused: torch.nn.Module, video: Path, tmp_path: Path, storage: str
) -> None:
    exact = index_video(tiny_cfg, fused, CPU, video, tmp_path / "exact.h5").path
    small = index_video(tiny_cfg, fused, CPU, video, tmp_path / "small.h5", storage=storage).path
    with VideoMemory.open(exact) as a, VideoMemory.open(small) as b:
        fa, fb = a.features(0, len(a)), b.features(0, len(b))
        assert b.storage == storage and not torch.equal(fa, fb)
        scale = fa.abs().amax(dim=(2, 3), keepdim=True)  # int8: one step is 1/127 of a channel's largest value
        assert ((fa - fb).abs() <= scale / 127 * 0.51 + 1e-6).all()
    assert small.stat().st_size < exact.stat().st_size


def test_another_model_or_video_is_refused(
    tiny_cfg: Config, fused: torch.nn.Module, video: Path, tmp_path: Path
) -> None:
    memory = index_video(tiny_cfg, fused, CPU, video, tmp_path / "walk.h5").path
    query = Query(frame=0, search="anywhere", box=(50.0, 20.0, 70.0, 40.0))
    changed = fused
    with torch.no_grad():
        next(changed.parameters()).add_(1e-3)  # one weight moved: another model
    with VideoMemory.open(memory) as m, pytest.raises(MemoryFileError, match="another model"):
        locate_memory(tiny_cfg, changed, CPU, m, query, tmp_path / "o", name="walk.mp4")
    other_video = tmp_path / "other.mp4"
    write_video(other_video, frames_of(40, seed=1), fps=10.0)
    with VideoMemory.open(memory) as m, pytest.raises(MemoryFileError, match="not the video"):
        m.check_video(other_video)


def test_a_video_rewritten_in_place_is_refused(
    tiny_cfg: Config, fused: torch.nn.Module, video: Path, tmp_path: Path
) -> None:
    memory = index_video(tiny_cfg, fused, CPU, video, tmp_path / "walk.h5").path
    with VideoMemory.open(memory) as m:
        m.check_video(video)  # hashed once and remembered
        write_video(video, frames_of(40, seed=2), fps=10.0)  # same path, size and rate; other pixels
        with pytest.raises(MemoryFileError, match="not the video"):
            m.check_video(video)


def test_model_identity_is_remembered_until_a_weight_changes(tiny_cfg: Config, fused: torch.nn.Module) -> None:
    first = model_identity(tiny_cfg, fused)
    assert model_identity(tiny_cfg, copy.deepcopy(fused)) == first  # a fresh object is hashed: the same digest
    other = copy.deepcopy(fused)
    with torch.no_grad():
        next(other.parameters()).mul_(2.0)
    fused.load_state_dict(other.state_dict())  # copied in place: storages unchanged, versions moved
    assert model_identity(tiny_cfg, fused) == model_identity(tiny_cfg, copy.deepcopy(other)) != first


def test_corrupt_and_truncated_memories_are_refused(
    tiny_cfg: Config, fused: torch.nn.Module, video: Path, tmp_path: Path
) -> None:
    memory = index_video(tiny_cfg, fused, CPU, video, tmp_path / "walk.h5").path
    data = memory.read_bytes()
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(MemoryFileError, match="truncated or corrupt"):
        VideoMemory.open(truncated)
    with VideoMemory.open(memory) as m:
        feats = m._features
        offset = feats.id.get_chunk_info(len(m) // 2).byte_offset  # a frame's features in the file
    corrupt = tmp_path / "corrupt.h5"
    flipped = bytearray(data)
    flipped[offset : offset + 64] = bytes(b ^ 0xFF for b in flipped[offset : offset + 64])
    corrupt.write_bytes(bytes(flipped))
    with VideoMemory.open(corrupt) as m:
        m.features(0, len(m) // 2)  # the frames before it still read
        with pytest.raises(MemoryFileError, match="corrupt or truncated"):
            m.features(0, len(m))
    not_hdf5 = tmp_path / "text.h5"
    not_hdf5.write_text("hello")
    with pytest.raises(MemoryFileError):
        VideoMemory.open(not_hdf5)


KILLED_INDEX = """
import os, sys, torch
from prvql.config import load_config
from prvql.infer.memory import index_video
from prvql.model import build_prvql
torch.set_num_threads(1)
cfg = load_config("tiny", ["inference.windows_per_batch=1"])
torch.manual_seed(0)
model = build_prvql(cfg.model).eval().fuse_for_inference()
def progress(stored, total):
    if stored >= 12:
        os._exit(9)  # killed: no cleanup, no close
index_video(cfg, model, torch.device("cpu"), sys.argv[1], sys.argv[2], progress=progress)
"""


def test_a_killed_index_resumes_where_it_stopped(tiny_cfg: Config, video: Path, tmp_path: Path) -> None:
    from prvql.model import build_prvql

    out = tmp_path / "walk.h5"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", KILLED_INDEX, str(video), str(out)], env=env, timeout=300)
    assert done.returncode == 9 and not out.exists() and partial_path(out).exists()
    with open_memory(out) as live:  # the killed run's frames can be searched already
        assert len(live) == 12 and not live.complete
    cfg = load_config("tiny", ["inference.windows_per_batch=1"])
    torch.manual_seed(0)
    model = build_prvql(cfg.model).eval().fuse_for_inference()
    stored = []
    result = index_video(cfg, model, CPU, video, out, resume=True, progress=lambda n, total: stored.append(n))
    assert stored[0] == 12 and result.added == 8 and result.frames == 20  # went on after the 12 stored frames
    assert not partial_path(out).exists()
    fresh = index_video(cfg, model, CPU, video, tmp_path / "fresh.h5").path
    with VideoMemory.open(out) as a, VideoMemory.open(fresh) as b:
        assert a.complete and a.sources == b.sources
        assert torch.equal(a.features(0, len(a)), b.features(0, len(b)))
        assert np.array_equal(a.thumbnails(0, len(a)), b.thumbnails(0, len(b)))
    again = index_video(cfg, model, CPU, video, out, resume=True)
    assert again.added == 0
    torch.manual_seed(1)
    other = build_prvql(cfg.model).eval().fuse_for_inference()
    with pytest.raises(MemoryFileError, match="another model"):
        index_video(cfg, other, CPU, video, out, resume=True)


WRITER = """
import sys, time, json, numpy as np, torch
from prvql.config import load_config
from prvql.infer.memory import VideoIdentity, VideoMemory
cfg = load_config("tiny")
video = VideoIdentity("v.mp4", 8, 4, 10.0, 1000, 0, "")
m = VideoMemory.create(sys.argv[1], cfg, "model", video, (3, 2, 2), thumbnail_size=(2, 4))
print("ready", flush=True)
for block in range(40):
    ids = list(range(3 * block, 3 * block + 3))
    feats = torch.tensor(ids, dtype=torch.float32)[:, None, None, None].expand(3, 3, 2, 2)
    thumbs = np.array(ids, np.uint8)[:, None, None, None].repeat(2, 1).repeat(4, 2).repeat(3, 3)
    m.append(feats, thumbs, [2 * i for i in ids], [0.2 * i for i in ids])
    time.sleep(0.01)
m.close()
"""


def test_a_reader_sees_a_consistent_prefix_while_a_writer_appends(tmp_path: Path) -> None:
    path = tmp_path / "live.h5"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    writer = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WRITER), str(path)], stdout=subprocess.PIPE, env=env, text=True
    )
    assert writer.stdout.readline().strip() == "ready"
    seen = []
    with VideoMemory.open(path) as m:
        while True:
            running = writer.poll() is None
            m.refresh()
            n = len(m)
            feats, thumbs, sources = m.features(0, n), m.thumbnails(0, n), m.sources
            assert len(sources) >= n  # sources grow last: every counted frame is complete
            ids = torch.arange(n, dtype=torch.float32)
            assert torch.equal(feats, ids[:, None, None, None].expand(n, 3, 2, 2))
            assert np.array_equal(thumbs[:, 0, 0, 0], np.arange(n, dtype=np.uint8))
            assert sources[:n] == tuple(range(0, 2 * n, 2))
            seen.append(n)
            if not running:
                break
            time.sleep(0.005)
    assert writer.wait(timeout=60) == 0
    assert seen == sorted(seen) and seen[-1] == 120 and len(set(seen)) > 2  # read while it grew


def test_follow_indexes_a_video_as_it_grows(tiny_cfg: Config, fused: torch.nn.Module, tmp_path: Path) -> None:
    video, longer = tmp_path / "rec.mp4", tmp_path / "longer.mp4"
    write_video(video, frames_of(20), fps=10.0)
    write_video(longer, frames_of(40), fps=10.0)
    calls = []

    def progress(stored: int, total: int) -> None:
        calls.append((stored, total))
        if stored == total == 10 and longer.exists():
            os.replace(longer, video)  # the recording went on

    done = index_video(tiny_cfg, fused, CPU, video, tmp_path / "rec.h5", follow=1.0, progress=progress)
    assert done.frames == 20 and calls[-1] == (20, 20)
    with VideoMemory.open(done.path) as m, VideoReader(video) as reader:
        assert m.complete and m.sources == tuple(range(0, 40, 2)) and m.video.num_frames == reader.num_frames
