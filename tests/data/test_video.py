"""Exact frame reading, clip extraction from a canonical video, and clear errors on bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from prvql.data.annotations import load_annotations
from prvql.data.extract import extract_clips, extract_jobs, validate_clip
from prvql.data.video import VideoReader, resample_indices, write_video
from prvql.errors import VideoError

BITS = 10
ROWS, COLS = 2, 5  # BITS blocks
H, W = 96, 160


def code_frame(index: int, height: int = H, width: int = W) -> np.ndarray:
    """A frame that shows its own index as large black/white blocks (robust to compression)."""
    frame = np.zeros((height, width, 3), np.uint8)
    bh, bw = height // ROWS, width // COLS
    for b in range(BITS):
        if (index >> b) & 1:
            r, c = divmod(b, COLS)
            frame[r * bh : (r + 1) * bh, c * bw : (c + 1) * bw] = 255
    return frame


def decode(frame: np.ndarray) -> int:
    height, width = frame.shape[:2]
    bh, bw = height // ROWS, width // COLS
    value = 0
    for b in range(BITS):
        r, c = divmod(b, COLS)
        block = frame[r * bh + bh // 4 : (r + 1) * bh - bh // 4, c * bw + bw // 4 : (c + 1) * bw - bw // 4]
        value |= int(block.mean() > 127) << b
    return value


@pytest.fixture(scope="module")
def canonical(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 30 fps 'canonical' video of 200 frames whose frame i shows i."""
    path = tmp_path_factory.mktemp("videos") / "video-1.mp4"
    write_video(path, (code_frame(i) for i in range(200)), fps=30)
    return path


def test_read_returns_exact_frames_in_any_order(canonical: Path) -> None:
    with VideoReader(canonical) as reader:
        assert (reader.num_frames, reader.height, reader.width) == (200, H, W)
        assert reader.fps == pytest.approx(30)
        indices = [5, 199, 0, 7, 7, 150, 3, 100, 101, 102, 64, 63]
        frames = reader.read(indices)
        assert frames.shape == (len(indices), H, W, 3) and frames.dtype == np.uint8
        assert [decode(f) for f in frames] == indices


def test_streaming_and_resampling(canonical: Path) -> None:
    with VideoReader(canonical) as reader:
        assert [decode(f) for f in reader.iter_frames(10, 60, 7)] == list(range(10, 60, 7))
        resampled = list(reader.iter_resampled(5.0))
        assert [i for i, _ in resampled] == list(range(0, 200, 6))
        assert all(decode(f) == i for i, f in resampled)
        small = reader.read([33], size=(48, 80))
        assert small.shape == (1, 48, 80, 3) and decode(small[0]) == 33
    assert resample_indices(10, 30, 12) == [0, 2, 5, 7]  # floor(k * 2.5): the frame on screen at k / 12 s
    assert resample_indices(3, 5, 10) == [0, 0, 1, 1, 2, 2]  # upsampling repeats frames
    assert resample_indices(40, 30, 5, start=7) == [7, 13, 19, 25, 31, 37]


def annotations(tmp_path: Path, with_tracks: bool = True) -> Path:
    """Two clips of the canonical video (frames 7 + 6j), one with a null uid; test-style without tracks if asked."""
    qs = {"is_valid": True, "query_frame": 20, "object_title": "x",
          "visual_crop": {"frame_number": 25, "x": 1, "y": 1, "width": 9, "height": 9,
                          "original_width": W, "original_height": H}}  # fmt: skip
    if with_tracks:
        qs["response_track"] = [qs["visual_crop"] | {"frame_number": f} for f in (3, 4, 5)]
    clip = {"clip_uid": "clip-a", "video_start_frame": 7, "video_end_frame": 7 + 6 * 29, "clip_fps": 5,
            "annotations": [{"annotation_uid": "a", "query_sets": {"1": qs}}]}  # fmt: skip
    null_clip = {"clip_uid": None, "clip_fps": 5, "annotations": []}
    data = {"version": "1", "videos": [{"video_uid": "video-1", "clips": [clip, null_clip]}]}
    path = tmp_path / ("vq_val.json" if with_tracks else "vq_test_unannotated.json")
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("with_tracks", [True, False])
def test_extract_clips_keeps_every_sixth_frame(canonical: Path, tmp_path: Path, with_tracks: bool) -> None:
    jobs = extract_jobs([load_annotations(annotations(tmp_path, with_tracks))])
    assert [j.clip_uid for j in jobs] == ["clip-a"] and jobs[0].num_frames == 30
    out = tmp_path / "clips"
    report = extract_clips(jobs, canonical.parent, out, progress=False)
    assert report.written == ["clip-a"] and not report.failed
    with VideoReader(out / "clip-a.mp4") as clip:
        assert clip.num_frames == 30 and clip.fps == pytest.approx(5)
        assert [decode(f) for f in clip.iter_frames()] == [7 + 6 * j for j in range(30)]
    again = extract_clips(jobs, canonical.parent, out, progress=False)  # resumable
    assert again.skipped == ["clip-a"] and not again.written


