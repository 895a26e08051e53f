"""Geometric verification and box refinement of a response track with local features (not in the paper: ours).

The model scores every searched frame; on real footage its best box is often loose, and its peak can sit on a
look-alike. A rigid, textured object seen again is related to the query crop by a homography of its local
features. This stage, run after the score curve is turned into a track, checks that on the frames the curve picks:

1. SIFT keypoints of the query crop and of each candidate frame (OpenCV ``cv2.SIFT_create``), matched with a
   nearest-neighbour ratio test (``cv2.BFMatcher.knnMatch``, Lowe's ratio);
2. a homography fitted to the matches with RANSAC (``cv2.findHomography``); a frame is *verified* when it keeps at
   least ``min_inliers`` inliers, the query's box maps to a sane quadrilateral (convex, inside a frame's reach,
   area between ``1/max_scale²`` and ``max_scale²`` of the query box's) and the mapped box's colours are close
   enough to the crop's (chroma histograms, :func:`colour_distance` <= ``max_colour_distance``);
3. candidates: the ``candidates`` highest-scoring local peaks of the smoothed curve; when one verifies, the
   track is moved to the most recent verified candidate (the VQ2D answer is the last sighting), grown frame by
   frame both ways while the frames verify (across at most ``max_gap`` frames in a row that do not), and each
   verified frame's box becomes the query box mapped by its homography (bounding box of the mapped corners,
   clipped to the frame; frames in a gap get their neighbours' boxes interpolated);
4. the crop's own frame is not an answer (the Ego4D protocol: a response track never holds the visual crop's
   frame; a user who cut the crop from the same video wants another sighting). When the verified run holds the
   frame the crop was cut from, that run is set aside (``crop_source_frame``, ``crop_source_run``) and the next
   candidates are tried (the ``candidates`` highest peaks outside it). The crop's frame is known for a box drawn
   on a searched frame (``crop_frame``); for a crop image it is found from pixels (``find_source``): a verified
   frame whose homography keeps the crop's size (to 15 %) where the crop equals the frame's pixels (within 3 px of
   the mapped place) to ``source_tolerance`` grey levels (mean absolute RGB difference; the very pixels: on a static
   camera's video, the next frames differ by as little as 0.2);
5. when none verifies, the model's track stays as it was (plain or deforming objects: the model's answer), also
   when only the crop's own run verified (its inliers are then not counted: ``best_inliers``).

It works on frames and the score curve only, so any model (the shipped demo model, the authors' weights) can use
it: ``inference.geometric.enabled``. Every frame's inlier count is kept for the confidence stage, and the answer's
colour distance for ``track.json``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from prvql.config import GeometricConfig
from prvql.errors import ConfigError

Frames = Callable[[list[int]], list[np.ndarray]]  # searched-frame indices -> uint8 [H, W, 3] frames

HIST_BINS = (8, 8)  # a* x b* bins of the colour histograms
SOURCE_SIZE = 0.15  # a crop-source mapping keeps the crop's width and height to this fraction
SOURCE_SHIFT = 3  # pixels: the crop's own place is looked for this far around the mapping's mean shift


@dataclass(frozen=True)
class GeometricResult:
    """What the verification found.

    Attributes:
        start, end: the (possibly moved) track's frames, inclusive.
        boxes: float64 [end - start + 1, 4] xyxy boxes of the track's frames.
        verified: whether any frame verified (else ``start``, ``end``, ``boxes`` are the model's).
        inliers: searched frame -> RANSAC inliers, for every frame matched.
        crop_source_frame: the searched frame the query crop was cut from, when known or found (module docstring,
            step 4); None otherwise.
        crop_source_run: (first, last) frames of the crop's own verified run, set aside; None when none.
        colour_distance: :func:`colour_distance` of the crop and the track's box on its peak frame (the most inliers
            when verified, the smoothed curve's highest frame of the model's track otherwise); None = not measured.
    """

    start: int
    end: int
    boxes: np.ndarray
    verified: bool
    inliers: dict[int, int] = field(default_factory=dict)
    crop_source_frame: int | None = None
    crop_source_run: tuple[int, int] | None = None
    colour_distance: float | None = None

    @property
    def best_inliers(self) -> int:
        """The most inliers of any matched frame outside the crop's own run (0 when none was matched)."""
        first, last = self.crop_source_run or (0, -1)
        return max((n for i, n in self.inliers.items() if not first <= i <= last), default=0)


