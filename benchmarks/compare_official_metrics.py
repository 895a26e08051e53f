"""Cross-check `prvql evaluate` against the official Ego4D VQ2D metrics code on random fixtures.

The official code is not part of this repository: pass a checkout of EGO4D/episodic-memory (it needs pandas and,
with numpy >= 1.24, the ``np.float`` shim applied below). Prints every differing value and the largest difference.

    git clone https://github.com/EGO4D/episodic-memory ~/episodic-memory && pip install pandas
    python benchmarks/compare_official_metrics.py --episodic-memory ~/episodic-memory --seeds 40
"""

import argparse
import contextlib
import io
import json
import pathlib
import random
import sys
import tempfile

import numpy as np

from prvql.data.annotations import load_annotations
from prvql.infer.predictions import load_predictions
from prvql.metrics.evaluation import evaluate_predictions


def box(rng, W=640, H=480, small=False):
    w = rng.randint(4, 60 if small else 400)
    h = rng.randint(4, 60 if small else 400)
    x = rng.randint(0, W - w)
    y = rng.randint(0, H - h)
    return x, y, w, h


def make(seed, n_videos=6, score_mode="const"):
    rng = random.Random(seed)
    ann = {"version": "1.0.5", "videos": []}
    pred = {"version": "1.0.5", "challenge": "ego4d_vq2d_challenge", "results": {"videos": []}}
    k = 0
    for v in range(n_videos):
        va = {"video_uid": f"v{v}", "split": "val", "clips": []}
        vp = {"video_uid": f"v{v}", "clips": []}
        for c in range(rng.randint(1, 3)):
            ca = {
                "clip_uid": f"c{v}_{c}",
                "clip_fps": 5.0,
                "video_start_frame": 0,
                "video_end_frame": 6 * 299,
                "annotations": [],
            }
            cp = {"clip_uid": f"c{v}_{c}", "predictions": []}
            for a in range(rng.randint(1, 3)):
                aa = {"annotation_uid": f"a{v}_{c}_{a}", "query_sets": {}}
                ap = {"annotation_uid": f"a{v}_{c}_{a}", "query_sets": {}}
                for q in ("1", "2", "3"):
                    valid = rng.random() > 0.15
                    small = rng.random() < 0.4
                    s = rng.randint(0, 200)
                    L = rng.randint(1, 25)
                    rt = []
                    bx = box(rng, small=small)
                    for f in range(s, s + L):
                        x, y, w, h = bx
                        x = max(0, min(640 - w, x + rng.randint(-5, 5)))
                        rt.append(
                            {
                                "frame_number": f,
                                "x": x,
                                "y": y,
                                "width": w,
                                "height": h,
                                "original_width": 640,
                                "original_height": 480,
                            }
                        )
                    vc = {
                        "frame_number": 250,
                        "x": 10,
                        "y": 10,
                        "width": 50,
                        "height": 60,
                        "original_width": 640,
                        "original_height": 480,
                    }
                    aa["query_sets"][q] = {
                        "is_valid": valid,
                        "query_frame": 280,
                        "object_title": "o",
                        "visual_crop": vc,
                        "response_track": rt,
                    }
                    r = rng.random()
                    bbs = []
                    if r > 0.1:
                        ps = max(0, s + rng.randint(-15, 15))
                        pl = max(1, L + rng.randint(-10, 10))
                        for f in range(ps, ps + pl):
                            x, y, w, h = bx
                            jx, jy = rng.uniform(-40, 40), rng.uniform(-40, 40)
                            x1 = max(0.0, x + jx)
                            y1 = max(0.0, y + jy)
                            bbs.append(
                                {
                                    "fno": f,
                                    "x1": round(x1, 2),
                                    "y1": round(y1, 2),
                                    "x2": round(x1 + w * rng.uniform(0.6, 1.4), 2),
                                    "y2": round(y1 + h * rng.uniform(0.6, 1.4), 2),
                                }
                            )
                        rng.shuffle(bbs) if rng.random() < 0.2 else None
                    if score_mode == "const":
                        score = 1.0
                    elif score_mode == "ties":
                        score = rng.choice([0.2, 0.5, 0.5, 0.9])
                    else:
                        score = rng.random()
                    ap["query_sets"][q] = {"bboxes": bbs, "score": score} if valid else {"bboxes": [], "score": 0.0}
                    k += 1
                ca["annotations"].append(aa)
                cp["predictions"].append(ap)
            va["clips"].append(ca)
            vp["clips"].append(cp)
        ann["videos"].append(va)
        pred["results"]["videos"].append(vp)
    return ann, pred


