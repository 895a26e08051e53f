"""Geometric verification and box refinement of a response track with local features (not in the paper: ours).

The model scores every searched frame; on real footage its best box is often loose, and its peak can sit on a
look-alike. A rigid, textured object seen again is related to the query crop by a homography of its local
features. This stage, run after the score curve is turned into a track, checks that on the frames the curve picks:

1. SIFT keypoints of the query crop and of each candidate frame (OpenCV ``cv2.SIFT_create``), matched with a
   nearest-neighbour ratio test (``cv2.BFMatcher.knnMatch``, Lowe's ratio);
2. a homography fitted to the matches with RANSAC (``cv2.findHomography``); a frame is *verified* when it keeps at
   least ``min_inliers`` inliers and the query's box maps to a sane quadrilateral (convex, inside a frame's reach,
   area between ``1/max_scale²`` and ``max_scale²`` of the query box's);
3. candidates: the ``candidates`` highest-scoring local peaks of the smoothed curve; when one verifies, the
   track is moved to the most recent verified candidate (the VQ2D answer is the last sighting), grown frame by
   frame both ways while the frames verify (across at most ``max_gap`` frames in a row that do not), and each
   verified frame's box becomes the query box mapped by its homography (bounding box of the mapped corners,
   clipped to the frame; frames in a gap get their neighbours' boxes interpolated);
4. when none verifies, the model's track stays as it was (plain or deforming objects: the model's answer).

It works on frames and the score curve only, so any model (the shipped demo model, the authors' weights) can use
it: ``inference.geometric.enabled``. Every frame's inlier count is kept for the confidence stage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from prvql.config import GeometricConfig
from prvql.errors import ConfigError

Frames = Callable[[list[int]], list[np.ndarray]]  # searched-frame indices -> uint8 [H, W, 3] frames


@dataclass(frozen=True)
class GeometricResult:
    """What the verification found.

    Attributes:
        start, end: the (possibly moved) track's frames, inclusive.
        boxes: float64 [end - start + 1, 4] xyxy boxes of the track's frames.
        verified: whether any frame verified (else ``start``, ``end``, ``boxes`` are the model's).
        inliers: searched frame -> RANSAC inliers, for every frame matched.
    """

    start: int
    end: int
    boxes: np.ndarray
    verified: bool
    inliers: dict[int, int] = field(default_factory=dict)

    @property
    def best_inliers(self) -> int:
        """The most inliers of any matched frame (0 when none was matched)."""
        return max(self.inliers.values(), default=0)


class FeatureMatcher:
    """SIFT features of one query crop, matched against frames.

    Args:
        crop: uint8 [h, w, 3] the query's pixels.
        ratio: Lowe's ratio test threshold.
        min_inliers: RANSAC inliers a frame needs to verify.
        max_scale: the mapped box's area must be within ``max_scale**2`` times the crop's, either way.
        max_side: frames and crops are shrunk to at most this many pixels on their long side first (speed).
    """

    def __init__(self, crop: np.ndarray, ratio: float, min_inliers: int, max_scale: float, max_side: int) -> None:
        import cv2

        self.cv2 = cv2
        self.ratio = ratio
        self.min_inliers = min_inliers
        self.max_scale = max_scale
        self.max_side = max_side
        self.sift = cv2.SIFT_create()
        self.matcher = cv2.BFMatcher(cv2.NORM_L2)
        h, w = crop.shape[:2]
        self.crop_box = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
        # a small crop is enlarged so that it yields keypoints at all (SIFT needs some 30 px of texture)
        self.crop_scale = max(1.0, 96.0 / max(1, min(h, w)))
        gray = self._gray(crop, self.crop_scale)
        self.keypoints, self.descriptors = self.sift.detectAndCompute(gray, None)

    def _gray(self, image: np.ndarray, scale: float) -> np.ndarray:
        gray = self.cv2.cvtColor(image, self.cv2.COLOR_RGB2GRAY)
        if scale != 1.0:
            size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
            gray = self.cv2.resize(
                gray, size, interpolation=self.cv2.INTER_AREA if scale < 1 else self.cv2.INTER_LINEAR
            )
        return gray

    def match(self, frame: np.ndarray) -> tuple[int, np.ndarray | None]:
        """(inliers, xyxy box of the query in ``frame``'s pixels or None) for one uint8 [H, W, 3] frame."""
        if self.descriptors is None or len(self.keypoints) < 4:
            return 0, None
        height, width = frame.shape[:2]
        scale = min(1.0, self.max_side / max(height, width))
        keypoints, descriptors = self.sift.detectAndCompute(self._gray(frame, scale), None)
        if descriptors is None or len(keypoints) < 4:
            return 0, None
        pairs = self.matcher.knnMatch(self.descriptors, descriptors, k=2)
        good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < self.ratio * p[1].distance]
        if len(good) < 4:
            return 0, None
        src = np.float32([self.keypoints[m.queryIdx].pt for m in good]) / self.crop_scale
        dst = np.float32([keypoints[m.trainIdx].pt for m in good]) / scale
        homography, mask = self.cv2.findHomography(src, dst, self.cv2.RANSAC, 5.0 / scale)
        if homography is None:
            return 0, None
        inliers = int(mask.sum())
        box = self._mapped_box(homography, height, width)
        if inliers < self.min_inliers or box is None:
            return inliers, None
        return inliers, box

    def _mapped_box(self, homography: np.ndarray, height: int, width: int) -> np.ndarray | None:
        """The crop's corners mapped into the frame -> clipped xyxy box, or None for an implausible mapping."""
        corners = np.c_[self.crop_box, np.ones(4)] @ homography.T
        if np.any(corners[:, 2] <= 1e-6):
            return None
        quad = corners[:, :2] / corners[:, 2:]
        edges = np.roll(quad, -1, axis=0) - quad
        turns = edges[:, 0] * np.roll(edges, -1, axis=0)[:, 1] - edges[:, 1] * np.roll(edges, -1, axis=0)[:, 0]
        if not (np.all(turns > 0) or np.all(turns < 0)):  # a twisted or folded quadrilateral
            return None
        x = quad[:, 0]
        y = quad[:, 1]
        area = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
        crop_area = float(self.crop_box[2, 0] * self.crop_box[2, 1])
        if not (crop_area / self.max_scale**2 <= area <= crop_area * self.max_scale**2):
            return None
        box = np.array([x.min(), y.min(), x.max(), y.max()])
        clipped = np.clip(box, 0, [width, height, width, height])
        if (clipped[2] - clipped[0]) * (clipped[3] - clipped[1]) < 0.5 * (box[2] - box[0]) * (box[3] - box[1]):
            return None  # mostly outside the frame
        return clipped


def candidate_frames(smoothed: np.ndarray, peaks: np.ndarray, count: int) -> list[int]:
    """The ``count`` highest of the curve's local ``peaks`` (int [P] frame indices of [N] ``smoothed``), ordered
    from the most recent to the oldest."""
    order = np.argsort(-smoothed[peaks], kind="stable")[:count]
    return sorted((int(p) for p in peaks[order]), reverse=True)


def verify_track(
    matcher: FeatureMatcher,
    frames: Frames,
    num_frames: int,
    candidates: list[int],
    track: tuple[int, int, np.ndarray],
    max_track: int,
    max_gap: int = 0,
) -> GeometricResult:
    """Verify the candidate frames and move / refine the track (module docstring, steps 3-4).

    Args:
        matcher: the query's features.
        frames: reads searched frames by index (all of them exist: ``0 .. num_frames - 1``).
        num_frames: searched frames.
        candidates: frames to try, the most recent first.
        track: the model's (start, end, float [end - start + 1, 4] boxes).
        max_track: the grown track stops at this many frames.
        max_gap: the track grows across at most this many frames in a row that do not verify (occlusion, blur).
    """
    inliers: dict[int, int] = {}
    boxes: dict[int, np.ndarray] = {}

    def check(index: int) -> bool:
        if index not in inliers:
            count, box = matcher.match(frames([index])[0])
            inliers[index] = count
            if box is not None:
                boxes[index] = box
        return index in boxes

    anchor = next((c for c in candidates if check(c)), None)
    if anchor is None:
        start, end, model_boxes = track
        return GeometricResult(start, end, np.asarray(model_boxes, dtype=np.float64), False, inliers)

    def reach(edge: int, step: int, length: int) -> int | None:
        """The nearest verified frame within ``max_gap + 1`` frames beyond ``edge`` (towards ``step``), if any."""
        for offset in range(1, max_gap + 2):
            index = edge + step * offset
            if not 0 <= index < num_frames or length + offset > max_track:
                return None
            if check(index):
                return index
        return None

    start = end = anchor
    while (nxt := reach(end, 1, end - start + 1)) is not None:
        end = nxt
    while (nxt := reach(start, -1, end - start + 1)) is not None:
        start = nxt
    known = sorted(i for i in boxes if start <= i <= end)
    stack = np.stack([boxes[i] for i in known])
    span = np.arange(start, end + 1)
    # frames inside a gap get the box interpolated between their verified neighbours
    refined = np.stack([np.interp(span, known, stack[:, j]) for j in range(4)], axis=1)
    return GeometricResult(start, end, refined, True, inliers)


def refine_track(
    cfg: GeometricConfig,
    crop: np.ndarray,
    smoothed: np.ndarray,
    peaks: np.ndarray,
    track: tuple[int, int, np.ndarray],
    frames: Frames,
) -> GeometricResult:
    """Geometric verification of a searched curve (module docstring) with the settings of
    ``inference.geometric``.

    Args:
        cfg: ``inference.geometric``.
        crop: uint8 [h, w, 3] the query's pixels.
        smoothed: float [N] the smoothed score curve; ``peaks``: int [P] its local peaks.
        track: the model's (start, end, float [end - start + 1, 4] xyxy boxes).
        frames: reads searched frames by index.

    Raises:
        ConfigError: a setting out of range, naming its key.
    """
    checks = {
        "candidates": cfg.candidates >= 1,
        "min_inliers": cfg.min_inliers >= 4,
        "ratio": 0 < cfg.ratio <= 1,
        "max_scale": cfg.max_scale >= 1,
        "max_side": cfg.max_side >= 32,
        "max_track": cfg.max_track >= 1,
        "max_gap": cfg.max_gap >= 0,
    }
    rules = {"candidates": ">= 1", "min_inliers": ">= 4", "ratio": "in (0, 1]", "max_scale": ">= 1"}
    for key, ok in checks.items():
        if not ok:
            rule = rules.get(key, {"max_side": ">= 32", "max_gap": ">= 0"}.get(key, ">= 1"))
            raise ConfigError(f"inference.geometric.{key}: must be {rule} (got {getattr(cfg, key)!r})")
    matcher = FeatureMatcher(crop, cfg.ratio, cfg.min_inliers, cfg.max_scale, cfg.max_side)
    candidates = candidate_frames(np.asarray(smoothed, dtype=np.float64), np.asarray(peaks), cfg.candidates)
    return verify_track(matcher, frames, len(smoothed), candidates, track, cfg.max_track, cfg.max_gap)