class Match(NamedTuple):
    """One frame matched against the query crop.

    Attributes:
        inliers: RANSAC inliers (0 when no homography was found).
        box: xyxy box of the query in the frame's pixels when the frame verifies, else None.
        colour: :func:`colour_distance` of the crop and ``box`` (None without a box).
        source: the mean absolute RGB difference between the crop and the frame where a near-identity mapping puts
            it (:meth:`FeatureMatcher.source_difference`), when asked and the mapping is one; else None.
    """

    inliers: int
    box: np.ndarray | None
    colour: float | None = None
    source: float | None = None


def colour_histogram(image: np.ndarray) -> np.ndarray:
    """float32 [8, 8] normalised histogram of the chroma (a*, b* of CIE L*a*b*, OpenCV's 8-bit scale) of uint8
    [h, w, 3] RGB ``image``: grey and faintly tinted pixels share the middle bins, whatever their hue, so a change of
    light moves little while a recoloured look-alike moves far."""
    import cv2

    lab = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2LAB)
    hist = cv2.calcHist([lab], [1, 2], None, list(HIST_BINS), [0, 256, 0, 256])
    return cv2.normalize(hist, None, alpha=1.0, norm_type=cv2.NORM_L1)


def colour_distance(crop_hist: np.ndarray, frame: np.ndarray, box: np.ndarray) -> float:
    """Bhattacharyya distance in [0, 1] (``cv2.compareHist``) between a crop's :func:`colour_histogram` and that of
    xyxy ``box`` of uint8 [H, W, 3] ``frame`` (0 = the same colours; a recoloured look-alike is far)."""
    import cv2

    height, width = frame.shape[:2]
    x1, y1 = (min(max(int(np.floor(v)), 0), m - 1) for v, m in zip(box[:2], (width, height), strict=True))
    x2, y2 = (min(max(int(np.ceil(v)), lo + 1), m) for v, lo, m in zip(box[2:], (x1, y1), (width, height), strict=True))
    return float(cv2.compareHist(crop_hist, colour_histogram(frame[y1:y2, x1:x2]), cv2.HISTCMP_BHATTACHARYYA))


class FeatureMatcher:
    """SIFT features of one query crop, matched against frames.

    Args:
        crop: uint8 [h, w, 3] the query's pixels.
        ratio: Lowe's ratio test threshold.
        min_inliers: RANSAC inliers a frame needs to verify.
        max_scale: the mapped box's area must be within ``max_scale**2`` times the crop's, either way.
        max_side: frames and crops are shrunk to at most this many pixels on their long side first (speed).
        max_colour: a frame verifies only when :func:`colour_distance` of its box is at most this (1 = any).
        source_tolerance: grey levels of mean absolute difference within which a near-identity match is the crop's
            own frame (:meth:`is_source`).
    """

    def __init__(
        self,
        crop: np.ndarray,
        ratio: float,
        min_inliers: int,
        max_scale: float,
        max_side: int,
        max_colour: float = 1.0,
        source_tolerance: float = 0.1,
    ) -> None:
        import cv2

        self.cv2 = cv2
        self.crop = np.ascontiguousarray(crop)
        self.ratio = ratio
        self.min_inliers = min_inliers
        self.max_scale = max_scale
        self.max_side = max_side
        self.max_colour = max_colour
        self.source_tolerance = source_tolerance
        self.sift = cv2.SIFT_create()
        self.matcher = cv2.BFMatcher(cv2.NORM_L2)
        h, w = crop.shape[:2]
        self.crop_box = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
        self.hist = colour_histogram(self.crop)
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

    def match(self, frame: np.ndarray, find_source: bool = False) -> Match:
        """Match one uint8 [H, W, 3] frame; with ``find_source`` a verified frame's
        :meth:`source_difference` is measured too."""
        if self.descriptors is None or len(self.keypoints) < 4:
            return Match(0, None)
        height, width = frame.shape[:2]
        scale = min(1.0, self.max_side / max(height, width))
        keypoints, descriptors = self.sift.detectAndCompute(self._gray(frame, scale), None)
        if descriptors is None or len(keypoints) < 4:
            return Match(0, None)
        pairs = self.matcher.knnMatch(self.descriptors, descriptors, k=2)
        good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < self.ratio * p[1].distance]
        if len(good) < 4:
            return Match(0, None)
        src = np.float32([self.keypoints[m.queryIdx].pt for m in good]) / self.crop_scale
        dst = np.float32([keypoints[m.trainIdx].pt for m in good]) / scale
        homography, mask = self.cv2.findHomography(src, dst, self.cv2.RANSAC, 5.0 / scale)
        if homography is None:
            return Match(0, None)
        inliers = int(mask.sum())
        box = self._mapped_box(homography, height, width)
        if inliers < self.min_inliers or box is None:
            return Match(inliers, None)
        colour = colour_distance(self.hist, frame, box)
        if colour > self.max_colour:
            return Match(inliers, None, colour)
        return Match(inliers, box, colour, self.source_difference(frame, homography) if find_source else None)

    def is_source(self, match: Match) -> bool:
        """Whether a matched frame holds the crop's very pixels (module docstring, step 4)."""
        return match.box is not None and match.source is not None and match.source <= self.source_tolerance

    def source_difference(self, frame: np.ndarray, homography: np.ndarray) -> float | None:
        """For a ``homography`` (crop -> uint8 [H, W, 3] ``frame``) that keeps the crop's size (the mapped corners'
        bounding box within ``SOURCE_SIZE`` of it): the mean absolute RGB difference between the crop and the frame's
        pixels, the least over whole-pixel offsets within ``SOURCE_SHIFT`` of the corners' mean shift (a homography
        from few inliers is a few pixels off); None for another mapping or a crop that would leave the frame."""
        corners = np.c_[self.crop_box, np.ones(4)] @ homography.T
        if np.any(corners[:, 2] <= 1e-6):
            return None
        quad = corners[:, :2] / corners[:, 2:]
        h, w = self.crop.shape[:2]
        size = quad.max(axis=0) - quad.min(axis=0)
        if np.abs(size / [w, h] - 1).max() > SOURCE_SIZE:
            return None
        cx, cy = np.rint((quad - self.crop_box).mean(axis=0)).astype(int)
        crop = self.crop.astype(np.int16)
        best = np.inf
        for y in range(max(cy - SOURCE_SHIFT, 0), min(cy + SOURCE_SHIFT, frame.shape[0] - h) + 1):
            for x in range(max(cx - SOURCE_SHIFT, 0), min(cx + SOURCE_SHIFT, frame.shape[1] - w) + 1):
                best = min(best, float(np.abs(frame[y : y + h, x : x + w].astype(np.int16) - crop).mean()))
        return None if best == np.inf else best

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
    return sorted(ranked_peaks(smoothed, peaks)[:count], reverse=True)


