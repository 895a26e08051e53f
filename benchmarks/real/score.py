"""Score ``prvql locate`` on the real-footage set (built by ``benchmarks.real.build``).

```
python -m benchmarks.real.score --data data/real --split tune|heldout|all [--config C] [--weights W] \
    [--set KEY=VALUE ...] [--device cpu] [--output results.json]
```

Every query runs through :func:`prvql.infer.locate.locate_video`, what ``prvql locate`` runs (box queries: the
frames before the query frame; crop queries: the whole clip), with the shipped demo model unless ``--config`` /
``--weights`` say otherwise. Reported per split:

- the official VQ2D metrics (``prvql.metrics``: tAP25, stAP25, success, recovery) on the queries whose object is
  in the searched frames, against the response track (the last contiguous run of truth boxes);
- per-frame box IoU (``torchvision.ops.box_iou``) on the frames where the object is visible AND the predicted
  track covers them: their number, the mean IoU and the share with IoU >= 0.5;
- on the absent-object queries: how many get a track at all, and the peak score of each query, present or absent
  (what a user has today to tell a find from a guess).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_iou

from prvql.metrics import ResponseTrack
from prvql.metrics.vq2d import SUCCESS_THRESHOLD, query_overlaps, summarize


def frame_ious(track: ResponseTrack, truth: dict[int, list[float]]) -> np.ndarray:
    """float64 [M] box IoU on the M frames that both the predicted ``track`` and ``truth`` (frame -> xyxy) hold."""
    frames = [int(f) for f in track.frames if int(f) in truth]
    if not frames:
        return np.zeros(0)
    pred = torch.as_tensor(np.stack([track.boxes[int(np.flatnonzero(track.frames == f)[0])] for f in frames]))
    gt = torch.as_tensor(np.asarray([truth[f] for f in frames], dtype=np.float64))
    return box_iou(pred, gt).diagonal().numpy()


def query_result(entry: dict, track: ResponseTrack, peak_score: float) -> dict:
    """The per-query record: the track, and for a present object its tIoU / stIoU and per-frame IoUs."""
    truth = {int(f): b for f, b in entry["truth"].items()}
    out = {
        "id": entry["id"],
        "split": entry["split"],
        "absent": entry["absent"],
        "track": [int(track.frames[0]), int(track.frames[-1])] if len(track) else None,
        "peak_score": float(peak_score),
    }
    if not entry["absent"]:
        gt = ResponseTrack.from_pairs([(f, b) for f, b in entry["response_track"]])
        overlaps = query_overlaps([track], [gt])
        ious = frame_ious(track, truth)
        out.update(
            tiou=float(overlaps.tiou[0]),
            stiou=float(overlaps.stiou[0]),
            right=bool(overlaps.stiou[0] >= SUCCESS_THRESHOLD),
            frame_ious=[round(float(v), 4) for v in ious],
        )
    return out


def summarize_split(results: list[dict], tracks: dict[str, ResponseTrack], entries: dict[str, dict]) -> dict:
    """Official metrics + per-frame IoU over the present queries, and the absent queries' counts."""
    present = [r for r in results if not r["absent"]]
    absent = [r for r in results if r["absent"]]
    out: dict = {"queries": len(results), "present": len(present), "absent": len(absent)}
    if present:
        gts = [ResponseTrack.from_pairs([(f, b) for f, b in entries[r["id"]]["response_track"]]) for r in present]
        out["official"] = summarize(query_overlaps([tracks[r["id"]] for r in present], gts)).to_dict()
        ious = np.concatenate([np.asarray(r["frame_ious"], dtype=np.float64) for r in present])
        out["frames_covered"] = int(len(ious))
        out["frames_visible"] = int(sum(len(entries[r["id"]]["truth"]) for r in present))
        out["mean_frame_iou"] = float(ious.mean()) if len(ious) else 0.0
        out["share_frame_iou_ge_0.5"] = float((ious >= 0.5).mean()) if len(ious) else 0.0
        out["peak_score_right"] = [r["peak_score"] for r in present if r["right"]]
        out["peak_score_wrong"] = [r["peak_score"] for r in present if not r["right"]]
    if absent:
        out["absent_with_track"] = sum(r["track"] is not None for r in absent)
        out["peak_score_absent"] = [r["peak_score"] for r in absent]
    if results and all(r.get("signals", {}).get("confidence") is not None for r in results):
        out |= verdict_summary(results)
    return out


def verdict_summary(results: list[dict]) -> dict:
    """AUROC of the confidence for "the track is right" (a present object with stIoU >= 0.05; absent objects and
    wrong tracks are the negatives), and the share of "not found" among absent-object queries and among right
    tracks."""
    from scipy.stats import mannwhitneyu

    right = np.array([bool(r.get("right", False)) for r in results])
    confidence = np.array([r["signals"]["confidence"] for r in results], dtype=np.float64)
    found = np.array([r["signals"]["found"] for r in results], dtype=bool)
    absent = np.array([r["absent"] for r in results], dtype=bool)
    out: dict = {"right": int(right.sum()), "not_right": int((~right).sum())}
    if right.any() and (~right).any():
        u = mannwhitneyu(confidence[right], confidence[~right]).statistic  # AUROC = U / (n1 n0), ties count half
        out["confidence_auroc"] = float(u / (right.sum() * (~right).sum()))
    out["absent_not_found"] = float((~found[absent]).mean()) if absent.any() else None
    out["right_not_found"] = float((~found[right]).mean()) if right.any() else None
    return out


