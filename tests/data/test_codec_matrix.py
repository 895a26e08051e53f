"""The reader on every kind of file a person may have: tiny videos made here with FFmpeg's encoders (through PyAV),
each checked frame by frame against a plain sequential decode, and searched with ``locate`` to the same track as
the same frames re-encoded as lossless H.264. Debian's ``opencv-doc`` AVIs are checked too when installed."""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from prvql.data.video import VideoReader

OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
VFR_GAPS_MS = [100, 100, 200, 300, 100, 100, 500, 100, 100, 100, 200, 100, 100, 100, 100, 100, 300, 100]


def picture(i: int, height: int, width: int) -> np.ndarray:
    """uint8 [H, W, 3]: a gradient background that changes with ``i`` and a red square moving across it."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([(x * 4 + i * 3) % 256, (y * 5) % 256, np.full_like(x, (i * 37) % 256)], -1).astype(np.uint8)
    top, left = (height // 3 + i) % (height - 12), (i * 3) % (width - 16)
    image[top : top + 12, left : left + 16] = (250, 30, 30)
    return image


@dataclass(frozen=True)
class Case:
    """How to encode one test video (``encode``'s arguments)."""

    suffix: str
    codec: str
    options: dict[str, str] = field(default_factory=dict)
    frames: int = 30
    width: int = 64
    height: int = 48
    pix_fmt: str = "yuv420p"
    rate: int = 10
    gaps_ms: list[int] | None = None  # variable frame rate: the times between frames
    rotation: int = 0  # display matrix: degrees counter-clockwise, as PyAV's ``set_display_rotation``
    first_pts: int = 0  # a non-zero start time; a negative one makes the MP4 muxer cut the frames before 0 with an
    # edit list (they are decoded, not shown)

    @property
    def shown(self) -> int:
        """Frames a player shows."""
        return self.frames - max(0, -self.first_pts)

    audio_first: bool = False  # an audio stream (the file's first) whose packets start before the video's


GOP = {"g": "8", "bf": "2"}
CASES = {
    "h264-bframes.mp4": Case(".mp4", "libx264", GOP),
    "hevc.mp4": Case(".mp4", "libx265", {"x265-params": "keyint=8:bframes=3:log-level=none"}),
    "vp9.webm": Case(".webm", "libvpx-vp9", {"g": "8", "auto-alt-ref": "1", "lag-in-frames": "8"}),
    "av1.mkv": Case(".mkv", "libsvtav1", {"g": "8", "preset": "12", "svtav1-params": "lp=1"}, width=96, height=72),
    "mpeg4-packed-bframes.avi": Case(".avi", "mpeg4", {"bf": "2", "g": "12"}),
    "mjpeg.avi": Case(".avi", "mjpeg", pix_fmt="yuvj420p"),
    "phone-rotated.mp4": Case(".mp4", "libx264", GOP, rotation=-90),
    "vfr.mp4": Case(".mp4", "libx264", GOP, frames=len(VFR_GAPS_MS) + 1, gaps_ms=VFR_GAPS_MS),
    "odd-size.webm": Case(".webm", "libvpx-vp9", {"g": "8"}, width=65, height=49),
    "hevc-10bit.mp4": Case(".mp4", "libx265", {"x265-params": "keyint=8:log-level=none"}, pix_fmt="yuv420p10le"),
    "audio-first-late-start.mp4": Case(".mp4", "libx264", GOP, first_pts=7, audio_first=True),
    "h264.ts": Case(".ts", "libx264", GOP),  # MPEG-TS starts at 1.4 s
    "edit-list.mp4": Case(".mp4", "libx264", GOP, first_pts=-3),
}


def encode(path: Path, case: Case) -> None:
    with av.open(str(path), "w") as container:
        audio = container.add_stream("aac", rate=8000) if case.audio_first else None
        stream = container.add_stream(case.codec, rate=case.rate, options=case.options)
        stream.width, stream.height, stream.pix_fmt = case.width, case.height, case.pix_fmt
        if case.gaps_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if case.rotation:
            stream.set_display_rotation(case.rotation)
        if audio is not None:
            for j in range(12):
                samples = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
                samples.sample_rate, samples.pts = 8000, j * 1024
                container.mux(audio.encode(samples))
            container.mux(audio.encode(None))
        for i in range(case.frames):
            frame = av.VideoFrame.from_ndarray(picture(i, case.height, case.width), format="rgb24")
            if case.gaps_ms is not None:
                frame.pts, frame.time_base = sum(case.gaps_ms[:i]), Fraction(1, 1000)
            else:
                frame.pts = case.first_pts + i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def vop_start(data: bytes) -> int:
    return data.find(b"\x00\x00\x01\xb6")


def not_coded_vop(vop: bytes, increment_bits: int) -> bytes:
    """The 'N-VOP' placeholder that follows packed B-frames: ``vop``'s header up to its time increment, then
    vop_coded = 0 and byte stuffing (MPEG-4 Part 2, 6.2.5). Written by hand: no library writes packed B-frames."""
    bits = "".join(f"{byte:08b}" for byte in vop[4:16])
    pos = 2 + bits.index("0", 2) + 1  # vop_coding_type, modulo_time_base ("1" * n + "0")
    pos += 1 + increment_bits + 1  # marker, vop_time_increment, marker
    out = "01" + bits[2:pos] + "0" + "0"  # a P-VOP header, vop_coded = 0, stuffing "0111..."
    out += "1" * (-len(out) % 8)
    return vop[:4] + bytes(int(out[i : i + 8], 2) for i in range(0, len(out), 8))


def pack_bframes(source: Path, packed: Path) -> None:
    """Rewrite an MPEG-4 Part 2 AVI with B-frames the way DivX 5 did ('packed B-frames'): each reference frame
    shares its packet with the first B-frame after it in decode order and a not-coded VOP takes its place later,
    so the demuxer's and the decoder's timestamps no longer follow the display order."""
    with av.open(str(source)) as src, av.open(str(packed), "w", format="avi") as out:
        stream = src.streams.video[0]
        increment_bits = max(1, (stream.time_base.denominator - 1).bit_length())
        groups: list[tuple[bytes, bool, list[bytes]]] = []  # (reference frame, keyframe, B-frames after it)
        for packet in src.demux(stream):
            data = bytes(packet)
            if not data:
                continue
            if data[vop_start(data) + 4] >> 6 == 2 and groups:  # vop_coding_type 2 = B
                groups[-1][2].append(data)
            else:
                groups.append((data, packet.is_keyframe, []))
        chunks: list[tuple[bytes, bool]] = []
        for ref, key, bframes in groups:
            if not chunks:  # the DivX user data that tells the decoder the B-frames are packed
                ref = ref[: vop_start(ref)] + b"\x00\x00\x01\xb2DivX503b1393p" + ref[vop_start(ref) :]
            if not bframes:
                chunks.append((ref, key))
                continue
            chunks += [(ref + bframes[0], key)] + [(b, False) for b in bframes[1:]]
            chunks.append((not_coded_vop(ref[vop_start(ref) :], increment_bits), False))
        target = out.add_stream_from_template(stream)
        for i, (data, key) in enumerate(chunks):
            packet = av.Packet(data)
            packet.pts = packet.dts = i
            packet.time_base, packet.is_keyframe, packet.stream = target.time_base, key, target
            out.mux(packet)


def sequential_decode(path: Path) -> list[np.ndarray]:
    """Every frame in the order a plain PyAV decode loop returns them, uint8 [H, W, 3] as stored."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("codecs")
    paths = {}
    for name, case in CASES.items():
        if case.codec not in av.codecs_available:
            continue  # this FFmpeg has no such encoder: the video's tests skip
        path = folder / name
        if "packed" in name:
            encode(folder / f"unpacked{case.suffix}", case)
            pack_bframes(folder / f"unpacked{case.suffix}", path)
        else:
            encode(path, case)
        paths[name] = path
    return paths


def video(videos: dict[str, Path], name: str) -> Path:
    if name not in videos:
        pytest.skip(f"no {CASES[name].codec} encoder in this FFmpeg")
    return videos[name]


def shown(case: Case, stored: np.ndarray) -> np.ndarray:
    """A stored picture as a player shows it (turned ``case.rotation`` degrees counter-clockwise)."""
    return np.rot90(stored, case.rotation // 90) if case.rotation else stored


@pytest.mark.parametrize("name", list(CASES))
def test_reader_matches_a_sequential_decode(videos: dict[str, Path], name: str) -> None:
    case, path = CASES[name], video(videos, name)
    expected = [shown(case, f) for f in sequential_decode(path)]
    assert len(expected) == case.shown
    with VideoReader(path) as reader:
        assert reader.num_frames == case.shown
        assert (reader.height, reader.width) == expected[0].shape[:2]
        assert reader.times[0] == 0.0
        streamed = list(reader.iter_frames())
        assert all(np.array_equal(a, b) for a, b in zip(streamed, expected, strict=True))
        order = list(range(case.shown))[::-1] + random.Random(0).sample(range(case.shown), 12)
        for i in order:  # random access: every frame, backwards, then in a shuffled order
            assert np.array_equal(reader.read([i])[0], expected[i]), f"frame {i}"
        assert np.array_equal(reader.read(order[-6:]), np.stack([expected[i] for i in order[-6:]]))


def test_packed_bframes_are_in_display_order(videos: dict[str, Path]) -> None:
    """The packed file shows the pictures of the file it was made from, in the same order, although its decoder's
    timestamps do not rise."""
    path = video(videos, "mpeg4-packed-bframes.avi")
    with av.open(str(path)) as container:
        times = [frame.pts for frame in container.decode(video=0)]
    assert any(b < a for a, b in zip(times, times[1:], strict=False))
    original = sequential_decode(path.with_name("unpacked.avi"))
    with VideoReader(path) as reader:
        assert not reader.by_pts and reader.constant_rate and reader.fps == pytest.approx(10)
        assert all(np.array_equal(a, b) for a, b in zip(reader.iter_frames(), original, strict=True))
        assert np.array_equal(reader.read([17, 3])[0], original[17])


def test_a_decode_order_file_is_decoded_once_until_it_changes(videos: dict[str, Path], tmp_path: Path) -> None:
    from prvql.data import video as video_module

    path = tmp_path / "packed.avi"
    shutil.copyfile(video(videos, "mpeg4-packed-bframes.avi"), path)
    decoded: list[str] = []
    real = video_module.av.open

    def counting_open(file, *args, **kwargs):  # full decodes open the file from the cached helper alone
        decoded.append(str(file))
        return real(file, *args, **kwargs)

    video_module._decode_order.cache_clear()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(video_module.av, "open", counting_open)
        first = [VideoReader(path).num_frames for _ in range(3)]
        opens_for_three = len(decoded)
        os.utime(path, ns=(0, 0))  # the file "changes": decoded again
        again = VideoReader(path).num_frames
    info = video_module._decode_order.cache_info()
    assert first == [again] * 3 and info.misses == 2 and info.hits == 2
    assert opens_for_three == 3 + 1 and len(decoded) == opens_for_three + 2  # one open per reader + one full decode


def test_rotation_gives_frames_as_shown(videos: dict[str, Path]) -> None:
    """A display matrix of -90 degrees (a phone held upright) shows the stored picture turned clockwise."""
    case = CASES["phone-rotated.mp4"]
    source = picture(5, case.height, case.width).astype(int)
    with VideoReader(video(videos, "phone-rotated.mp4")) as reader:
        assert reader.rotation == 270 and (reader.height, reader.width) == (case.width, case.height)
        frame = reader.read([5])[0].astype(int)
        small = reader.read([5], size=(32, 24))[0]
    assert np.abs(frame - np.rot90(source, -1)).mean() < 8 < 30 < np.abs(frame - np.rot90(source, 1)).mean()
    assert small.shape == (32, 24, 3)


def test_variable_frame_rate_is_sampled_by_time(videos: dict[str, Path]) -> None:
    written = np.cumsum([0] + VFR_GAPS_MS) / 1000
    with VideoReader(video(videos, "vfr.mp4")) as reader:
        assert np.allclose(reader.times, written) and not reader.constant_rate
        picked = reader.resample(5.0)
        end = written[-1] + VFR_GAPS_MS[-1] / 1000
        times = [k / 5 for k in range(100) if k / 5 < end - 1e-9]  # the last frame lasts as long as the gap before it
        on_screen = [int(np.searchsorted(written, t + 1e-9, side="right")) - 1 for t in times]
        assert picked == on_screen and len(set(picked)) < len(picked) < reader.num_frames
        frames = list(reader.iter_resampled(5.0))
        assert [i for i, _ in frames] == on_screen
        assert all(np.array_equal(f, reader.read([i])[0]) for i, f in frames)


def test_track_json_gives_variable_rate_frames_their_own_times(
    videos: dict[str, Path], tiny_cfg, tiny_model, tmp_path: Path
) -> None:
    import json

    from prvql.infer.locate import Query, locate_video

    path = video(videos, "vfr.mp4")
    with VideoReader(path) as reader:
        times, middle = reader.times, reader.num_frames // 2
    query = Query(frame=middle, search="before", box=(8.0, 8.0, 40.0, 30.0))
    locate_video(tiny_cfg, tiny_model, torch.device("cpu"), path, query, tmp_path, name="vfr.mp4", render_video=False)
    report = json.loads((tmp_path / "track.json").read_text())
    curve = report["curve"]
    assert [e["time"] for e in curve] == [round(times[e["source_frame"]], 4) for e in curve]
    assert any(abs(e["time"] - e["source_frame"] / report["source_fps"]) > 0.05 for e in curve)
    assert report["query"]["time"] == times[middle]


def test_late_start_and_audio_first_shift_nothing(videos: dict[str, Path]) -> None:
    for name in ("audio-first-late-start.mp4", "h264.ts"):
        with av.open(str(video(videos, name))) as container:
            assert container.streams.video[0].start_time > 0
        with VideoReader(video(videos, name)) as reader:
            assert reader.constant_rate and np.allclose(reader.times, np.arange(reader.num_frames) / 10)
            assert reader.resample(5.0) == list(range(0, 30, 2))


def test_edit_list_hides_the_frames_before_its_start(videos: dict[str, Path]) -> None:
    case = CASES["edit-list.mp4"]
    with VideoReader(video(videos, "edit-list.mp4")) as reader:
        first = reader.read([0])[0].astype(int)
        assert reader.num_frames == case.frames - 3 and reader.times[:2] == [0.0, 0.1]
    errors = [np.abs(first - picture(i, case.height, case.width)).mean() for i in range(5)]
    assert int(np.argmin(errors)) == 3  # the frame written with time 0


def lossless_h264(reader: VideoReader, path: Path) -> list[np.ndarray]:
    """Encode the reader's frames as lossless RGB H.264 in MP4 (qp 0: decodes bit-exactly) at the same times:
    the reader's frame rate if constant, else its frame times in milliseconds. Returns the frames."""
    frames = list(reader.iter_frames())
    rate = Fraction(reader.fps).limit_denominator(1001)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264rgb", rate=rate, options={"qp": "0", "preset": "ultrafast"})
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "rgb24"
        time_base = 1 / rate if reader.constant_rate else Fraction(1, 1000)
        stream.codec_context.time_base = time_base
        for i, frame in enumerate(frames):
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            picture.pts = i if reader.constant_rate else round(reader.times[i] * 1000)
            picture.time_base = time_base
            container.mux(stream.encode(picture))
        container.mux(stream.encode(None))
    return frames


def track_of(cfg, model, video: Path, frame: int, box: tuple[float, ...], out: Path) -> tuple:
    from prvql.infer.locate import Query, locate_video

    query = Query(frame=frame, search="before", box=box)
    found = locate_video(cfg, model, torch.device("cpu"), video, query, out, name=video.name, render_video=False)
    result = found.result
    track = result.track
    return (
        found.info.sources[: len(result)],
        result.scores.tolist(),
        track.frames.tolist(),
        track.boxes.tolist(),
        track.score,
    )


def same_track_as_lossless_h264(cfg, model, path: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.mp4"
    with VideoReader(path) as reader:
        frames = lossless_h264(reader, copy)
        middle = reader.num_frames // 2
        box = (reader.width * 0.25, reader.height * 0.25, reader.width * 0.6, reader.height * 0.7)
    with VideoReader(copy) as reader:
        assert all(np.array_equal(a, b) for a, b in zip(reader.iter_frames(), frames, strict=True))
    original = track_of(cfg, model, path, middle, box, tmp_path / "a")
    assert original == track_of(cfg, model, copy, middle, box, tmp_path / "b")
    assert len(original[1]) == len(original[0]) > 1


@pytest.mark.slow
def test_locate_finds_the_same_track_as_on_lossless_h264(
    videos: dict[str, Path], tiny_cfg, tiny_model, tmp_path: Path
) -> None:
    """A box on the middle frame of each video (one test, one model: the model takes most of the time)."""
    for name, path in videos.items():
        (tmp_path / name).mkdir()
        same_track_as_lossless_h264(tiny_cfg, tiny_model, path, tmp_path / name)


OPENCV_VIDEOS = ["Megamind.avi", "Megamind_bugy.avi", "vtest.avi", "tree.avi"]


@pytest.mark.slow
@pytest.mark.parametrize("name", OPENCV_VIDEOS)
def test_opencv_sample_videos(name: str) -> None:
    """Debian's opencv-doc sample AVIs (Megamind: MPEG-4 Part 2 with packed B-frames) read like a sequential
    decode, in order and at random."""
    path = OPENCV_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} not installed (Debian package opencv-doc)")
    expected = sequential_decode(path)
    with VideoReader(path) as reader:
        assert reader.num_frames == len(expected)
        assert all(np.array_equal(a, b) for a, b in zip(reader.iter_frames(), expected, strict=True))
        order = random.Random(1).sample(range(reader.num_frames), 20)
        assert all(np.array_equal(f, expected[i]) for f, i in zip(reader.read(order), order, strict=True))


@pytest.mark.slow
def test_locate_on_megamind_gives_the_same_track_as_on_lossless_h264(tiny_weights: Path, tmp_path: Path) -> None:
    """``prvql locate`` on the packed-B-frame AVI, with a box on frame 180 and with a crop of it, finds the tracks
    it finds on the same frames re-encoded as H.264."""
    from PIL import Image

    from prvql.cli import main

    path = OPENCV_DATA / "Megamind.avi"
    if not path.is_file():
        pytest.skip(f"{path} not installed (Debian package opencv-doc)")
    copy = tmp_path / "megamind.mp4"
    with VideoReader(path) as reader:
        frames = lossless_h264(reader, copy)
    Image.fromarray(frames[180][422 : 422 + 105, 360 : 360 + 115]).save(tmp_path / "crop.png")
    queries = {"box": ["--query-frame", "180", "--query-box", "360,422,115,105"]}
    queries["crop"] = ["--query", str(tmp_path / "crop.png")]
    for name, query in queries.items():
        reports = []
        for source in (path, copy):
            out = tmp_path / f"{name}-{source.suffix[1:]}"
            args = ["locate", "--video", str(source), *query, "--weights", str(tiny_weights), "--output", str(out)]
            assert main([*args, "--device", "cpu", "--no-video"]) == 0
            report = json.loads((out / "track.json").read_text())
            reports.append({k: v for k, v in report.items() if k != "video"})
        assert reports[0] == reports[1]
        assert reports[0]["searched_frames"] == (38 if name == "box" else 57)  # 180 or 270 frames of 23.976 at 5 fps