def ranked_peaks(smoothed: np.ndarray, peaks: np.ndarray) -> list[int]:
    """The curve's local ``peaks`` (int [P] frame indices of [N] ``smoothed``), highest first (ties: earlier)."""
    return [int(p) for p in peaks[np.argsort(-smoothed[peaks], kind="stable")]]


def verify_track(
    matcher: FeatureMatcher,
    frames: Frames,
    num_frames: int,
    ranked: list[int],
    track: tuple[int, int, np.ndarray],
    max_track: int,
    max_gap: int = 0,
    *,
    count: int | None = None,
    crop_frame: int | None = None,
    find_source: bool = False,
) -> GeometricResult:
    """Verify the candidate frames and move / refine the track (module docstring, steps 3-5).

    Args:
        matcher: the query's features.
        frames: reads searched frames by index (all of them exist: ``0 .. num_frames - 1``).
        num_frames: searched frames.
        ranked: candidate frames, best first; the first ``count`` (None = all) outside the crop's own run are
            tried, the most recent first.
        track: the model's (start, end, float [end - start + 1, 4] boxes).
        max_track: the grown track stops at this many frames.
        max_gap: the track grows across at most this many frames in a row that do not verify (occlusion, blur).
        crop_frame: the searched frame the crop was cut from, when known (a box drawn on a searched frame).
        find_source: test verified frames for being the crop's own (a crop image whose origin is unknown).
    """
    matches: dict[int, Match] = {}
    set_aside: set[int] = set()

    def check(index: int) -> bool:
        if index not in matches:
            matches[index] = matcher.match(frames([index])[0], find_source)
        return index not in set_aside and matches[index].box is not None

    def reach(edge: int, step: int, start: int, end: int) -> int | None:
        """The nearest verified frame within ``max_gap + 1`` frames beyond ``edge`` (towards ``step``), if any."""
        for offset in range(1, max_gap + 2):
            index = edge + step * offset
            if not 0 <= index < num_frames or end - start + 1 + offset > max_track:
                return None
            if check(index):
                return index
        return None

    def grow(anchor: int) -> tuple[int, int]:
        start = end = anchor
        while (nxt := reach(end, 1, start, end)) is not None:
            end = nxt
        while (nxt := reach(start, -1, start, end)) is not None:
            start = nxt
        return start, end

    source, source_run = crop_frame, None
    if crop_frame is not None:
        source_run = grow(crop_frame) if check(crop_frame) else (crop_frame, crop_frame)
        set_aside.update(range(source_run[0], source_run[1] + 1))
    while True:
        tried = [c for c in ranked if c not in set_aside][:count]
        anchor = next((c for c in sorted(tried, reverse=True) if check(c)), None)
        if anchor is None:
            start, end, model_boxes = track
            inliers = {i: m.inliers for i, m in matches.items()}
            return GeometricResult(start, end, np.asarray(model_boxes, np.float64), False, inliers, source, source_run)
        start, end = grow(anchor)
        own = [i for i in range(start, end + 1) if i in matches and matcher.is_source(matches[i])]
        if source is not None or not own:
            break
        # the crop's own run (its frame: the closest pixels): set aside, try the next candidates
        source, source_run = min(own, key=lambda i: matches[i].source), (start, end)
        set_aside.update(range(start, end + 1))
    known = sorted(i for i in range(start, end + 1) if check(i))
    stack = np.stack([matches[i].box for i in known])
    span = np.arange(start, end + 1)
    # frames inside a gap get the box interpolated between their verified neighbours
    refined = np.stack([np.interp(span, known, stack[:, j]) for j in range(4)], axis=1)
    best = max(known, key=lambda i: matches[i].inliers)
    inliers = {i: m.inliers for i, m in matches.items()}
    return GeometricResult(start, end, refined, True, inliers, source, source_run, matches[best].colour)