def test_extract_downscales_and_validates(canonical: Path, tmp_path: Path) -> None:
    jobs = extract_jobs([load_annotations(annotations(tmp_path))])
    out = tmp_path / "clips"
    extract_clips(jobs, canonical.parent, out, downscale_height=48, progress=False)
    with VideoReader(out / "clip-a.mp4") as clip:
        assert (clip.height, clip.width) == (48, 80)
        assert decode(clip.read([11])[0]) == 7 + 66
    # a clip of the wrong length is reported and re-extracted on the next run
    write_video(out / "clip-a.mp4", (code_frame(i) for i in range(12)), fps=5)
    assert any("12 frames, expected 30" in p for p in validate_clip(out / "clip-a.mp4", jobs[0]))
    report = extract_clips(jobs, canonical.parent, out, progress=False)
    assert report.written == ["clip-a"]


def test_missing_source_video_is_reported_not_fatal(tmp_path: Path) -> None:
    jobs = extract_jobs([load_annotations(annotations(tmp_path))])
    report = extract_clips(jobs, tmp_path / "no-videos", tmp_path / "clips", progress=False)
    assert list(report.failed) == ["clip-a"] and "video-1.mp4: video file not found" in report.failed["clip-a"]
    assert not (tmp_path / "clips").exists()


def test_unreadable_source_video_leaves_no_clips_folder(canonical: Path, tmp_path: Path, monkeypatch) -> None:
    jobs = extract_jobs([load_annotations(annotations(tmp_path))])
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "video-1.mp4").write_bytes(b"\x00not a video" * 100)
    report = extract_clips(jobs, videos, tmp_path / "clips", progress=False)
    assert list(report.failed) == ["clip-a"] and "video-1.mp4" in report.failed["clip-a"]
    assert not (tmp_path / "clips").exists()
    # a source that breaks while its clip is written: the clip's folder, made to write it, goes too
    (videos / "video-1.mp4").write_bytes(canonical.read_bytes())

    def breaks(reader: VideoReader, *args, **kwargs):
        yield code_frame(0)
        raise VideoError(f"{reader.path}: cannot decode frame 13")

    monkeypatch.setattr(VideoReader, "iter_frames", breaks)
    report = extract_clips(jobs, videos, tmp_path / "clips", progress=False)
    assert "cannot decode frame 13" in report.failed["clip-a"] and not (tmp_path / "clips").exists()
    (tmp_path / "clips").mkdir()  # a folder that was there stays
    extract_clips(jobs, videos, tmp_path / "clips", progress=False)
    assert (tmp_path / "clips").is_dir()


def test_bad_videos_raise_video_error(canonical: Path, tmp_path: Path) -> None:
    with pytest.raises(VideoError, match="missing.mp4: video file not found"):
        VideoReader(tmp_path / "missing.mp4")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00not a video" * 100)
    with pytest.raises(VideoError, match="garbage.mp4"):
        VideoReader(garbage)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(canonical.read_bytes()[: canonical.stat().st_size // 2])
    with pytest.raises(VideoError, match="truncated.mp4"):
        with VideoReader(truncated) as reader:
            reader.read(range(reader.num_frames))
    with VideoReader(canonical) as reader, pytest.raises(VideoError, match="frame 200 is out of range"):
        reader.read([200])
