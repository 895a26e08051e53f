"""The answer's confidence and the track score on a synthetic held-out set (``prvql synth``, every object present).

```
python -m benchmarks.synthetic_confidence --annotations H/vq_val.json --clips H/clips --output report.json \
    [--weights W] [--config C] [--set KEY=VALUE ...] [--work DIR [--resume]] [--max-clips N] [--device cpu]
```

1. The search, once: :func:`prvql.infer.challenge.predict_annotation_file` (what ``prvql predict`` runs) caches
   every query's per-frame curve in ``WORK/predictions.json.cache``.
2. ``prvql predict`` / ``prvql evaluate``: the cached curves become challenge files with ``inference.score`` =
   ``constant``, ``peak`` and ``confidence`` (the model's post-processing otherwise) and are scored with the official
   metrics (:func:`prvql.infer.predictions.load_predictions`, :func:`prvql.metrics.evaluation.evaluate_predictions`).
3. ``prvql locate``: each curve is post-processed as ``locate_video`` does (no visual-crop frame, so
   ``inference.after_visual_crop`` does not apply), verified on the clip's frames
   (:func:`prvql.infer.locate.apply_geometric`, the crop given as an image whose frame is unknown, as a user who
   cut it from the video gives it: its own frame is found from pixels) and judged
   (:func:`prvql.infer.locate.with_verdict`); a track is right when its stIoU with the truth is >= 0.05. Reported:
   the AUROC of the confidence (and of the peak score) for "right", right tracks said "not found", wrong tracks said
   "found", ``crop_source_found`` = [crop's frame found right, found at all, crop frames among the searched]; and
   the same with geometric verification off. Each query's confidence signals are kept (``queries``), so a report
   of a fitting split can feed ``benchmarks/real/fit_confidence.py --synthetic``.

The confidence is measured, never fitted, here (and a held-out report is never fitted on). Clips must be decoded
at the annotations' frame size.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import mannwhitneyu

from prvql.atomic import atomic_write_json
from prvql.config import Config, apply_overrides, config_from_dict
from prvql.data.annotations import AnnotationSet, load_annotations, read_json
from prvql.data.video import VideoReader
from prvql.errors import PRVQLError, one_line
from prvql.infer.challenge import predict_annotation_file, search_jobs, tracks_from_cache
from prvql.infer.locate import LocateResult, apply_geometric, with_verdict
from prvql.infer.postprocess import build_postprocessor
from prvql.infer.predictions import load_predictions, write_predictions
from prvql.infer.score_cache import ScoreCache
from prvql.metrics.evaluation import evaluate_predictions
from prvql.metrics.overlap import spatio_temporal_iou
from prvql.metrics.structures import ResponseTrack
from prvql.metrics.vq2d import SUCCESS_THRESHOLD

SCORES = ("constant", "peak", "confidence")
FLAGS = {
    "output": "--work",
    "cache_dir": "--work",
    "clips_dir": "--clips",
    "weights": "--weights",
    "device": "--device",
}


def auroc(values: np.ndarray, right: np.ndarray) -> float | None:
    """P(value of a right track > value of a wrong one), ties half (Mann-Whitney U); None without both kinds."""
    if right.all() or not right.any():
        return None
    return float(mannwhitneyu(values[right], values[~right]).statistic / (right.sum() * (~right).sum()))


def challenge_metrics(cfg: Config, annotations: AnnotationSet, cache: ScoreCache, work: Path) -> dict:
    """Official metrics of the challenge file with each ``inference.score`` of :data:`SCORES`."""
    out = {}
    for score in SCORES:
        postprocess = build_postprocessor(apply_overrides(cfg, [f"inference.score={score}"]).inference)
        path = work / f"predictions_{score}.json"
        write_predictions(path, annotations, tracks_from_cache(annotations, cache, postprocess))
        out[score] = evaluate_predictions(annotations, load_predictions(path, annotations)).to_dict()
    return out


def locate_queries(cfg: Config, annotations: AnnotationSet, cache: ScoreCache, clips: Path) -> list[dict]:
    """Per query: the stIoU, confidence, verdict and inliers of ``prvql locate``'s answer, geometric on and off."""
    postprocess = build_postprocessor(cfg.inference)
    rows = []
    for job in search_jobs(annotations):
        records = [r for r in job.records if r.response_track and r.key in cache]
        if not records:
            continue
        with VideoReader(clips / f"{job.clip_uid}.mp4") as reader:
            frames = list(reader.iter_frames(0, max(max(r.query_frame, r.visual_crop_frame + 1) for r in records)))
            if (reader.height, reader.width) != (records[0].frame_height, records[0].frame_width):
                raise PRVQLError(f"{reader.path.name}: decoded at another size than the annotations", field="clips_dir")
        for record in records:
            cached = cache.load(record.key)
            track, window = postprocess(cached.scores, cached.boxes)  # no crop frame: as locate_video
            image = frames[record.visual_crop_frame]
            plain = LocateResult(
                cached.scores, cached.boxes, track, window, image.shape[:2], image, tuple(record.visual_crop_box)
            )
            truth = ResponseTrack.from_pairs(record.response_track)
            row = {
                "key": record.key,
                "frames": len(cached),
                "peak_score": window.peak_score,
                "visual_crop_frame": record.visual_crop_frame,
            }
            # whatever geometric.enabled; the crop as an image whose frame is unknown (found from its pixels)
            verified = apply_geometric(cfg, plain, lambda k, clip=frames: [clip[i] for i in k], find_source=True)
            for name, result in (("geometric_on", verified), ("geometric_off", plain)):
                judged = with_verdict(cfg, result)
                geo = judged.geometric
                row[name] = {
                    "stiou": spatio_temporal_iou(judged.track, truth),
                    "track": list(judged.track.extent),
                    "confidence": judged.verdict.confidence,
                    "found": judged.verdict.found,
                    "inliers": None if geo is None else geo.best_inliers,
                    "verified": None if geo is None else geo.verified,
                    "crop_source_frame": None if geo is None else geo.crop_source_frame,
                    "signals": judged.verdict.signals,
                }
            rows.append(row)
    return rows


