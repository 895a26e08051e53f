"""Exact frame reading and writing with PyAV.

:class:`VideoReader` maps every frame to its index through the presentation timestamps of the demuxed packets,
so ``read([i])`` returns frame ``i`` exactly, whatever the GOP structure (B-frames included). It decodes
sequentially and seeks only when a keyframe lies between the last decoded frame and the next requested one.

Missing, truncated or undecodable files raise :class:`~prvql.errors.VideoError` naming the file.
"""

from __future__ import annotations

import bisect
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
_AV_ERRORS = (av.FFmpegError, OSError, ValueError, IndexError, RuntimeError)


class VideoReader:
    """Random and streaming access to the frames of one video file.

    Args:
        path: video file (anything FFmpeg demuxes; mp4 in this project).

    Attributes:
        num_frames: number of frames (counted from the demuxed packets, not from the header).
        fps: average frame rate.
        height, width: frame size in pixels.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = check_input_file(path, "video file", VideoError)
        try:
            self._container = av.open(str(self.path))
        except _AV_ERRORS as exc:
            raise VideoError(f"{self.path}: cannot open video ({exc})") from exc
        try:
            if not self._container.streams.video:
                raise VideoError(f"{self.path}: no video stream")
            self._stream = self._container.streams.video[0]
            self._stream.thread_type = "AUTO"
            pts, keys = [], []
            for packet in self._container.demux(self._stream):
                if packet.pts is None or packet.size == 0:
                    continue
                pts.append(packet.pts)
                if packet.is_keyframe:
                    keys.append(packet.pts)
        except VideoError:
            self.close()
            raise
        except _AV_ERRORS as exc:
            self.close()
            raise VideoError(f"{self.path}: cannot read video packets ({exc})") from exc
        if not pts:
            self.close()
            raise VideoError(f"{self.path}: the video has no frames")
        self._pts = sorted(pts)
        self._keyframes = sorted(bisect.bisect_left(self._pts, p) for p in keys) or [0]
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else 0.0
        self.num_frames = len(self._pts)
        self.height = int(self._stream.codec_context.height)
        self.width = int(self._stream.codec_context.width)
        if not (0 < self.height * self.width <= MAX_FRAME_PIXELS):
            self.close()
            size = f"{self.width}x{self.height}"
            raise VideoError(f"{self.path}: frame size {size} refused (at most {MAX_FRAME_PIXELS} pixels)")
        self._decoder: Iterator[av.VideoFrame] | None = None
        self._last = -1  # index of the last frame the decoder produced

    def close(self) -> None:
        """Close the file (the reader is also a context manager)."""
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

    def _seek(self, index: int) -> None:
        key = self._keyframes[bisect.bisect_right(self._keyframes, index) - 1]
        try:
            self._container.seek(self._pts[key], stream=self._stream, backward=True, any_frame=False)
        except _AV_ERRORS as exc:
            raise VideoError(f"{self.path}: cannot seek to frame {index} ({exc})") from exc
        self._decoder = self._container.decode(self._stream)
        self._last = -1

    def _needs_seek(self, index: int) -> bool:
        if self._decoder is None or index <= self._last:
            return True
        next_key = bisect.bisect_right(self._keyframes, self._last + 1)
        return next_key < len(self._keyframes) and self._keyframes[next_key] <= index

    def _frames(self, indices: Iterable[int]) -> Iterator[tuple[int, av.VideoFrame]]:
        """Decoded frames for increasing ``indices`` (each index must be larger than the previous one)."""
        for index in indices:
            self._check(index)
            if self._needs_seek(index):
                self._seek(index)
            assert self._decoder is not None
            try:
                for frame in self._decoder:
                    pos = self._index_of(frame)
                    self._last = pos
                    if pos == index:
                        yield index, frame
                        break
                    if pos > index:
                        raise VideoError(f"{self.path}: frame {index} could not be decoded (got {pos} instead)")
                else:
                    self._decoder = None
                    raise VideoError(f"{self.path}: decoding stopped before frame {index} (file truncated?)")
            except _AV_ERRORS as exc:
                self._decoder = None
                raise VideoError(f"{self.path}: cannot decode frame {index} ({exc})") from exc

    def _index_of(self, frame: av.VideoFrame) -> int:
        if frame.pts is None:
            return self._last + 1
        pos = bisect.bisect_left(self._pts, frame.pts)
        if pos < self.num_frames and self._pts[pos] == frame.pts:
            return pos
        return min(max(pos, 0), self.num_frames - 1)

    @staticmethod
    def _to_array(frame: av.VideoFrame, size: tuple[int, int] | None) -> np.ndarray:
        if size is None:
            return frame.to_ndarray(format="rgb24")
        height, width = size
        return frame.reformat(width=width, height=height, format="rgb24", interpolation="AREA").to_ndarray()

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

    def iter_resampled(
        self, target_fps: float, size: tuple[int, int] | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Stream the video resampled to ``target_fps``: yields (source frame index, uint8 [H, W, 3]).

        Frames are picked as in :func:`resample_indices`; a target above the source rate repeats frames.
        """
        indices = resample_indices(self.num_frames, self.fps, target_fps)
        unique = sorted(set(indices))
        frames = self._frames(unique)
        current: tuple[int, np.ndarray] | None = None
        for index in indices:
            while current is None or current[0] != index:
                i, frame = next(frames)
                current = (i, self._to_array(frame, size))
            yield current


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
