"""Find the last occurrence of a visual query: in a stream of frames (:func:`locate`), or in a video file
(:func:`locate_video`: check the query against the video, search, write the outputs).

:func:`locate` searches frames at the model's rate for one query (an image, or a box on a frame) with a
:class:`~prvql.infer.predictor.Predictor` and turns the per-frame scores into a response track with a
:class:`~prvql.infer.postprocess.PostProcessor`.

:func:`locate_video` is

what ``prvql locate`` and the web app (``prvql app``) both run: the video is sampled at the model's rate
(``inference.fps``) with :meth:`VideoReader.iter_resampled`, searched with :func:`locate` and
written with :func:`prvql.infer.outputs.write_locate_outputs` (``track.json``, ``scores.png``, ``track.mp4``).
The query is a box on a frame of the video or a crop image, searched in the frames before a chosen frame (the VQ2D
question) or in the whole video.

The video is decoded once: the searched frames are kept (as decoded, uint8) for ``track.mp4`` while they fit in
``keep_frames_mb`` (:data:`KEEP_FRAMES_MB` = 512 MiB by default: about 85 frames of 1080p, 440 of 540x720, 770 of
640x360); a search that reads more is rendered by decoding the video a second time, so memory stays bounded.

Boxes are xyxy pixels of the video's frames.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from prvql.boxes import clip_boxes
from prvql.config import Config
from prvql.data.images import read_image
from prvql.data.transforms import prepare_query
from prvql.data.video import VideoReader
from prvql.errors import ConfigError, PRVQLError, VideoError
from prvql.infer.confidence import Verdict, judge
from prvql.infer.geometric import GeometricResult, check_settings
from prvql.infer.outputs import write_locate_outputs
from prvql.infer.postprocess import PostProcessor, TrackWindow, build_postprocessor
from prvql.infer.predictor import ClipQuery, EmbeddedFrames, Predictor, build_predictor
from prvql.infer.render import crop_box
from prvql.metrics.structures import ResponseTrack

log = logging.getLogger(__name__)

SEARCH_MODES = ("before", "anywhere")  # "last seen before this frame" (the VQ2D question), or the whole video

Progress = Callable[[str, int, int], None]  # (phase "search" | "render", done, total); may raise to cancel

KEEP_FRAMES_MB = 512  # searched frames kept for rendering instead of decoding the video again (module docstring)


@dataclass(frozen=True, eq=False)
class LocateResult:
    """What :func:`locate` found.

    Attributes:
        scores: float32 [N] occurrence score of each searched frame ``0 .. N-1``.
        boxes: float32 [N, 4] the best box of each frame, xyxy pixels of the searched frames.
        track: the response track (frames ``window.start .. window.end`` with their boxes).
        window: where the track is and why (peak, thresholds, smoothed curve).
        frame_size: (height, width) of the searched frames.
        query_image: uint8 [h, w, 3] the image the query was cut from.
        query_box: (x1, y1, x2, y2) the query's box in ``query_image`` pixels, clipped to it.
        geometric: the geometric verification's findings (``inference.geometric``), or None when it did not run.
        verdict: the answer's confidence and verdict (:mod:`prvql.infer.confidence`), or None when not judged.
    """

    scores: np.ndarray
    boxes: np.ndarray
    track: ResponseTrack
    window: TrackWindow
    frame_size: tuple[int, int]
    query_image: np.ndarray
    query_box: tuple[float, float, float, float]
    geometric: GeometricResult | None = None
    verdict: Verdict | None = None

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @property
    def crop(self) -> np.ndarray:
        """uint8 [h', w', 3] the query's pixels (``query_box`` of ``query_image``)."""
        return crop_box(self.query_image, self.query_box)


