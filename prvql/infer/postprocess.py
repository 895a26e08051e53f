"""Per-frame scores -> one response track (paper App. B, the released code's ``task_inference_results``).

Given the occurrence score of every searched frame ``0 .. N-1`` (the frames before the query frame):

1. smooth with a median filter (``scipy.signal.medfilt``, zero-padded ends, also when the curve is shorter than
   the kernel; kernel 1 = no smoothing);
2. find the local peaks (``scipy.signal.find_peaks``; a flat-topped peak counts once, at the middle of its plateau);
3. keep the peaks scoring more than ``peak_ratio`` times the highest peak, and take the MOST RECENT of them;
4. grow a contiguous window around it while the smoothed score is >= ``track_ratio`` times the peak's score;
5. the response track is the per-frame boxes on that window.

``reach_ends=True`` (default) lets steps 2 and 4 reach both ends of the search range: a maximum at frame 0 or at the
last frame counts as a peak (the signal is padded with -inf before ``find_peaks``) and the window may grow onto
frame 0 and onto frame N-1. ``reach_ends=False`` reproduces the released code exactly: ``find_peaks`` never
reports an end frame; without any peak the peak is frame 0 if s[0] > s[-1], else frame N-1; the backward growth
stops at frame 1 and the forward growth at frame N-2 (neither end frame is added unless it is the peak itself).

``after_visual_crop=True`` (``inference.after_visual_crop``; not in the paper, off by default) applies a rule of the
Ego4D VQ2D protocol: the visual crop is cut from a sighting of the object *outside* the response track, and the
response track is the last sighting before the query frame. So when the crop's frame ``c`` lies among the searched
frames, the answer comes after it: step 3 drops the peaks at or before ``c`` and step 4 does not grow the window
onto them. This uses an input of the task (the crop's frame number), not the pixels. It holds only for queries
annotated under that protocol (Ego4D, ``prvql synth`` episodes, ``prvql demo``), never for a crop cut from the last
sighting itself.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.signal import find_peaks, medfilt

from prvql.config import ConfidenceConfig, InferenceConfig
from prvql.errors import ConfigError
from prvql.metrics.structures import ResponseTrack

SCORE_MODES = ("constant", "peak", "confidence")


@dataclass(frozen=True)
class TrackWindow:
    """Where the response track is and why, for plotting (``prvql locate``) and logging.

    Attributes:
        start: first frame of the track (inclusive).
        end: last frame of the track (inclusive).
        peak: the chosen (most recent surviving) peak.
        peak_score: smoothed score at ``peak``.
        peak_threshold: peaks must score above this (``peak_ratio`` x highest peak).
        track_threshold: the window keeps frames scoring at least this (``track_ratio`` x ``peak_score``).
        peaks: int64 [P] every peak found, surviving or not (from ``first_frame`` on, see find_track_window).
        smoothed: float64 [N] the smoothed scores.
        first_frame: the frames before it were ruled out (``after_visual_crop``); 0 = none.
    """

    start: int
    end: int
    peak: int
    peak_score: float
    peak_threshold: float
    track_threshold: float
    peaks: np.ndarray
    smoothed: np.ndarray
    first_frame: int = 0


def _check_kernel(kernel: int) -> None:
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"median kernel must be a positive odd number (got {kernel})")


def smooth_scores(scores: np.ndarray, kernel: int) -> np.ndarray:
    """Median filter of a [N] score curve with an odd ``kernel`` (1 returns the scores as float64)."""
    _check_kernel(kernel)
    scores = np.asarray(scores, dtype=np.float64)
    if kernel == 1:
        return scores.copy()
    with warnings.catch_warnings():  # a curve shorter than the kernel is zero-padded as documented: not news
        warnings.filterwarnings("ignore", message="kernel_size exceeds volume extent")
        return medfilt(scores, kernel_size=kernel)


def _peaks(smoothed: np.ndarray, reach_ends: bool) -> np.ndarray:
    """Local maxima of [N] ``smoothed``; with ``reach_ends`` the first and last frames can be peaks."""
    if reach_ends:
        padded = np.concatenate([[-np.inf], smoothed, [-np.inf]])
        return find_peaks(padded)[0] - 1
    found = find_peaks(smoothed)[0]
    if len(found) == 0:
        found = np.array([0 if smoothed[0] > smoothed[-1] else len(smoothed) - 1])
    return found


def find_track_window(
    scores: np.ndarray,
    *,
    median_kernel: int = 1,
    peak_ratio: float = 0.79,
    track_ratio: float = 0.585,
    reach_ends: bool = True,
    first_frame: int = 0,
) -> TrackWindow:
    """The temporal window of the response track in a [N] score curve (N >= 1). See the module docstring.

    ``first_frame`` (0 <= first_frame < N): the frames before it cannot be the answer. The whole curve is smoothed
    and its peaks found as usual; the peaks before ``first_frame`` are dropped (so the frames just after a dropped
    peak, on its falling side, do not become a peak), and the window does not grow below ``first_frame``.
    Without any peak from ``first_frame`` on, the highest frame from there on is the peak.
    """
    if np.ndim(scores) != 1 or len(scores) == 0:
        raise ValueError(f"expected a non-empty 1-D score curve, got shape {np.shape(scores)}")
    if not 0 <= first_frame < len(scores):
        raise ValueError(f"first_frame {first_frame} outside the {len(scores)} frames")
    smoothed = smooth_scores(scores, median_kernel)
    peaks = _peaks(smoothed, reach_ends)
    peaks = peaks[peaks >= first_frame]
    if len(peaks) == 0:
        peaks = np.array([first_frame + int(np.argmax(smoothed[first_frame:]))])
    peak_scores = smoothed[peaks]
    peak_threshold = peak_ratio * float(peak_scores.max())
    keep = peak_scores > peak_threshold
    keep[np.argmax(peak_scores)] = True  # the highest peak always survives (matters when it scores <= 0)
    peak = int(peaks[keep][-1])
    peak_score = float(smoothed[peak])
    track_threshold = track_ratio * peak_score
    first, last = (0, len(smoothed) - 1) if reach_ends else (1, len(smoothed) - 2)
    first = max(first, first_frame)
    start = peak
    while start - 1 >= first and smoothed[start - 1] >= track_threshold:
        start -= 1
    end = peak
    while end + 1 <= last and smoothed[end + 1] >= track_threshold:
        end += 1
    return TrackWindow(
        start, end, peak, peak_score, peak_threshold, track_threshold, peaks.astype(np.int64), smoothed, first_frame
    )


class PostProcessor:
    """Turns per-frame scores and boxes into a :class:`ResponseTrack` (see the module docstring).

    Args:
        median_kernel: odd median-filter kernel (1 = no smoothing, the PRVQL setting).
        peak_ratio: relative threshold on peaks (0.79 in PRVQL, 0.8 in VQLoC).
        track_ratio: relative threshold growing the window around the peak (0.585 in PRVQL, 0.7 in VQLoC).
        reach_ends: let peaks and the window reach frame 0 and the last frame (False = the released code).
        after_visual_crop: search only the frames after the visual crop's frame when it is among them (the Ego4D
            protocol rule of the module docstring; callers pass the crop's frame).
        score_mode: ``"constant"`` (every track gets ``constant_score``, as all published VQ2D results do, which
            makes the AP ranking follow the annotation order), ``"peak"`` (the smoothed score at the peak) or
            ``"confidence"`` (the answer's confidence, :mod:`prvql.infer.confidence`, from the curve alone here;
            ``locate_video`` replaces it with the confidence that includes geometric verification).
        constant_score: the score in ``"constant"`` mode.
        confidence: the coefficients of ``"confidence"`` mode (``inference.confidence``; None = the defaults).
    """

    def __init__(
        self,
        *,
        median_kernel: int = 1,
        peak_ratio: float = 0.79,
        track_ratio: float = 0.585,
        reach_ends: bool = True,
        after_visual_crop: bool = False,
        score_mode: str = "constant",
        constant_score: float = 1.0,
        confidence: ConfidenceConfig | None = None,
    ) -> None:
        if score_mode not in SCORE_MODES:
            raise ValueError(f"score mode must be one of {SCORE_MODES} (got {score_mode!r})")
        _check_kernel(median_kernel)
        for name, ratio in (("peak_ratio", peak_ratio), ("track_ratio", track_ratio)):
            if not 0 <= ratio <= 1:
                raise ValueError(f"{name} must be in [0, 1] (got {ratio})")
        self.median_kernel = median_kernel
        self.peak_ratio = peak_ratio
        self.track_ratio = track_ratio
        self.reach_ends = reach_ends
        self.after_visual_crop = after_visual_crop
        self.score_mode = score_mode
        self.constant_score = constant_score
        self.confidence = ConfidenceConfig() if confidence is None else confidence

    def first_frame(self, num_frames: int, visual_crop_frame: int | None) -> int:
        """The first frame that can be the answer among ``num_frames`` (0 unless ``after_visual_crop`` applies).

        With ``after_visual_crop`` and a crop frame ``c`` with ``0 <= c < num_frames - 1``: ``c + 1``. A crop on the
        last searched frame leaves nothing after it, so then (and for a crop outside the range) all frames count.
        """
        if self.after_visual_crop and visual_crop_frame is not None and 0 <= visual_crop_frame < num_frames - 1:
            return visual_crop_frame + 1
        return 0

    def window(self, scores: np.ndarray, visual_crop_frame: int | None = None) -> TrackWindow:
        """The track window of a [N] score curve (``visual_crop_frame``: see ``after_visual_crop``)."""
        return find_track_window(
            scores,
            median_kernel=self.median_kernel,
            peak_ratio=self.peak_ratio,
            track_ratio=self.track_ratio,
            reach_ends=self.reach_ends,
            first_frame=self.first_frame(len(scores), visual_crop_frame),
        )

    def __call__(
        self, scores: np.ndarray, boxes: np.ndarray, visual_crop_frame: int | None = None
    ) -> tuple[ResponseTrack, TrackWindow]:
        """Response track from per-frame results.

        Args:
            scores: [N] occurrence score of frames 0 .. N-1 (probabilities).
            boxes: [N, 4] the best box of each frame, xyxy pixels of the original frame.
            visual_crop_frame: the searched frame the visual crop was cut from, if it is one (used only with
                ``after_visual_crop``).

        Returns:
            The track on frames ``window.start .. window.end`` with their boxes, and the window.
        """
        boxes = np.asarray(boxes, dtype=np.float64)
        if boxes.shape != (len(scores), 4):
            raise ValueError(f"boxes {boxes.shape} do not match {len(scores)} scores")
        window = self.window(scores, visual_crop_frame)
        frames = np.arange(window.start, window.end + 1)
        if self.score_mode == "confidence":
            from prvql.infer.confidence import judge  # it imports this module

            score = judge(self.confidence, scores, window, None).confidence
        else:
            score = self.constant_score if self.score_mode == "constant" else window.peak_score
        return ResponseTrack(frames, boxes[frames], score), window


def build_postprocessor(cfg: InferenceConfig) -> PostProcessor:
    """The post-processor of ``cfg.inference``; a bad setting raises ConfigError."""
    try:
        return PostProcessor(
            median_kernel=cfg.median_kernel,
            peak_ratio=cfg.peak_ratio,
            track_ratio=cfg.track_ratio,
            reach_ends=cfg.reach_ends,
            after_visual_crop=cfg.after_visual_crop,
            score_mode=cfg.score,
            constant_score=cfg.constant_score,
            confidence=cfg.confidence,
        )
    except ValueError as exc:
        raise ConfigError(f"inference: {exc}") from exc