def check_settings(cfg: GeometricConfig) -> None:
    """Refuse an ``inference.geometric`` setting out of range (:class:`ConfigError` naming its key); called before a
    search, so that a bad setting costs no search."""
    checks = {
        "candidates": (cfg.candidates >= 1, ">= 1"),
        "min_inliers": (cfg.min_inliers >= 4, ">= 4"),
        "ratio": (0 < cfg.ratio <= 1, "in (0, 1]"),
        "max_scale": (cfg.max_scale >= 1, ">= 1"),
        "max_side": (cfg.max_side >= 32, ">= 32"),
        "max_track": (cfg.max_track >= 1, ">= 1"),
        "max_gap": (cfg.max_gap >= 0, ">= 0"),
        "max_colour_distance": (0 < cfg.max_colour_distance <= 1, "in (0, 1]"),
        "source_tolerance": (cfg.source_tolerance >= 0, ">= 0"),
    }
    for key, (ok, rule) in checks.items():
        if not ok:
            raise ConfigError(f"inference.geometric.{key}: must be {rule} (got {getattr(cfg, key)!r})")


def refine_track(
    cfg: GeometricConfig,
    crop: np.ndarray,
    smoothed: np.ndarray,
    peaks: np.ndarray,
    track: tuple[int, int, np.ndarray],
    frames: Frames,
    *,
    crop_frame: int | None = None,
    find_source: bool = False,
) -> GeometricResult:
    """Geometric verification of a searched curve (module docstring) with the settings of
    ``inference.geometric``; the result's ``colour_distance`` is measured on the verified track, or on the model's
    track at its highest smoothed frame.

    Args:
        cfg: ``inference.geometric``.
        crop: uint8 [h, w, 3] the query's pixels.
        smoothed: float [N] the smoothed score curve; ``peaks``: int [P] its local peaks.
        track: the model's (start, end, float [end - start + 1, 4] xyxy boxes).
        frames: reads searched frames by index.
        crop_frame: the searched frame the crop was cut from, when known.
        find_source: look for the crop's own frame by its pixels (``inference.geometric.skip_crop_source``
            permitting); for a crop image that may come from the searched video.

    Raises:
        ConfigError: a setting out of range, naming its key.
    """
    check_settings(cfg)
    matcher = FeatureMatcher(
        crop, cfg.ratio, cfg.min_inliers, cfg.max_scale, cfg.max_side, cfg.max_colour_distance, cfg.source_tolerance
    )
    smoothed = np.asarray(smoothed, dtype=np.float64)
    found = verify_track(
        matcher,
        frames,
        len(smoothed),
        ranked_peaks(smoothed, np.asarray(peaks)),
        track,
        cfg.max_track,
        cfg.max_gap,
        count=cfg.candidates,
        crop_frame=crop_frame if cfg.skip_crop_source else None,
        find_source=find_source and cfg.skip_crop_source,
    )
    if found.verified or len(smoothed) == 0:
        return found
    start, end, boxes = track
    peak = start + int(np.argmax(smoothed[start : end + 1]))
    colour = colour_distance(matcher.hist, frames([peak])[0], np.asarray(boxes[peak - start], dtype=np.float64))
    return dataclasses.replace(found, colour_distance=colour)