def locate(
    predictor: Predictor,
    postprocessor: PostProcessor,
    frames: Iterable[np.ndarray] | EmbeddedFrames,
    query_image: np.ndarray,
    query_box: Sequence[float] | None = None,
    *,
    num_frames: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    visual_crop_frame: int | None = None,
) -> LocateResult:
    """Search ``frames`` for the query and pick the response track.

    Args:
        predictor: scores every frame (its ``input_size`` sizes the query crop).
        postprocessor: turns the score curve into the track.
        frames: the frames to search, in order, each uint8 [H, W, 3] at the model's frame rate; read lazily. Or
            their features, embedded beforehand (a video memory: ``prvql.infer.memory``): the same result.
        query_image: uint8 [h, w, 3] the picture holding the query.
        query_box: (x1, y1, x2, y2) of the object in ``query_image`` pixels; ``None`` = the whole image.
        num_frames: how many of ``frames`` to search; ``None`` = ``len(frames)``.
        progress: called as ``progress(read, num_frames)`` once before the search (``read`` = 0) and each time the
            predictor takes a frame (it scores them in chunks of ``windows_per_batch`` windows, so ``read`` runs at
            most one chunk ahead of the frames scored). An exception it raises (e.g. to cancel) ends the search.
        visual_crop_frame: the index in ``frames`` of the frame ``query_image`` is, when the query was cut from a
            searched frame under the Ego4D protocol (``prvql demo``); used only by ``inference.after_visual_crop``.

    Returns:
        The per-frame scores and boxes and the track. If ``frames`` ends early, the frames there were are searched.

    Raises:
        PRVQLError: a box outside the query image, or nothing to search.
    """
    height, width = query_image.shape[:2]
    if query_box is None:
        query_box = (0.0, 0.0, float(width), float(height))
    box = clip_boxes(torch.tensor(query_box, dtype=torch.float64), height, width)
    if not (box[2] > box[0] and box[3] > box[1]):
        raise PRVQLError(f"query box {tuple(query_box)} lies outside the {width}x{height} query image")
    if num_frames is None and isinstance(frames, EmbeddedFrames):
        num_frames = frames.num_frames
    if num_frames is None:
        if not hasattr(frames, "__len__"):
            raise TypeError("locate: give num_frames when frames is a stream")
        num_frames = len(frames)
    if num_frames <= 0:
        raise PRVQLError("locate: no frames to search")

    size: list[tuple[int, int]] = []

    def watched(stream: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for read, frame in enumerate(stream, 1):
            if not size:
                size.append((int(frame.shape[0]), int(frame.shape[1])))
            if progress is not None:
                progress(read, num_frames)
            yield frame

    query = ClipQuery(
        "query", prepare_query(query_image, box, predictor.input_size, predictor.released_preprocessing), num_frames
    )
    if progress is not None:
        progress(0, num_frames)
    if isinstance(frames, EmbeddedFrames):
        size.append(frames.frame_size)
        searched: Iterable[np.ndarray] | EmbeddedFrames = _watched_embedded(frames, num_frames, progress)
    else:
        searched = watched(frames)
    result = predictor.predict(searched, query)
    if len(result) == 0:
        raise PRVQLError("locate: the frames ended before any could be searched")
    track, window = postprocessor(result.scores, result.boxes, visual_crop_frame)
    return LocateResult(
        scores=result.scores,
        boxes=result.boxes,
        track=track,
        window=window,
        frame_size=size[0],
        query_image=query_image,
        query_box=tuple(float(v) for v in box),
    )


def _watched_embedded(
    frames: EmbeddedFrames, num_frames: int, progress: Callable[[int, int], None] | None
) -> EmbeddedFrames:
    """``frames`` limited to ``num_frames``, calling ``progress(read, num_frames)`` as the predictor reads them."""

    def read(start: int, end: int, with_inputs: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = frames.read(start, end, with_inputs)
        if progress is not None:
            progress(end, num_frames)
        return out

    return EmbeddedFrames(min(num_frames, frames.num_frames), frames.frame_size, read)


class QueryError(PRVQLError):
    """A query field that does not fit the video: ``field`` is ``"frame"``, ``"search"`` or ``"box"`` (so a caller can
    name it as its user knows it), ``detail`` the reason; ``str()`` is ``"<field>: <detail>"``."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(detail, field=field)

    def __reduce__(self) -> tuple[type[QueryError], tuple[str, str]]:
        return type(self), (self.field, self.detail)


@dataclass(frozen=True)
class VideoInfo:
    """What the page needs to know of an uploaded video.

    Attributes:
        num_frames: source frames.
        fps: source frame rate.
        width, height: frame size in pixels.
        sources: searched frame k (at the model's rate) -> source frame index.
        times: searched frame k -> its time in seconds in the source video (its own frame times: exact for a
            variable-rate video).
    """

    num_frames: int
    fps: float
    width: int
    height: int
    sources: tuple[int, ...]
    times: tuple[float, ...]

    @classmethod
    def of(cls, reader: VideoReader, model_fps: float) -> VideoInfo:
        """The info of an open video; one without a frame rate or with a single frame raises :class:`VideoError`."""
        if reader.fps <= 0:
            raise VideoError(f"{reader.path.name}: the video does not state a frame rate")
        if reader.num_frames < 2:
            raise VideoError(f"{reader.path.name}: a single picture, not a video (give it as the crop image instead)")
        sources = tuple(reader.resample(model_fps))  # by time for a variable-rate video
        times = tuple(reader.times[i] for i in sources)
        return cls(reader.num_frames, reader.fps, reader.width, reader.height, sources, times)

    def to_dict(self) -> dict:
        return {
            "num_frames": self.num_frames,
            "fps": self.fps,
            "width": self.width,
            "height": self.height,
            "duration": self.num_frames / self.fps,
            "searched_frames": len(self.sources),
        }


@dataclass(frozen=True)
class Query:
    """What to look for and where.

    Attributes:
        frame: source frame index: the frame the box is drawn on, and the question's time for ``search="before"``.
        search: ``"before"`` (frames before ``frame``) or ``"anywhere"`` (the whole video).
        box: (x1, y1, x2, y2) on ``frame`` in pixels, clipped to it; ``None`` when ``crop`` is the query.
        crop: an image file whose whole picture is the object.
    """

    frame: int
    search: str
    box: tuple[float, float, float, float] | None = None
    crop: Path | None = None


def parse_query(
    info: VideoInfo,
    frame: object,
    search: object,
    box: object,
    crop: Path | None,
) -> tuple[Query, int]:
    """Check a request's fields against the video; returns the query and the number of frames it searches.

    Args:
        info: the video.
        frame, search, box, crop: as in :class:`Query`, unchecked (e.g. straight from JSON).

    Raises:
        QueryError: one line naming the field, e.g. a zero-size box or a box outside the frame.
    """
    if isinstance(frame, bool) or not isinstance(frame, int) or not 0 <= frame < info.num_frames:
        raise QueryError("frame", f"must be a frame index in [0, {info.num_frames}) (got {frame!r})")
    if search not in SEARCH_MODES:
        raise QueryError("search", f"must be one of {', '.join(SEARCH_MODES)} (got {search!r})")
    clipped = None
    if crop is None:
        if box is None:
            raise QueryError("box", "draw a box around the object (or give a crop image)")
        if (
            not isinstance(box, list | tuple)
            or len(box) != 4
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in box)
            or not np.all(np.isfinite(box))
        ):
            raise QueryError("box", f"expected four finite numbers x1, y1, x2, y2 in pixels (got {box!r})")
        x1, y1, x2, y2 = (float(v) for v in box)
        if x2 <= x1 or y2 <= y1:
            raise QueryError("box", f"must have x2 > x1 and y2 > y1 (got {list(box)})")
        t = clip_boxes(torch.tensor([x1, y1, x2, y2], dtype=torch.float64), info.height, info.width)
        if not (t[2] > t[0] and t[3] > t[1]):
            raise QueryError("box", f"{list(box)} lies outside the {info.width}x{info.height} frame")
        clipped = tuple(float(v) for v in t)
    if search == "before":
        searched = sum(1 for s in info.sources if s < frame)
        if searched == 0:
            raise QueryError("frame", f"no frame comes before frame {frame} at the model's rate; pick a later frame")
    else:
        searched = len(info.sources)
    return Query(frame=frame, search=search, box=clipped, crop=crop), searched


class _KeptFrames:
    """Passes on the frames of ``(index, frame)`` pairs and keeps them while their total size is at most
    ``limit_bytes``; once a frame would pass the limit, none are kept (``frames`` is None)."""

    def __init__(self, pairs: Iterable[tuple[int, np.ndarray]], limit_bytes: int) -> None:
        self.pairs = pairs
        self.limit_bytes = limit_bytes
        self.frames: list[np.ndarray] | None = []
        self.bytes = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        for _, frame in self.pairs:
            if self.frames is not None:
                self.bytes += frame.nbytes
                if self.bytes <= self.limit_bytes:
                    self.frames.append(frame)
                else:
                    self.frames = None
            yield frame


def _counted(frames: Iterable[np.ndarray], total: int, progress: Progress | None) -> Iterator[np.ndarray]:
    for done, frame in enumerate(frames, 1):
        if progress is not None:
            progress("render", min(done, total), total)
        yield frame


@dataclass(frozen=True)
class LocatedVideo:
    """What :func:`locate_video` found and wrote.

    Attributes:
        result: the search's result (track and per-frame curve; frames at the model's rate).
        info: the video.
        written: the files written.
    """

    result: LocateResult
    info: VideoInfo
    written: list[Path]


def apply_geometric(
    cfg: Config,
    result: LocateResult,
    frames: Callable[[list[int]], list[np.ndarray]],
    *,
    crop_frame: int | None = None,
    find_source: bool = False,
) -> LocateResult:
    """``result`` after geometric verification (``inference.geometric``, :mod:`prvql.infer.geometric`): the track
    moved to the verified frames with refined boxes when a candidate verifies, else unchanged; ``geometric`` filled.
    The crop's own frame and its sighting run are never the answer (``inference.geometric.skip_crop_source``).

    Args:
        cfg: the config (``cfg.inference.geometric``).
        result: the search's result.
        frames: reads searched frames by index -> uint8 [H, W, 3] frames.
        crop_frame: the searched frame the query box was drawn on, when it is one.
        find_source: the query is a crop image: find the frame it was cut from, if any, by its pixels.
    """
    from prvql.infer.geometric import refine_track

    window = result.window
    found = refine_track(
        cfg.inference.geometric,
        result.crop,
        window.smoothed,
        window.peaks,
        (window.start, window.end, result.track.boxes),
        frames,
        crop_frame=crop_frame,
        find_source=find_source,
    )
    if not found.verified:
        return dataclasses.replace(result, geometric=found)
    track = ResponseTrack(np.arange(found.start, found.end + 1), found.boxes, result.track.score)
    peak = max(range(found.start, found.end + 1), key=lambda i: found.inliers.get(i, 0))
    moved = dataclasses.replace(
        window, start=found.start, end=found.end, peak=peak, peak_score=float(window.smoothed[peak])
    )
    return dataclasses.replace(result, track=track, window=moved, geometric=found)


def crop_origin(info: VideoInfo, query_info: dict) -> tuple[int | None, bool]:
    """Where the query crop came from, for geometric verification: (the searched frame a box query was drawn on, if
    it is one: a ``search: anywhere`` query on a frame at the model's rate; whether the query is a crop image, which
    may have been cut from a searched frame). ``query_info``: ``track.json``'s ``query`` field."""
    drawn_on = query_info.get("frame") if query_info.get("search") == "anywhere" else None
    crop_frame = info.sources.index(drawn_on) if drawn_on in info.sources else None
    return crop_frame, "image" in query_info


def with_verdict(cfg: Config, result: LocateResult) -> LocateResult:
    """``result`` with its confidence and verdict (``inference.confidence``, :mod:`prvql.infer.confidence`); with
    ``inference.score: confidence`` the track's score becomes that confidence."""
    verdict = judge(cfg.inference.confidence, result.scores, result.window, result.geometric)
    track = result.track
    if cfg.inference.score == "confidence":
        track = ResponseTrack(track.frames, track.boxes, verdict.confidence)
    return dataclasses.replace(result, verdict=verdict, track=track)


def verify_judge_write(
    cfg: Config,
    result: LocateResult,
    info: VideoInfo,
    frames_at: Callable[[list[int]], list[np.ndarray]],
    rendered: Iterable[np.ndarray] | None,
    out_dir: Path,
    *,
    fps: float,
    name: str,
    query_info: dict,
    show_query_frame: bool,
    progress: Progress | None,
) -> LocatedVideo:
    """The end of a search, shared by :func:`locate_video` and :func:`prvql.infer.memory.locate_memory`: geometric
    verification (if on), the verdict, then ``track.json``, ``scores.png`` and ``track.mp4``.

    Args:
        frames_at: reads searched frames by index -> uint8 [H, W, 3] frames (for geometric verification).
        rendered: the searched frames again, in order, for ``track.mp4``; ``None`` = no video.
        fps: the searched frames' rate (``track.mp4`` plays at it).
        name, query_info: ``track.json``'s ``video`` and ``query`` fields; ``name``'s file name titles the plot.
            ``query_info`` also tells geometric verification where the crop came from (:func:`crop_origin`).
    """
    if cfg.inference.geometric.enabled:
        crop_frame, find_source = crop_origin(info, query_info)
        result = apply_geometric(cfg, result, frames_at, crop_frame=crop_frame, find_source=find_source)
    result = with_verdict(cfg, result)
    written = write_locate_outputs(
        result,
        None if rendered is None else _counted(rendered, len(result), progress),
        out_dir,
        fps,
        source_frames=info.sources,
        source_fps=info.fps,
        times=info.times,
        info={"video": name, "query": query_info},
        show_query_frame=show_query_frame,
        title=Path(name).name,
    )
    return LocatedVideo(result, info, written)


def locate_video(
    cfg: Config,
    model: nn.Module,
    device: torch.device,
    video: Path,
    query: Query,
    out_dir: Path,
    *,
    name: str,
    render_video: bool = True,
    progress: Progress | None = None,
    keep_frames_mb: float = KEEP_FRAMES_MB,
) -> LocatedVideo:
    """Search ``video`` for ``query``; write ``track.json``, ``scores.png`` and (``render_video``) ``track.mp4``
    into ``out_dir``, all or none of them.

    Args:
        cfg, model, device: the trained model (``prvql.infer.trained_model.load_inference_model``).
        video: the video file.
        query: what to look for (checked here with :func:`parse_query`).
        out_dir: the output folder.
        name: the video as the user knows it (``track.json``'s ``video`` field; its file name titles the plot).
        render_video: write ``track.mp4``.
        progress: called with ("search", frames taken by the search, frames to search), then ("render", frames
            drawn, frames to draw); an exception it raises stops the work before any output is published.
        keep_frames_mb: the most memory the searched frames may take to be kept for ``track.mp4``; a search that
            reads more decodes the video again to render it (see the module docstring).
    """
    fps = float(cfg.inference.fps)
    if fps <= 0:
        raise ConfigError(f"inference.fps: must be > 0 (got {cfg.inference.fps})")
    check_settings(cfg.inference.geometric)
    with VideoReader(video) as reader:
        info = VideoInfo.of(reader, fps)
        query, searched = parse_query(info, query.frame, query.search, query.box, query.crop)
        if query.crop is not None:
            crop_frame, crop_box = read_image(query.crop, "query image"), None
            query_info: dict = {"image": query.crop.name}
        else:
            crop_frame, crop_box = reader.read([query.frame])[0], query.box
            query_info = {"frame": query.frame, "time": reader.times[query.frame], "box": list(query.box)}
        query_info["search"] = query.search
        log.debug(
            "%s: %d frames at %.3f fps, %dx%d; searching %d of its %d frames at %g fps (%s)",
            name,
            info.num_frames,
            info.fps,
            info.width,
            info.height,
            searched,
            len(info.sources),
            fps,
            query.search,
        )
        searched_frames = _KeptFrames(reader.iter_resampled(fps), int(keep_frames_mb * 2**20) if render_video else 0)
        result = locate(
            build_predictor(cfg, model, device),
            build_postprocessor(cfg.inference),
            iter(searched_frames),
            crop_frame,
            crop_box,
            num_frames=searched,
            progress=None if progress is None else lambda done, total: progress("search", done, total),
        )
        kept = searched_frames.frames

        def frames_at(indices: list[int]) -> list[np.ndarray]:
            return (
                [kept[i] for i in indices]
                if kept is not None
                else list(reader.read([info.sources[i] for i in indices]))
            )

        rendered = None
        if render_video:
            rendered = (frame for _, frame in reader.iter_resampled(fps)) if kept is None else kept
        return verify_judge_write(
            cfg,
            result,
            info,
            frames_at,
            rendered,
            out_dir,
            fps=fps,
            name=name,
            query_info=query_info,
            show_query_frame=query.crop is None,
            progress=progress,
        )
