"""Exact frame reading and writing with PyAV, for every file FFmpeg decodes.

Frame index rule (:class:`VideoReader`): frame ``i`` is the ``i``-th picture of the video in display order.

* Files whose decoder returns presentation times (pts) that rise, frame after frame, and match their packets'
  times (MP4, MOV, MKV, WebM, MPEG-TS, AVI without packed B-frames, ...): the index of a frame is the rank of its pts
  among the pts of all the video's packets (read once, without decoding, when the file is opened). Random access
  seeks to the last keyframe at or before the frame and decodes from there; frames are recognised by their pts.
* Files whose times are missing or broken (raw streams; MPEG-4 Part 2 AVI with packed B-frames, whose decoder
  returns times 1, 2, 3, 5, 4, ... for pictures that are in display order): the index is the decoder's output
  order from the start of the file, the order a player shows them in. Such a file is decoded once when it is first
  opened to count its frames and find its keyframes (remembered while the file is unchanged: opening it again costs
  nothing); random access seeks to a keyframe, checks that the decoder landed on it (else decodes from the start)
  and counts frames from there. Frame times are then ``i / fps``.

Which rule a file follows is decided when it is opened, by decoding its first :data:`PROBE_FRAMES` frames.
Packets that the container marks to be discarded (outside an edit list) are not frames.

Rotation metadata (a display matrix, as phones write for portrait video) is applied: frames, ``width`` and
``height`` are as a player shows them, and boxes on them are in those coordinates.

Frame times (:attr:`VideoReader.times`) are seconds since the first frame, so a non-zero start time shifts nothing.
A constant-rate file is resampled by index (:func:`resample_indices`); a variable-rate one by time
(:meth:`VideoReader.resample`): output frame ``k`` takes the frame on screen at ``k / target_fps``.

Missing, truncated or undecodable files raise :class:`~prvql.errors.VideoError` naming the file.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from prvql.atomic import atomic_path
from prvql.errors import VideoError
from prvql.paths import check_input_file

log = logging.getLogger(__name__)

MAX_FRAME_PIXELS = 100_000_000  # 12K x 8K; larger frames (or a header claiming them) are refused
PROBE_FRAMES = 8  # frames decoded when a file is opened to check that its presentation times can be trusted
_AV_ERRORS = (av.FFmpegError, OSError, ValueError, IndexError, RuntimeError)


class VideoReader:
    """Random and streaming access to the frames of one video file, indexed in display order (module docstring).

    Args:
        path: video file (any container and codec FFmpeg decodes).

    Attributes:
        num_frames: number of frames (counted from the demuxed packets or the decoded frames, not from the header).
        fps: average frame rate (frames per second; from the stream, else from the frame times; 0 if unknown).
        height, width: frame size in pixels as a player shows it (rotation applied).
        rotation: degrees the decoded pictures are turned counter-clockwise to be shown (0, 90, 180 or 270).
        times: list of ``num_frames`` floats, the presentation time of each frame in seconds since the first.
        constant_rate: whether every frame time is within half a frame of ``i / fps`` (then resampling goes by
            index, :func:`resample_indices`; else by time).
        by_pts: True if frames are indexed by presentation time, False if by decode order (module docstring).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = check_input_file(path, "video file", VideoError)
        self._container: av.container.InputContainer | None = None
        try:
            self._open()
            self._check_size()
            self._index()
        except VideoError:
            self.close()
            raise
        except _AV_ERRORS as exc:
            self.close()
            raise VideoError(f"{self.path}: cannot read video ({exc})") from exc
        self._decoder: Iterator[av.VideoFrame] | None = None
        self._last = -1  # index of the last frame the decoder produced
        self._start = 0  # the seek point (keyframe index) the decoder started from

    def _open(self) -> None:
        """(Re)open the file with a fresh decoder positioned at its start."""
        if self._container is not None:
            self._container.close()
        try:
            self._container = av.open(str(self.path))
        except _AV_ERRORS as exc:
            raise VideoError(f"{self.path}: cannot open video ({exc})") from exc
        if not self._container.streams.video:
            raise VideoError(f"{self.path}: no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"

    def _index(self) -> None:
        """Read every packet once (decoding the first :data:`PROBE_FRAMES` frames, or all of them if their times
        are broken) and build the frame index: the rule, keyframes (where seeking may start), times, size."""
        assert self._container is not None
        pts: list[int] = []
        keys: list[int] = []
        decoded: list[tuple[int | None, int | None, bool]] = []  # (pts, dts, keyframe) in decoder output order
        packets = 0
        rotation = None
        full = False  # decoding every frame: the decoder's times cannot be trusted
        for packet in itertools.chain(self._container.demux(self._stream), [None]):
            if packet is not None and packet.size == 0:
                continue
            if packet is not None and not packet.is_discard:  # (a discarded packet is decoded, not shown)
                packets += 1
                if packet.pts is not None:
                    pts.append(packet.pts)
                    if packet.is_keyframe:
                        keys.append(packet.pts)
            if len(decoded) >= PROBE_FRAMES:
                continue
            for frame in self._stream.decode(packet):
                if rotation is None:
                    rotation = frame.rotation
                previous = decoded[-1][0] if decoded else None
                decoded.append((frame.pts, frame.dts, bool(frame.key_frame)))
                if frame.pts is None or (previous is not None and frame.pts <= previous):
                    full = True
            if full:
                break  # decode order: the packets' times are not used
        if not packets or not decoded:
            raise VideoError(f"{self.path}: the video has no frames")
        pts.sort()
        if full or not (len(pts) == packets == len(set(pts)) and [d[0] for d in decoded] == pts[: len(decoded)]):
            stat = self.path.stat()
            decoded, rotation = _decode_order(str(self.path.resolve()), stat.st_size, stat.st_mtime_ns)
            full = True
        self._set_geometry(rotation or 0)
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else 0.0
        self.by_pts = not full
        if self.by_pts:
            self._pts = pts
            self.num_frames = len(pts)
            base = self._stream.time_base or Fraction(1, 1)
            self.times = [float((p - pts[0]) * base) for p in pts]
            if self.fps <= 0 and self.times[-1] > 0:
                self.fps = (self.num_frames - 1) / self.times[-1]
            self._seek_points = sorted({0} | {bisect.bisect_left(pts, p) for p in keys})
        else:
            self._decoded = decoded
            self.num_frames = len(decoded)
            self.times = [i / self.fps if self.fps > 0 else 0.0 for i in range(self.num_frames)]
            self._seek_points = [0] + [i for i, d in enumerate(decoded) if i and d[2] and d[0] is not None]
        self.constant_rate = self.fps > 0 and all(
            abs(t - i / self.fps) <= 0.5 / self.fps for i, t in enumerate(self.times)
        )

    def _check_size(self) -> None:
        """Refuse a frame size (as the header states it, before anything is decoded) that is empty or too large."""
        height, width = int(self._stream.codec_context.height), int(self._stream.codec_context.width)
        if not (0 < height * width <= MAX_FRAME_PIXELS):
            size = f"{width}x{height}"
            raise VideoError(f"{self.path}: frame size {size} refused (at most {MAX_FRAME_PIXELS} pixels)")

    def _set_geometry(self, rotation: float) -> None:
        """``rotation``: the display matrix's counter-clockwise angle, rounded to a quarter turn."""
        self._turns = round(rotation / 90) % 4
        self.rotation = 90 * self._turns
        height, width = int(self._stream.codec_context.height), int(self._stream.codec_context.width)
        self.height, self.width = (width, height) if self._turns % 2 else (height, width)

    def close(self) -> None:
        """Close the file (the reader is also a context manager)."""
        if self._container is not None:
            self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self.num_frames

    def _check(self, index: int) -> None:
        if not 0 <= index < self.num_frames:
            raise VideoError(f"{self.path}: frame {index} is out of range (the video has {self.num_frames} frames)")

    def _seek(self, index: int, below: int | None = None) -> None:
        """Position the decoder at the last keyframe at or before frame ``index`` (and before frame ``below``,
        if given) so that it produces frame ``index`` further on; from the start of the file if that fails."""
        points = self._seek_points[: bisect.bisect_left(self._seek_points, below)] if below else self._seek_points
        point = points[bisect.bisect_right(points, index) - 1]
        self._decoder, self._last, self._start = None, -1, point
        if point > 0:
            target = self._pts[point] if self.by_pts else self._decoded[point][0]
            assert self._container is not None
            try:
                self._container.seek(target, stream=self._stream, backward=True, any_frame=False)
                decoder = self._container.decode(self._stream)
                if self.by_pts:
                    self._decoder = decoder
                    return
                # decode order: count frames from the keyframe, once sure that the decoder starts there
                first = next(decoder, None)
                if first is not None and (first.pts, first.dts, bool(first.key_frame)) == self._decoded[point]:
                    self._decoder, self._last = itertools.chain([first], decoder), point - 1
                    return
            except _AV_ERRORS as exc:
                log.debug("%s: seeking to frame %d failed (%s); decoding from the start", self.path, index, exc)
        self._open()
        assert self._container is not None
        self._decoder, self._start = self._container.decode(self._stream), 0

    def _needs_seek(self, index: int) -> bool:
        if self._decoder is None or index <= self._last:
            return True
        next_point = bisect.bisect_right(self._seek_points, self._last + 1)
        return next_point < len(self._seek_points) and self._seek_points[next_point] <= index

    def _decode_to(self, index: int) -> av.VideoFrame:
        """Decode up to frame ``index``. A decoder that, after a seek, starts past the keyframe it was sent to
        (some demuxers land one packet late), fails, or stops early is sent to the keyframe before, then to the
        start of the file."""
        self._check(index)
        if self._needs_seek(index):
            self._seek(index)
        while True:
            assert self._decoder is not None
            fresh = self.by_pts and self._last < 0  # (decode order: _seek checked where it landed)
            found, error = None, None
            try:
                for frame in self._decoder:
                    pos = self._index_of(frame)
                    if fresh and pos > self._start:
                        break  # the decoder started after the keyframe
                    fresh = False
                    self._last = found = pos
                    if pos >= index:
                        break
                else:
                    self._decoder = None
            except _AV_ERRORS as exc:
                error = exc
            if found == index:
                return frame
            if self._start > 0:
                self._seek(index, below=self._start)
                continue
            self._decoder = None
            if error is not None:
                raise VideoError(f"{self.path}: cannot decode frame {index} ({error})") from error
            if found is None or found < index:
                raise VideoError(f"{self.path}: decoding stopped before frame {index} (file truncated?)")
            raise VideoError(f"{self.path}: frame {index} could not be decoded (got {found} instead)")

    def _frames(self, indices: Iterable[int]) -> Iterator[tuple[int, av.VideoFrame]]:
        """Decoded frames for increasing ``indices`` (each index must be larger than the previous one)."""
        for index in indices:
            yield index, self._decode_to(index)

    def _index_of(self, frame: av.VideoFrame) -> int:
        if not self.by_pts or frame.pts is None:
            return self._last + 1
        pos = bisect.bisect_left(self._pts, frame.pts)
        if pos < self.num_frames and self._pts[pos] == frame.pts:
            return pos
        return min(max(pos, 0), self.num_frames - 1)

    def _to_array(self, frame: av.VideoFrame, size: tuple[int, int] | None) -> np.ndarray:
        if size is None:
            array = frame.to_ndarray(format="rgb24")
        else:
            height, width = size[::-1] if self._turns % 2 else size
            array = frame.reformat(width=width, height=height, format="rgb24", interpolation="AREA").to_ndarray()
        return np.ascontiguousarray(np.rot90(array, self._turns)) if self._turns else array

    def read(self, indices: Sequence[int], size: tuple[int, int] | None = None) -> np.ndarray:
        """Frames at ``indices`` (any order, repeats allowed).

        Args:
            indices: frame indices in [0, num_frames).
            size: optional (height, width) to resize to while converting (area interpolation).

        Returns:
            uint8 array [N, H, W, 3], RGB, in the order of ``indices``.
        """
        wanted = sorted(set(int(i) for i in indices))
        decoded = {i: self._to_array(f, size) for i, f in self._frames(wanted)}
        if not indices:
            h, w = size if size is not None else (self.height, self.width)
            return np.zeros((0, h, w, 3), dtype=np.uint8)
        return np.stack([decoded[int(i)] for i in indices])

    def iter_frames(
        self, start: int = 0, stop: int | None = None, step: int = 1, size: tuple[int, int] | None = None
    ) -> Iterator[np.ndarray]:
        """Stream frames ``start, start + step, ... < stop`` as uint8 [H, W, 3] arrays (one seek at most per GOP).

        ``stop`` defaults to the end of the video.
        """
        stop = self.num_frames if stop is None else min(stop, self.num_frames)
        for _, frame in self._frames(range(start, stop, step)):
            yield self._to_array(frame, size)

    def resample(self, target_fps: float) -> list[int]:
        """Frame indices of the video resampled to ``target_fps``: output frame k takes the frame on screen at time
        ``k / target_fps`` (:func:`resample_indices` for a constant-rate video; by :attr:`times` otherwise, the last
        frame lasting as long as the gap before it)."""
        if self.constant_rate or self.num_frames == 1:
            return resample_indices(self.num_frames, self.fps or target_fps, target_fps)
        if target_fps <= 0:
            raise ValueError(f"frame rates must be > 0 (got {target_fps})")
        end = 2 * self.times[-1] - self.times[-2]
        out = []
        k = 0
        while (time := k / target_fps) < end - 1e-9:
            out.append(bisect.bisect_right(self.times, time + 1e-9) - 1)
            k += 1
        return out

    def iter_resampled(
        self, target_fps: float, size: tuple[int, int] | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Stream the video resampled to ``target_fps``: yields (source frame index, uint8 [H, W, 3]).

        Frames are picked as in :meth:`resample`; a target above the source rate repeats frames.
        """
        indices = self.resample(target_fps)
        unique = sorted(set(indices))
        frames = self._frames(unique)
        current: tuple[int, np.ndarray] | None = None
        for index in indices:
            while current is None or current[0] != index:
                i, frame = next(frames)
                current = (i, self._to_array(frame, size))
            yield current


@functools.lru_cache(maxsize=8)
def _decode_order(path: str, size: int, mtime_ns: int) -> tuple[tuple[tuple[int | None, int | None, bool], ...], float]:
    """(pts, dts, keyframe) of every frame of ``path`` in decoder output order, and the first frame's rotation: one
    full decode, remembered for the file as it is (``size``, ``mtime_ns``) so that opening it again costs nothing."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames, rotation = [], 0.0
        for frame in container.decode(stream):
            if not frames:
                rotation = frame.rotation or 0.0
            frames.append((frame.pts, frame.dts, bool(frame.key_frame)))
    return tuple(frames), rotation


def resample_indices(num_frames: int, fps: float, target_fps: float, start: int = 0) -> list[int]:
    """Source frame indices of a ``target_fps`` resampling that starts at frame ``start``.

    Output frame k (time ``k / target_fps``) takes the source frame on screen at that time,
    ``start + floor(k * fps / target_fps)``; for a 30 fps source and a 5 fps target this is ``start + 6 k``,
    the Ego4D clip convention. Upsampling repeats frames.
    """
    if fps <= 0 or target_fps <= 0:
        raise ValueError(f"frame rates must be > 0 (got {fps} and {target_fps})")
    ratio = fps / target_fps
    out = []
    k = 0
    while (index := start + math.floor(k * ratio + 1e-9)) < num_frames:
        out.append(index)
        k += 1
    return out


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: float,
    crf: int = 18,
    codec: str = "libx264",
    preset: str = "veryfast",
) -> int:
    """Encode uint8 [H, W, 3] RGB frames into ``path`` atomically (H.264, yuv420p; H and W must be even).

    The encoded bytes are not bit-reproducible from run to run (libx264 here); decoded pixels differ by
    compression noise only.

    Returns:
        The number of frames written.
    """
    path = Path(path)
    count = 0
    with atomic_path(path) as tmp, av.open(str(tmp), mode="w") as container:
        stream = None
        for frame in frames:
            if stream is None:
                height, width = frame.shape[:2]
                if height % 2 or width % 2:
                    raise ValueError(f"{path}: frame size {width}x{height} must be even for yuv420p")
                stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
                stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
                stream.options = {"crf": str(crf), "preset": preset}
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            video_frame.pts = count
            container.mux(stream.encode(video_frame))
            count += 1
        if stream is None:
            raise ValueError(f"{path}: no frames to write")
        container.mux(stream.encode(None))
    return count
