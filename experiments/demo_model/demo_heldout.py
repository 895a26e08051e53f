"""Honest evaluation of a demo model on held-out synthetic queries (objects and backgrounds never seen in training).

Runs, for one weights file:

1. ``prvql predict`` over the held-out annotations, then ``prvql evaluate --json`` (the official VQ2D metrics);
2. the no-skill baseline (benchmarks/no_skill_baseline.py, priors from the TRAINING annotations), evaluated the
   same way;
3. per-frame AUROC of the score curves: every frame before the query frame is a positive if the target is visible
   in it (``synthetic_occurrences``, written by ``prvql synth``; earlier sightings count), a negative otherwise.
   Reported pooled over all queries and as the mean of per-query AUROCs (queries with both classes);
   AUROC = Mann-Whitney U / (n_pos n_neg) (scipy);
4. ``prvql demo --seed N --no-video`` for seeds 0-11 (the demo's episodes; the default seed is one of them).

Writes ``OUT/summary.json`` and ``OUT/summary.md`` (a markdown table for RUN_LOG.md), and prints the table.
``--checkpoint RUN/checkpoint.pt`` evaluates a running training job's latest state (exported to
``OUT/weights.safetensors`` first). ``--set KEY=VALUE`` (e.g. the post-processing chosen on a validation split by
``tune_postprocess.py``) is written into the config of ``OUT/weights.safetensors``, which is then the file
evaluated everywhere, demo seeds included: the file to ship is the file measured.

    python -m experiments.demo_model.demo_heldout --weights prvql/weights/demo.safetensors \
        --annotations /work/runs/synth-v2/heldout/vq_val.json --clips /work/runs/synth-v2/heldout/clips \
        --train-annotations /work/runs/synth-v2/train/vq_train.json --out runs/heldout_shipped
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from scipy.stats import mannwhitneyu

from prvql.data.annotations import load_annotations, load_synthetic_occurrences
from prvql.errors import PRVQLError
from prvql.infer.score_cache import ScoreCache

ROOT = Path(__file__).resolve().parents[2]  # the repository
METRICS = ("tAP25", "stAP25", "success", "recovery", "tAP", "stAP")


def _prvql(*args: str) -> str:
    """Run ``python -m prvql ARGS`` and return its stdout (stderr passes through)."""
    done = subprocess.run([sys.executable, "-m", "prvql", *args], check=True, stdout=subprocess.PIPE, text=True)
    return done.stdout


def _evaluate(annotations: Path, predictions: Path) -> dict:
    return json.loads(
        _prvql("evaluate", "--annotations", str(annotations), "--predictions", str(predictions), "--json")
    )


def auroc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counted half (Mann-Whitney U / (n_pos n_neg))."""
    u = mannwhitneyu(positives, negatives, alternative="two-sided").statistic
    return float(u / (len(positives) * len(negatives)))


