"""Per-frame results on disk: one query's :class:`FrameScores` as an ``.npz`` file, and the :class:`ScoreCache`
folder of them that ``prvql predict`` fills (resume, sharding) and ``prvql visualize`` reads."""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from prvql.atomic import atomic_path, atomic_write_json
from prvql.config import removed_at_neutral
from prvql.errors import PRVQLError
from prvql.paths import file_in

logger = logging.getLogger(__name__)


@dataclass
class FrameScores:
    """Per-frame result of one query over its searched frames ``0 .. N-1`` (model-fps frame indices).

    Attributes:
        scores: [N] float32, sigmoid of the best anchor's logit in each frame (with colour verification, the
            verified score: :func:`prvql.infer.verification.verified_scores`).
        boxes: [N, 4] float32, that anchor's box, xyxy pixels of the output frame (see :class:`ClipQuery`).
        colour_distances: [N] float32 colour distance between each box and the query, or None (no verification).
    """

    scores: np.ndarray
    boxes: np.ndarray
    colour_distances: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def save(self, path: str | Path) -> None:
        """Write an ``.npz`` file atomically."""
        arrays = {"scores": self.scores.astype(np.float32), "boxes": self.boxes.astype(np.float32)}
        if self.colour_distances is not None:
            arrays["colour_distances"] = self.colour_distances.astype(np.float32)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> FrameScores:
        """Read a file written by :meth:`save`; a corrupt or inconsistent file raises :class:`PRVQLError`."""
        try:
            with np.load(path, allow_pickle=False) as data:
                scores, boxes = data["scores"], data["boxes"]
                distances = data["colour_distances"] if "colour_distances" in data.files else None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise PRVQLError(f"{path}: not a per-frame score file ({exc})") from exc
        if scores.ndim != 1 or boxes.shape != (scores.shape[0], 4):
            raise PRVQLError(f"{path}: scores {scores.shape} and boxes {boxes.shape} do not match")
        if distances is not None and distances.shape != scores.shape:
            raise PRVQLError(f"{path}: colour_distances {distances.shape} and scores {scores.shape} do not match")
        return cls(scores=scores, boxes=boxes, colour_distances=distances)


class ScoreCache:
    """A folder of per-query score files, ``<dir>/<key>.npz``, plus ``meta.json`` naming what produced them."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        """The score file of query ``key`` (a plain name: annotation and query-set uids are checked when read)."""
        return file_in(self.root, key, ".npz")

    def __contains__(self, key: str) -> bool:
        return self.path(key).exists()

    def save(self, key: str, scores: FrameScores) -> None:
        """Store the per-frame result of query ``key`` (atomically)."""
        scores.save(self.path(key))

    def load(self, key: str) -> FrameScores:
        """The per-frame result of query ``key``.

        Raises:
            PRVQLError: the file is missing, truncated or corrupt.
        """
        return FrameScores.load(self.path(key))

    def try_load(self, key: str) -> FrameScores | None:
        """The per-frame result of query ``key``, or None (with a warning) when its file is unreadable."""
        try:
            return self.load(key)
        except PRVQLError as exc:
            logger.warning("ignoring the cached result of %s: %s", key, exc)
            return None

    def drop_unreadable(self, keys: Sequence[str]) -> list[str]:
        """Remove the cached files of ``keys`` that cannot be read (truncated by a crash, corrupted), so that they
        are computed again; one warning names how many. Returns the keys dropped."""
        dropped = []
        for key in keys:
            if key in self:
                try:
                    self.load(key)
                except PRVQLError:
                    self.path(key).unlink(missing_ok=True)
                    dropped.append(key)
        if dropped:
            logger.warning(
                "%s: %d cached results were unreadable and will be computed again (%s%s)",
                self.root,
                len(dropped),
                ", ".join(dropped[:3]),
                ", ..." if len(dropped) > 3 else "",
            )
        return dropped

    def write_meta(self, config: dict, weights: str | Path, resume: bool) -> None:
        """Describe what fills the cache: the resolved config and the weights' hash (``meta.json``).

        With ``resume``, a cache whose scores came from another model, weights or window setting is refused
        (the post-processing settings may differ: they apply when the file is written); a cache whose description
        is unreadable (a crash, a corrupted disk) is emptied with a warning and computed again.

        Raises:
            PRVQLError: the existing description does not match.
        """
        meta_path = self.root / "meta.json"
        meta = {"fingerprint": fingerprint(config, weights), "config": config}
        if resume and meta_path.exists():
            try:
                old = _without_removed_keys(json.loads(meta_path.read_text())["fingerprint"])
            except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError) as exc:
                logger.warning("%s: unreadable cache description (%s); recomputing every query", meta_path, exc)
                self.clear()
                old = meta["fingerprint"]
            if old != meta["fingerprint"]:
                raise PRVQLError(
                    f"{meta_path}: the cache was made with another model, weights or windows; redo it without resuming"
                )
        atomic_write_json(meta_path, meta, indent=1)

    def read_config(self) -> dict | None:
        """The resolved config (a plain dict) recorded by :meth:`write_meta`, or None."""
        try:
            config = json.loads((self.root / "meta.json").read_text())["config"]
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError):
            return None
        return config if isinstance(config, dict) else None

    def clear(self) -> None:
        """Remove every score file (not the folder)."""
        for path in self.root.glob("*.npz"):
            path.unlink()


def _without_removed_keys(old: Any) -> Any:
    """A fingerprint written before inference keys were removed (``prvql.config.REMOVED_KEYS``), without those that
    held their neutral value: such scores were made as they are now, so the cache resumes. One that held another
    value stays, and the fingerprints differ."""
    inference = old.get("inference") if isinstance(old, dict) else None
    if not isinstance(inference, dict):
        return old
    kept = {key: value for key, value in inference.items() if not removed_at_neutral(f"inference.{key}", value)}
    return {**old, "inference": kept}


def fingerprint(config: dict, weights: str | Path | None) -> dict:
    """What makes cached scores reusable: the resolved model, data and window settings and the weights' hash."""
    digest = None
    if weights is not None:
        h = hashlib.sha256()
        with open(weights, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        digest = h.hexdigest()
    keys = ("windows_per_batch", "window_overlap", "overlap_reduce", "stage_mean", "verification")
    inference = {k: config["inference"][k] for k in keys}
    return {
        "model": config["model"],
        "pad_value": config["data"]["pad_value"],
        "inference": inference,
        "weights": digest,
    }