def verdict_summary(rows: list[dict], name: str) -> dict:
    """AUROC of the confidence and of the peak score for "right" (stIoU >= 0.05), and the verdict's error rates."""
    stiou = np.array([r[name]["stiou"] for r in rows])
    right = stiou >= SUCCESS_THRESHOLD
    confidence = np.array([r[name]["confidence"] for r in rows])
    found = np.array([r[name]["found"] for r in rows], dtype=bool)
    return {
        "queries": len(rows),
        "right": int(right.sum()),
        "confidence_auroc": auroc(confidence, right),
        "peak_score_auroc": auroc(np.array([r["peak_score"] for r in rows]), right),
        "right_not_found": [int((~found[right]).sum()), int(right.sum())],
        "wrong_found": [int(found[~right].sum()), int((~right).sum())],
        "found": int(found.sum()),
        "crop_source_found": [
            sum(r[name]["crop_source_frame"] == r["visual_crop_frame"] for r in rows),
            sum(r[name]["crop_source_frame"] is not None for r in rows),
            sum(r["visual_crop_frame"] < r["frames"] for r in rows),
        ],
    }


def first_clips(annotations: Path, count: int, output: Path) -> Path:
    """``output``: the annotation file with only its first ``count`` clips (file order); returns ``output``."""
    data = read_json(annotations, "annotation file")
    for video in data["videos"]:
        video["clips"], count = video["clips"][:count], max(0, count - len(video["clips"]))
    data["videos"] = [v for v in data["videos"] if v["clips"]]
    atomic_write_json(output, data)
    return output


def run(args: argparse.Namespace, work: Path) -> dict:
    """Search (or resume), then the challenge metrics and the locate verdicts; returns the report."""
    start = time.perf_counter()
    overrides, path = list(args.set), args.annotations
    if args.max_clips is not None:
        load_annotations(path)  # a bad file is named before it is cut
        path = first_clips(path, args.max_clips, work / "annotations.json")
    predict_annotation_file(
        path,
        args.clips,
        work / "predictions.json",
        config=args.config,
        weights=args.weights,
        overrides=overrides,
        resume=args.resume,
        device=args.device,
    )
    cache = ScoreCache(work / "predictions.json.cache")
    cfg = config_from_dict(cache.read_config())
    annotations = load_annotations(path)
    searched = time.perf_counter() - start
    rows = locate_queries(cfg, annotations, cache, args.clips)
    challenge = challenge_metrics(cfg, annotations, cache, work)
    return {
        "annotations": str(args.annotations),
        "max_clips": args.max_clips,
        "weights": args.weights or "demo (shipped)",
        "config": args.config or "stored in the weights",
        "overrides": overrides,
        "search_s": round(searched, 1),
        "wall_s": round(time.perf_counter() - start, 1),
        "challenge": challenge,
        "locate": {name: verdict_summary(rows, name) for name in ("geometric_on", "geometric_off")},
        "queries": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotations", type=Path, required=True, help="vq_val.json of `prvql synth`")
    parser.add_argument("--clips", type=Path, required=True, help="its 5 fps clips folder")
    parser.add_argument("--output", type=Path, required=True, help="the JSON report to write")
    parser.add_argument("--config", help="config file or preset (default: the one stored in the weights)")
    parser.add_argument("--weights", help="weights file (default: the shipped demo model)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--work", type=Path, help="keep the search's curves here (default: a temporary folder)")
    parser.add_argument("--resume", action="store_true", help="reuse the curves cached in --work")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-clips", type=int, help="only the first N clips of the annotations (file order)")
    args = parser.parse_args(argv)
    if not args.output.parent.is_dir():
        print(f"synthetic_confidence: error: --output: no folder {args.output.parent}", file=sys.stderr)
        return 2
    try:
        with tempfile.TemporaryDirectory() as tmp:
            report = run(args, args.work or Path(tmp))
    except PRVQLError as exc:
        text = exc.named(FLAGS[exc.field]) if exc.field in FLAGS else str(exc)
        print(f"synthetic_confidence: error: {one_line(text)}", file=sys.stderr)
        return 2
    atomic_write_json(args.output, report, indent=1)
    print(json.dumps({k: report[k] for k in ("search_s", "challenge", "locate")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