def _clip_frames(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def from_curve(cfg, entry: dict, data: Path, track_json: Path):  # noqa: ANN001, ANN201 (Config -> LocateResult)
    """The :class:`~prvql.infer.locate.LocateResult` of a kept ``track.json``: its per-frame curve post-processed
    with ``cfg.inference`` and, with ``inference.geometric.enabled``, verified on the clip's frames, as
    ``locate_video`` does right after its search (scores are read back rounded to 1e-5)."""
    from prvql.data.images import read_image
    from prvql.infer.locate import LocateResult, apply_geometric, with_verdict
    from prvql.infer.postprocess import build_postprocessor

    curve = json.loads(track_json.read_text())["curve"]
    scores = np.asarray([c["score"] for c in curve], dtype=np.float32)
    boxes = np.asarray([c["box"] for c in curve], dtype=np.float32)
    frames = _clip_frames(data / entry["video"])
    if "image" in entry["query"]:
        image = read_image(data / entry["query"]["image"], "query image")
        box = (0.0, 0.0, float(image.shape[1]), float(image.shape[0]))
    else:
        image, box = frames[entry["query"]["frame"]], tuple(entry["query"]["box"])
    track, window = build_postprocessor(cfg.inference)(scores, boxes)
    result = LocateResult(scores, boxes, track, window, frames[0].shape[:2], image, box)
    if cfg.inference.geometric.enabled:  # a box query's frame is never searched; a crop image's origin is unknown
        result = apply_geometric(cfg, result, lambda k: [frames[i] for i in k], find_source="image" in entry["query"])
    return with_verdict(cfg, result)


def run(
    data: Path,
    split: str,
    config: str | None,
    weights: str | None,
    overrides: list[str],
    device: str,
    keep: Path | None,
    curves: Path | None = None,
) -> dict:
    """Locate every query of ``split`` in the built set at ``data`` (or re-evaluate the curves kept in ``curves``
    by an earlier run with ``keep``); returns the report."""
    from prvql.infer.locate import Query, locate_video
    from prvql.infer.trained_model import load_inference_model, resolve_device

    index = json.loads((data / "queries.json").read_text())
    entries = {e["id"]: e for e in index["queries"] if split == "all" or e["split"] == split}
    cfg, model = load_inference_model(config, weights, overrides)
    dev = resolve_device(device)
    results, tracks = [], {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for qid, entry in entries.items():
            if curves is not None:
                found = from_curve(cfg, entry, data, curves / qid / "track.json")
            else:
                if "image" in entry["query"]:
                    query = Query(frame=0, search="anywhere", crop=data / entry["query"]["image"])
                else:
                    query = Query(frame=entry["query"]["frame"], search="before", box=tuple(entry["query"]["box"]))
                out_dir = (keep or Path(tmp)) / qid
                found = locate_video(
                    cfg, model, dev, data / entry["video"], query, out_dir, name=entry["video"], render_video=False
                ).result
            if len(found) != entry["searched_frames"]:
                raise RuntimeError(f"{qid}: searched {len(found)} frames, expected {entry['searched_frames']}")
            tracks[qid] = found.track
            results.append(query_result(entry, found.track, found.window.peak_score) | {"signals": signals(found)})
            print(json.dumps(results[-1] | {"frame_ious": None}), flush=True)
    return {
        "split": split,
        "config": config or "demo (shipped)",
        "weights": weights or "demo (shipped)",
        "overrides": overrides,
        "curves_from": str(curves) if curves else None,
        "wall_s": round(time.perf_counter() - start, 1),
        "summary": summarize_split(results, tracks, entries),
        "queries": results,
    }


def signals(result) -> dict:  # noqa: ANN001 (LocateResult)
    """The curve's peak, median and spread, the geometric inliers, and the confidence and verdict."""
    scores = np.asarray(result.scores, dtype=np.float64)
    geo = result.geometric
    return {
        "peak": float(result.window.peak_score),
        "max": float(scores.max()),
        "median": float(np.median(scores)),
        "std": float(scores.std()),
        "track_frames": len(result.track),
        "frames": len(scores),
        "inliers": None if geo is None else geo.best_inliers,
        "verified": None if geo is None else geo.verified,
        "crop_source_frame": None if geo is None else geo.crop_source_frame,
        "confidence": None if result.verdict is None else result.verdict.confidence,
        "found": None if result.verdict is None else result.verdict.found,
        "confidence_signals": None if result.verdict is None else result.verdict.signals,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder written by benchmarks.real.build")
    parser.add_argument("--split", choices=("tune", "heldout", "all"), required=True)
    parser.add_argument("--config")
    parser.add_argument("--weights")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--keep", type=Path, help="keep each query's track.json / scores.png here")
    parser.add_argument("--curves", type=Path, help="re-evaluate the curves an earlier --keep run kept (no search)")
    parser.add_argument("--output", type=Path, help="write the report here")
    args = parser.parse_args(argv)
    if not (args.data / "queries.json").is_file():
        print(f"{args.data}: no queries.json; build the set with python -m benchmarks.real.build", file=sys.stderr)
        return 2
    report = run(args.data, args.split, args.config, args.weights, args.overrides, args.device, args.keep, args.curves)
    print(json.dumps(report["summary"], indent=1))
    if args.output is not None:
        args.output.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
