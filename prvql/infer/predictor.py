"""Inference over whole clips: the best anchor's score and box for every searched frame of every query.

The :class:`Predictor` streams a clip window by window. For each chunk of ``windows_per_batch`` window starts it
decodes only the frames not seen yet, embeds them once (frozen backbone, and for PRVQL the channel reduction too),
and then runs the refinement stages for every query whose search range reaches that chunk, on the cached
embeddings. Only one chunk of backbone features
is alive at a time, so memory does not grow with clip length beyond the per-frame results (a score and a box per
frame and query). Within one call the backbone sees every decoded frame exactly once, plus each query crop once.

Windows have the training length T and start at ``0, T - overlap, 2 (T - overlap), ...`` until they cover
frames ``0 .. num_frames - 1``. A window that runs past the last searched frame is padded by repeating that frame's
features (which equals repeating the frame, since the backbone is per frame); the padded positions' outputs are
discarded. With ``window_overlap > 0`` a frame is scored by several windows: its score is the mean (or the max,
``overlap_reduce="max"``) of their scores and its box comes from the window that scored it highest.

With ``verification`` (colour verification, not in the paper: :mod:`prvql.infer.verification`) the colours inside
each window's best box are compared with the query's; a frame keeps the distance of the box it reports, and its
final score combines the (reduced) model score with that distance. The model inputs of the buffered frames are
then kept beside their features.

Each window is independent, as in the released code: temporal attention and the knowledge generation modules
never see frames of another window. Only the final stage is used.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from prvql.boxes import denormalize_boxes, normalize_boxes
from prvql.config import Config, VerificationConfig
from prvql.data.transforms import prepare_frames
from prvql.errors import PRVQLError
from prvql.infer.score_cache import FrameScores
from prvql.infer.verification import colour_descriptors, colour_distance, query_descriptors, verified_scores
from prvql.model.head import top_boxes

logger = logging.getLogger(__name__)

OVERLAP_REDUCTIONS = ("mean", "max")


@dataclass
class ClipQuery:
    """One query to search in a clip.

    Attributes:
        key: name of the result in :meth:`Predictor.predict_clip`'s output.
        image: [3, S, S] query crop as made by ``prvql.data.prepare_query``.
        num_frames: frames ``0 .. num_frames - 1`` of the clip are searched (Ego4D: the query frame).
        output_size: (height, width) of the frame the boxes are reported in, e.g. the annotation's original
            resolution when the clip was extracted smaller; ``None`` = the decoded frame size. The aspect ratio
            must be the decoded frame's.
    """

    key: str
    image: Tensor
    num_frames: int
    output_size: tuple[int, int] | None = None


@dataclass(frozen=True)
class EmbeddedFrames:
    """Frames embedded beforehand (a video memory, ``prvql.infer.memory``): searched instead of decoded frames.

    Attributes:
        num_frames: frames ``0 .. num_frames - 1`` are available.
        frame_size: (height, width) of the original frames (the boxes' pixels).
        read: ``read(start, end, with_inputs)`` -> (features [end - start, C, h, w] as :meth:`Predictor.embed_frames`
            gives them, model inputs [end - start, 3, S, S] when ``with_inputs`` (colour verification) else None).
    """

    num_frames: int
    frame_size: tuple[int, int]
    read: Callable[[int, int, bool], tuple[Tensor, Tensor | None]]


@dataclass
class PredictorStats:
    """Counters and timings accumulated over a Predictor's calls (timings are exact only with ``sync_timing``)."""

    backbone_calls: int = 0
    backbone_images: int = 0
    stage_calls: int = 0
    stage_windows: int = 0
    frames_decoded: int = 0
    max_buffered_frames: int = 0  # most frames whose backbone features were held at once
    backbone_seconds: float = 0.0
    stage_seconds: float = 0.0
    decode_seconds: float = 0.0  # decoding + preprocessing


@dataclass
class _Accumulator:
    """Running per-frame reduction for one query; boxes normalised xyxy until the end."""

    num_frames: int
    reduce: str
    total: np.ndarray = field(init=False)
    count: np.ndarray = field(init=False)
    best: np.ndarray = field(init=False)
    boxes: np.ndarray = field(init=False)
    distances: np.ndarray = field(init=False)  # colour distance of each frame's box (verification only)

    def __post_init__(self) -> None:
        self.total = np.zeros(self.num_frames, np.float64)
        self.count = np.zeros(self.num_frames, np.int64)
        self.best = np.full(self.num_frames, -np.inf, np.float64)
        self.boxes = np.zeros((self.num_frames, 4), np.float32)
        self.distances = np.zeros(self.num_frames, np.float32)

    def add(self, start: int, scores: np.ndarray, boxes: np.ndarray, distances: np.ndarray | None = None) -> None:
        """Add one window's outputs for frames ``start .. start + len(scores) - 1``: [n] scores, [n, 4] boxes and,
        with verification, [n] colour distances of those boxes."""
        sl = slice(start, start + scores.shape[0])
        self.total[sl] += scores
        self.count[sl] += 1
        better = scores > self.best[sl]
        self.best[sl] = np.where(better, scores, self.best[sl])
        self.boxes[sl][better] = boxes[better]
        if distances is not None:
            self.distances[sl][better] = distances[better]

    def result(self, height: int, width: int, verification: VerificationConfig | None = None) -> FrameScores:
        if (self.count == 0).any():
            raise RuntimeError("a searched frame was not covered by any window")
        scores = self.best if self.reduce == "max" else self.total / self.count
        boxes = denormalize_boxes(torch.from_numpy(self.boxes), height, width).numpy()
        if verification is None:
            return FrameScores(scores=scores.astype(np.float32), boxes=boxes.astype(np.float32))
        v = verification
        verified = verified_scores(scores, self.distances, v.score_weight, v.colour_weight, v.bias)
        return FrameScores(verified, boxes.astype(np.float32), self.distances.copy())


def window_starts(num_frames: int, window: int, stride: int) -> list[int]:
    """Start frames of the windows covering ``0 .. num_frames - 1``: ``0, stride, ...`` until the end is reached.

    ``ceil(num_frames / window)`` windows without overlap; none for ``num_frames <= 0``.
    """
    if num_frames <= 0:
        return []
    count = 1 + math.ceil(max(num_frames - window, 0) / stride)
    return [k * stride for k in range(count)]


class Predictor:
    """Per-frame scores and boxes of every query of a clip, with the backbone run once per frame.

    Args:
        model: a model with ``extract_features(images)`` and ``forward_features(frame_feats, query_feats)``, put in
            eval mode here. If it also has ``embed(images)`` and ``forward_embedded(video, query)`` (PRVQL), those
            are used instead: each frame and query crop is embedded (backbone + channel reduction) once and the
            embeddings are shared by every window and query.
        num_frames: T, the training window length.
        input_size: S, the square model input side.
        pad_value: value of the pad-to-square band (the training one).
        released_preprocessing: prepare frames and queries as the released code does (``prvql.data.transforms``).
        windows_per_batch: windows per stage forward pass; also the number of window starts per streamed chunk.
        window_overlap: frames shared by consecutive windows (0 = the released code's non-overlapping windows).
        overlap_reduce: ``"mean"`` or ``"max"`` of a frame's scores over the windows that cover it.
        stage_mean: score with the mean of the stages' anchor logits; ``PRVQL.forward_embedded``.
        verification: colour verification settings (module docstring), or None (off, the paper).
        device: where the model runs.
        bf16: bfloat16 autocast (an approximation: CUDA, or a CPU with bf16 units such as AMX; see benchmarks).
        sync_timing: synchronise CUDA around timed sections so ``stats`` timings are exact (slower).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        num_frames: int,
        input_size: int,
        pad_value: float,
        released_preprocessing: bool = False,
        windows_per_batch: int = 4,
        window_overlap: int = 0,
        overlap_reduce: str = "mean",
        stage_mean: bool = False,
        verification: VerificationConfig | None = None,
        device: str | torch.device = "cpu",
        bf16: bool = False,
        sync_timing: bool = False,
    ) -> None:
        if num_frames < 1 or windows_per_batch < 1:
            raise PRVQLError(
                f"inference: num_frames ({num_frames}) and windows_per_batch ({windows_per_batch}) must be >= 1"
            )
        if not 0 <= window_overlap < num_frames:
            raise PRVQLError(f"inference.window_overlap: must be in [0, {num_frames - 1}] (got {window_overlap})")
        if overlap_reduce not in OVERLAP_REDUCTIONS:
            raise PRVQLError(f"inference.overlap_reduce: must be one of {OVERLAP_REDUCTIONS} (got {overlap_reduce!r})")
        self._embedded = hasattr(model, "embed") and hasattr(model, "forward_embedded")
        if stage_mean and not (self._embedded and hasattr(model, "stages")):
            raise PRVQLError("inference.stage_mean: this model has no refinement stages")
        # passed only when set, so any model with the plain forward_embedded(video, query) still works; PRVQL
        # regresses each frame's best anchor only (top=True), the only box read here
        self.stage_options = {"stage_mean": True} if stage_mean else {}
        if self._embedded and hasattr(model, "stages"):
            self.stage_options["top"] = True
        if verification is not None:
            _check_verification(verification)
        self.verification = verification
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.num_frames = num_frames
        self.input_size = input_size
        self.pad_value = pad_value
        self.released_preprocessing = released_preprocessing
        self.windows_per_batch = windows_per_batch
        self.stride = num_frames - window_overlap
        self.overlap_reduce = overlap_reduce
        self.bf16 = bf16
        self.sync_timing = sync_timing
        self.stats = PredictorStats()

    # ------------------------------------------------------------------------------------------------------------
    # public API

    @torch.inference_mode()
    def predict_clip(
        self, frames: Iterable[np.ndarray] | EmbeddedFrames, queries: Sequence[ClipQuery]
    ) -> dict[str, FrameScores]:
        """Search one clip for several queries, sharing the backbone features of its frames.

        Args:
            frames: the clip's frames in order from frame 0, each uint8 [H, W, 3] (e.g. ``VideoReader.iter_frames``);
                read lazily, only as far as the largest ``num_frames``. Or :class:`EmbeddedFrames`: their features
                are read instead of decoding and embedding frames (same results, without the backbone).
            queries: the queries; keys must be distinct.

        Returns:
            key -> :class:`FrameScores` over frames ``0 .. num_frames - 1``. If the clip has fewer frames than a
            query's ``num_frames``, that query is searched over the frames that exist (a warning is logged).
        """
        keys = [q.key for q in queries]
        if len(set(keys)) != len(keys):
            raise ValueError("predict_clip: query keys must be distinct")
        empty = FrameScores(np.zeros(0, np.float32), np.zeros((0, 4), np.float32))
        active = [q for q in queries if q.num_frames > 0]
        results = {q.key: empty for q in queries if q.num_frames <= 0}
        if not active:
            return results

        query_images = torch.stack([q.image for q in active]).to(self.device)  # [Q, 3, S, S]
        query_feats = self._backbone(query_images)  # [Q, C, h, w]
        v = self.verification
        query_colours = None if v is None else query_descriptors(query_images, v.query_shrink, v.grid)  # [Q, 6]
        lengths = [q.num_frames for q in active]
        stream = _FrameStream(frames if isinstance(frames, EmbeddedFrames) else iter(frames), self)
        accumulators: list[_Accumulator | None] = [None] * len(active)
        chunk = 0
        while True:
            ks = range(chunk * self.windows_per_batch, (chunk + 1) * self.windows_per_batch)
            wanted = self._windows(ks, lengths)
            if not wanted:
                break
            stream.advance(ks[0] * self.stride, min(max(s + self.num_frames for _, s in wanted), max(lengths)))
            if stream.exhausted_at is not None and stream.exhausted_at < max(lengths):
                lengths = self._truncate(lengths, stream.exhausted_at, active)
                wanted = self._windows(ks, lengths)
            for i in {i for i, _ in wanted}:
                if accumulators[i] is None:
                    accumulators[i] = _Accumulator(lengths[i], self.overlap_reduce)
            for b in range(0, len(wanted), self.windows_per_batch):
                batch = wanted[b : b + self.windows_per_batch]
                self._run_windows(batch, lengths, stream, query_feats, query_colours, accumulators)
            chunk += 1

        height, width = stream.frame_size or (1, 1)
        for q, acc, n in zip(active, accumulators, lengths, strict=True):
            if acc is None or n == 0:
                results[q.key] = empty
                continue
            out_h, out_w = q.output_size or (height, width)
            results[q.key] = acc.result(out_h, out_w, self.verification)
        return {k: results[k] for k in keys}

    def predict(self, frames: Iterable[np.ndarray] | EmbeddedFrames, query: ClipQuery) -> FrameScores:
        """One query: :meth:`predict_clip` with a single entry."""
        return self.predict_clip(frames, [query])[query.key]

    @torch.inference_mode()
    def embed_frames(self, frames: np.ndarray) -> tuple[Tensor, Tensor]:
        """uint8 [N, H, W, 3] frames -> (features [N, C, h, w] the stages take, model inputs [N, 3, S, S])."""
        t0 = time.perf_counter()
        images = prepare_frames(
            torch.from_numpy(frames).to(self.device), self.input_size, self.pad_value, self.released_preprocessing
        )
        self.stats.decode_seconds += time.perf_counter() - t0
        return self._backbone(images), images

    # ------------------------------------------------------------------------------------------------------------
    # internals

    def _windows(self, ks: range, lengths: list[int]) -> list[tuple[int, int]]:
        """(query index, start frame) of windows ``ks`` that the queries with these search lengths need."""
        counts = [len(window_starts(n, self.num_frames, self.stride)) for n in lengths]
        return [(i, k * self.stride) for k in ks for i, count in enumerate(counts) if k < count]

    def _truncate(self, lengths: list[int], available: int, active: Sequence[ClipQuery]) -> list[int]:
        out = []
        for q, n in zip(active, lengths, strict=True):
            if n > available:
                logger.warning("query %s: clip has %d frames, fewer than the %d to search", q.key, available, n)
            out.append(min(n, available))
        return out

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.bf16:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _sync(self) -> None:
        if self.sync_timing and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _backbone(self, images: Tensor) -> Tensor:
        """[N, 3, S, S] -> [N, C, h, w] backbone features, or embeddings (counted in ``stats``)."""
        self._sync()
        t0 = time.perf_counter()
        with self._autocast():
            feats = self.model.embed(images) if self._embedded else self.model.extract_features(images)
        self._sync()
        self.stats.backbone_seconds += time.perf_counter() - t0
        self.stats.backbone_calls += 1
        self.stats.backbone_images += images.shape[0]
        return feats

    def _run_windows(
        self,
        windows: list[tuple[int, int]],
        lengths: list[int],
        stream: _FrameStream,
        query_feats: Tensor,
        query_colours: Tensor | None,
        accumulators: list[_Accumulator | None],
    ) -> None:
        """One stage forward over windows ``(query index, start frame)``; results go to the accumulators.
        ``query_colours``: [Q, 6] colour descriptors of the queries (verification only)."""
        starts = torch.tensor([s for _, s in windows])[:, None]  # [B, 1]
        last = torch.tensor([lengths[i] - 1 for i, _ in windows])[:, None]  # [B, 1]
        frame_ids = torch.minimum(starts + torch.arange(self.num_frames), last)  # [B, T], padded with the last frame
        frame_feats = stream.features(frame_ids)  # [B, T, C, h, w]
        query = query_feats[[i for i, _ in windows]]  # [B, C, h, w]
        self._sync()
        t0 = time.perf_counter()
        with self._autocast():
            if self._embedded:
                out = self.model.forward_embedded(frame_feats, query, **self.stage_options)
            else:
                out = self.model.forward_features(frame_feats, query)
        if "top_boxes" in out:  # [B, T], [B, T, 4] with x1 <= x2, y1 <= y2
            best_logit, best_boxes = out["top_logits"].float(), out["top_boxes"].float()
        else:
            best_logit, best_boxes = top_boxes(out["logits"].float(), out["boxes"].float())
        scores = torch.sigmoid(best_logit)
        distances = None
        if query_colours is not None:
            height, width = stream.frame_size
            inside = normalize_boxes(denormalize_boxes(best_boxes, height, width), height, width)  # the reported box
            distances = self._colour_distances(stream.images(frame_ids), inside, query_colours, windows)
        scores, best_boxes = scores.cpu().numpy(), best_boxes.cpu().numpy()
        self._sync()
        self.stats.stage_seconds += time.perf_counter() - t0
        self.stats.stage_calls += 1
        self.stats.stage_windows += len(windows)
        for b, (i, s) in enumerate(windows):
            valid = min(self.num_frames, lengths[i] - s)
            accumulators[i].add(
                s, scores[b, :valid], best_boxes[b, :valid], None if distances is None else distances[b, :valid]
            )

    def _colour_distances(
        self, images: Tensor, boxes: Tensor, query_colours: Tensor, windows: list[tuple[int, int]]
    ) -> np.ndarray:
        """[B, T, 3, S, S] window inputs and [B, T, 4] normalised boxes -> [B, T] colour distances of the boxes to
        their window's query ([Q, 6] descriptors)."""
        v = self.verification
        b, t = boxes.shape[:2]
        described = colour_descriptors(images.flatten(0, 1), boxes.flatten(0, 1), v.box_shrink, v.grid)  # [B*T, 6]
        query = query_colours[[i for i, _ in windows]].cpu().repeat_interleave(t, dim=0)  # [B*T, 6]
        return colour_distance(described, query, v.lightness_weight).view(b, t).numpy()


def _check_verification(v: VerificationConfig) -> None:
    """Refuse verification settings that cannot work: one PRVQLError line naming the key."""
    checks = [
        ("score_weight", v.score_weight, math.isfinite(v.score_weight), "a finite number"),
        ("colour_weight", v.colour_weight, math.isfinite(v.colour_weight), "a finite number"),
        ("bias", v.bias, math.isfinite(v.bias), "a finite number"),
        ("box_shrink", v.box_shrink, 0 < v.box_shrink <= 1, "in (0, 1]"),
        ("query_shrink", v.query_shrink, 0 < v.query_shrink <= 1, "in (0, 1]"),
        ("lightness_weight", v.lightness_weight, math.isfinite(v.lightness_weight) and v.lightness_weight >= 0, ">= 0"),
        ("grid", v.grid, v.grid >= 1, ">= 1"),
    ]
    for key, value, ok, rule in checks:
        if not ok:
            raise PRVQLError(f"inference.verification.{key}: must be {rule} (got {value!r})")


class _FrameStream:
    """Decodes frames lazily and keeps the backbone features of a sliding range ``[start, end)`` of them."""

    def __init__(self, frames: Iterator[np.ndarray] | EmbeddedFrames, predictor: Predictor) -> None:
        self.frames = frames
        self.predictor = predictor
        self.start = 0
        self.end = 0
        self.feats: Tensor | None = None  # [end - start, C, h, w]
        self.inputs: Tensor | None = None  # [end - start, 3, S, S] model inputs (kept for colour verification only)
        self.frame_size: tuple[int, int] | None = None
        self.exhausted_at: int | None = None

    def advance(self, start: int, end: int) -> None:
        """Drop features of frames before ``start``; decode and embed frames up to ``end`` (exclusive)."""
        if self.feats is not None and start > self.start:
            self.feats = self.feats[start - self.start :]
            if self.inputs is not None:
                self.inputs = self.inputs[start - self.start :]
            self.start = start
        if end <= self.end or self.exhausted_at is not None:
            return
        if isinstance(self.frames, EmbeddedFrames):
            self._read_embedded(end)
            return
        p = self.predictor
        t0 = time.perf_counter()
        decoded = []
        for _ in range(end - self.end):
            frame = next(self.frames, None)
            if frame is None:
                self.exhausted_at = self.end + len(decoded)
                break
            decoded.append(np.asarray(frame))
        p.stats.frames_decoded += len(decoded)
        if not decoded:
            return
        if self.frame_size is None:
            self.frame_size = (int(decoded[0].shape[0]), int(decoded[0].shape[1]))
        p.stats.decode_seconds += time.perf_counter() - t0
        self._add(*p.embed_frames(np.stack(decoded)))

    def _read_embedded(self, end: int) -> None:
        """Take frames ``[self.end, end)`` from :class:`EmbeddedFrames` (as many as it has)."""
        source = self.frames
        self.frame_size = source.frame_size
        stop = min(end, source.num_frames)
        if stop < end:
            self.exhausted_at = stop
        if stop <= self.end:
            return
        feats, images = source.read(self.end, stop, self.predictor.verification is not None)
        self._add(feats.to(self.predictor.device), images)

    def _add(self, feats: Tensor, images: Tensor | None) -> None:
        """Append features [n, C, h, w] (and model inputs [n, 3, S, S], kept for verification) of the next frames."""
        p = self.predictor
        self.feats = feats if self.feats is None else torch.cat([self.feats, feats])
        if p.verification is not None:
            self.inputs = images if self.inputs is None else torch.cat([self.inputs, images])
        p.stats.max_buffered_frames = max(p.stats.max_buffered_frames, self.feats.shape[0])
        if self.end == 0:
            self.start = 0
        self.end += feats.shape[0]

    def features(self, frame_ids: Tensor) -> Tensor:
        """Absolute frame indices [...] (all in ``[start, end)``) -> features [..., C, h, w]; consecutive indices
        (unpadded, non-overlapping windows) give a view instead of a copy."""
        local = frame_ids - self.start
        first = int(local.flatten()[0])
        if torch.equal(local.flatten(), torch.arange(first, first + local.numel())):
            return self.feats[first : first + local.numel()].view(*local.shape, *self.feats.shape[1:])
        return self.feats[local.to(self.feats.device)]

    def images(self, frame_ids: Tensor) -> Tensor:
        """Absolute frame indices [...] (all in ``[start, end)``) -> model inputs [..., 3, S, S] (verification)."""
        return self.inputs[(frame_ids - self.start).to(self.inputs.device)]


def build_predictor(
    cfg: Config, model: nn.Module, device: str | torch.device = "cpu", sync_timing: bool = False
) -> Predictor:
    """The Predictor for ``cfg``: reads ``cfg.inference``, ``cfg.model`` (T, S) and ``cfg.data.pad_value``."""
    inf = cfg.inference
    return Predictor(
        model,
        num_frames=cfg.model.num_frames,
        input_size=cfg.model.input_size,
        pad_value=cfg.data.pad_value,
        released_preprocessing=cfg.data.released_preprocessing,
        windows_per_batch=inf.windows_per_batch,
        window_overlap=inf.window_overlap,
        overlap_reduce=inf.overlap_reduce,
        stage_mean=inf.stage_mean,
        verification=inf.verification if inf.verification.enabled else None,
        device=device,
        bf16=inf.bf16,
        sync_timing=sync_timing,
    )