def frame_curves(annotations: Path, cache: ScoreCache) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per labelled query with a cached curve: (scores of its positive frames, scores of its negative frames), where
    a frame is positive when the target is visible in it (``synthetic_occurrences``)."""
    occurrences = load_synthetic_occurrences(annotations)
    if not occurrences:
        raise PRVQLError(f"{annotations}: no synthetic_occurrences (regenerate the set with this version of prvql)")
    curves = []
    for record in load_annotations(annotations).valid_records():
        if record.key not in occurrences or record.key not in cache:
            continue
        scores = cache.load(record.key).scores
        labels = np.array([j in occurrences[record.key] for j in range(len(scores))])
        curves.append((scores[labels], scores[~labels]))
    return curves


def frame_aurocs(annotations: Path, cache: ScoreCache) -> dict:
    """Pooled and mean per-query AUROC of the cached score curves against ``synthetic_occurrences``."""
    curves = frame_curves(annotations, cache)
    per_query = [auroc(p, n) for p, n in curves if len(p) and len(n)]
    pos, neg = np.concatenate([p for p, _ in curves]), np.concatenate([n for _, n in curves])
    return {
        "frame_auroc_pooled": auroc(pos, neg),
        "frame_auroc_mean_per_query": float(np.mean(per_query)),
        "frames_positive": int(len(pos)),
        "frames_negative": int(len(neg)),
        "queries_with_curves": len(per_query),
    }


def demo_seeds(weights: str | None, seeds: list[int], out: Path) -> list[dict]:
    """``prvql demo --seed N --no-video`` for each seed: its tIoU, stIoU, success and timings."""
    rows = []
    for seed in seeds:
        folder = out / f"demo_seed{seed}"
        args = ["demo", "--seed", str(seed), "--no-video", "--output", str(folder), "--device", "cpu"]
        _prvql(*args, *(["--weights", weights] if weights else []))
        m = json.loads((folder / "metrics.json").read_text())
        truth = m["episode"]["ground_truth"]
        rows.append(
            {
                "seed": seed,
                "object": m["episode"]["object_title"],
                "truth": [truth[0]["frame"], truth[-1]["frame"]],
                "predicted": [m["prediction"]["start"], m["prediction"]["end"]],
                "tiou": m["tiou"],
                "stiou": m["stiou"],
                "success": m["metrics"]["success"] > 0,
                "seconds": m["seconds"]["total"],
            }
        )
        print(f"demo seed {seed}: stIoU {m['stiou']:.3f} success {rows[-1]['success']}", flush=True)
    return rows


def markdown(summary: dict) -> str:
    lines = ["| predictions | " + " | ".join(METRICS) + " | frame AUROC (pooled / per query) |"]
    lines.append("|---" * (len(METRICS) + 2) + "|")
    for name in ("baseline", "model"):
        row = summary[name]
        cells = [f"{row[k]:.1f}" if k in ("success", "recovery") else f"{row[k]:.3f}" for k in METRICS]
        extra = (
            "-" if name == "baseline" else f"{row['frame_auroc_pooled']:.3f} / {row['frame_auroc_mean_per_query']:.3f}"
        )
        lines.append(
            f"| {'no-skill baseline' if name == 'baseline' else 'model'} | " + " | ".join(cells) + f" | {extra} |"
        )
    if summary.get("demo"):
        lines += ["", "| seed | object | truth | predicted | tIoU | stIoU | success |", "|---|---|---|---|---|---|---|"]
        for r in summary["demo"]:
            lines.append(
                f"| {r['seed']} | {r['object']} | {r['truth'][0]}-{r['truth'][1]} | "
                f"{r['predicted'][0]}-{r['predicted'][1]} | {r['tiou']:.2f} | {r['stiou']:.2f} | "
                f"{'yes' if r['success'] else 'no'} |"
            )
        hits = sum(r["success"] for r in summary["demo"])
        overlaps = sum(r["stiou"] > 0 for r in summary["demo"])
        n = len(summary["demo"])
        lines.append(
            f"\n{hits} of {n} demo seeds succeed (official success: stIoU >= 0.05); "
            f"{overlaps} of {n} tracks overlap the truth (stIoU > 0)."
        )
    return "\n".join(lines) + "\n"


def export_checkpoint(checkpoint: Path, out: Path, overrides: list[str]) -> Path:
    """Weights file (with config, ``overrides`` applied) of a training checkpoint's trainable state."""
    from prvql.config import apply_overrides, config_from_dict
    from prvql.model import build_prvql
    from prvql.train.checkpoint import load_training_checkpoint
    from prvql.weights_file import load_trainable_state, save_weights

    state = load_training_checkpoint(checkpoint)
    cfg = apply_overrides(config_from_dict(state["config"]), overrides)
    model = build_prvql(cfg.model)
    load_trainable_state(model, state["model"], checkpoint)
    path = out / "weights.safetensors"
    save_weights(model, path, cfg, extra={"iteration": str(state["iteration"])})
    print(f"{checkpoint}: iteration {state['iteration']} -> {path}")
    return path


def rewrite_weights(weights: Path, out: Path, overrides: list[str]) -> Path:
    """A copy of a weights file with ``overrides`` applied to its config (tensors and other metadata unchanged)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from prvql.config import apply_overrides, config_to_dict
    from prvql.weights_file import load_weights_config

    with safe_open(str(weights), "pt") as f:
        metadata = dict(f.metadata())
    metadata["config"] = json.dumps(config_to_dict(apply_overrides(load_weights_config(weights), overrides)))
    path = out / "weights.safetensors"
    save_file(load_file(str(weights)), str(path), metadata=metadata)
    print(f"{weights} with {' '.join(overrides)} -> {path}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", help="weights file (default: the shipped demo model)")
    parser.add_argument("--checkpoint", type=Path, help="a training checkpoint.pt to evaluate instead of --weights")
    parser.add_argument("--annotations", required=True, type=Path, help="held-out annotations (vq_val.json)")
    parser.add_argument("--clips", required=True, type=Path, help="their 5 fps clips folder")
    parser.add_argument("--train-annotations", required=True, type=Path, help="training annotations (baseline)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--seeds", type=int, default=12, help="demo seeds 0..N-1 (default 12; 0 skips)")
    parser.add_argument("--resume", action="store_true", help="reuse the score cache of an earlier run")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable), see above"
    )
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    if args.checkpoint is not None:
        args.weights = str(export_checkpoint(args.checkpoint, args.out, args.set))
    elif args.set:
        shipped = Path(args.weights) if args.weights else ROOT / "prvql" / "weights" / "demo.safetensors"
        args.weights = str(rewrite_weights(shipped, args.out, args.set))
    predictions = args.out / "predictions.json"
    weights = ["--weights", args.weights] if args.weights else []
    predict = ["predict", *weights, "--annotations", str(args.annotations), "--clips", str(args.clips)]
    _prvql(*predict, "--output", str(predictions), "--device", "cpu", *(["--resume"] if args.resume else []))
    baseline = args.out / "baseline.json"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "no_skill_baseline.py"), "--train", str(args.train_annotations)]
        + ["--annotations", str(args.annotations), "--output", str(baseline)],
        check=True,
    )
    summary = {
        "weights": args.weights or "prvql/weights/demo.safetensors",
        "annotations": str(args.annotations),
        "overrides": args.set,
        "model": _evaluate(args.annotations, predictions),
        "baseline": _evaluate(args.annotations, baseline),
    }
    try:
        summary["model"].update(
            frame_aurocs(args.annotations, ScoreCache(predictions.with_name(predictions.name + ".cache")))
        )
    except PRVQLError as exc:
        sys.exit(f"demo_heldout: error: {exc}")
    summary["demo"] = demo_seeds(args.weights, list(range(args.seeds)), args.out)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    table = markdown(summary)
    (args.out / "summary.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