def official(ann, pred, pairings=None, ranges=None):
    from vq2d.metrics.metrics import compute_visual_query_metrics
    from vq2d.structures import BBox
    from vq2d.structures import ResponseTrack as RT

    preds, gts, vcs = [], [], []
    for va, vp in zip(ann["videos"], pred["results"]["videos"], strict=True):
        for ca, cp in zip(va["clips"], vp["clips"], strict=True):
            for aa, ap in zip(ca["annotations"], cp["predictions"], strict=True):
                for q, qa in aa["query_sets"].items():
                    if not qa["is_valid"]:
                        continue
                    preds.append([RT.from_json(ap["query_sets"][q])])
                    gts.append(
                        RT(
                            [
                                BBox(r["frame_number"], r["x"], r["y"], r["x"] + r["width"], r["y"] + r["height"])
                                for r in qa["response_track"]
                            ]
                        )
                    )
                    vc = qa["visual_crop"]
                    vcs.append(BBox(0, vc["x"], vc["y"], vc["x"] + vc["width"], vc["y"] + vc["height"]))
    kw = {}
    if pairings:
        kw = {"area_ranges": ranges, "vc_rt_pairings": pairings}
    with contextlib.redirect_stdout(io.StringIO()):
        out = compute_visual_query_metrics(preds, gts, vcs, **kw)
    keys = {
        "tAP": "Temporal AP                    @ IoU=0.25:0.95",
        "tAP25": "Temporal AP                    @ IoU=0.25     ",
        "stAP": "SpatioTemporal AP              @ IoU=0.25:0.95",
        "stAP25": "SpatioTemporal AP              @ IoU=0.25     ",
        "success": "Success (max scr)              @ IoU=0.05     ",
        "recovery": "Tracking % recovery (max scr)  @ IoU=0.50     ",
    }
    return {p: {k: m[v] for k, v in keys.items()} for p, m in out.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodic-memory", required=True, type=pathlib.Path, help="checkout of EGO4D/episodic-memory")
    parser.add_argument("--seeds", type=int, default=40)
    args = parser.parse_args()
    np.float = float  # the official code still uses the alias removed in numpy 1.24
    sys.path.insert(0, str(args.episodic_memory / "VQ2D"))
    from evaluate_vq import validate_model_predictions

    worst = 0.0
    n = 0
    for seed in range(args.seeds):
        for mode in ("const", "ties", "random"):
            ann, pred = make(seed, score_mode=mode)
            d = pathlib.Path(tempfile.mkdtemp())
            (d / "a.json").write_text(json.dumps(ann))
            (d / "p.json").write_text(json.dumps(pred))
            with contextlib.redirect_stderr(io.StringIO()):
                validate_model_predictions(pred, ann)
            A = load_annotations(d / "a.json")
            P = load_predictions(d / "p.json", A)
            ours = evaluate_predictions(A, P).to_dict()
            ranges = {"all": [0, 1e10], "small": [0, 64**2], "medium": [64**2, 192**2], "large": [192**2, 1e10]}
            off = official(
                ann,
                pred,
                {
                    "all": ("all", "all"),
                    "small": ("all", "small"),
                    "medium": ("all", "medium"),
                    "large": ("all", "large"),
                },
                ranges,
            )
            for name, ref in off.items():
                mine = ours if name == "all" else ours["scales"][name]
                for k, v in ref.items():
                    diff = abs(mine[k] - v)
                    worst = max(worst, diff)
                    n += 1
                    if diff != 0.0:
                        print("DIFF", seed, mode, name, k, mine[k], v)
            if seed == 0 and mode == "const":
                print(
                    "example", json.dumps(off["all"]), "\n ours ", {k: ours[k] for k in off["all"]}, ours["num_queries"]
                )
    print("compared values:", n, "max abs diff:", worst)


if __name__ == "__main__":
    main()
