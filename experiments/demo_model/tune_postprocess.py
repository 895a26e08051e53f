"""Choose the post-processing settings (median kernel, peak ratio, track ratio, track score) on a validation set.

The model is not run again: the per-query score curves and boxes that ``prvql predict`` cached
(``OUTPUT.cache/<key>.npz``) are turned into response tracks under every combination of the grid, and each
combination is scored with the official VQ2D metrics. Prints the best rows and writes every row to ``--out``.

Choose on a split the final numbers are NOT reported on (e.g. the training pools' ``vq_val.json``), then report
the chosen setting once on the held-out set. The chosen values go into a config as
``inference.median_kernel / inference.peak_ratio / inference.track_ratio / inference.score``. The track score
changes only the AP metrics (tAP, stAP: it ranks the tracks); ``constant`` is what every published VQ2D result
uses, ``peak`` (the smoothed score at the chosen peak) lets a confident track rank above a doubtful one.

    prvql predict --weights W --annotations val.json --clips clips --output runs/val.json
    python -m experiments.demo_model.tune_postprocess --annotations val.json --cache runs/val.json.cache \
        --out runs/tune.json
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

from prvql.atomic import atomic_write_json
from prvql.data.annotations import load_annotations
from prvql.errors import PRVQLError
from prvql.infer.challenge import tracks_from_cache
from prvql.infer.postprocess import SCORE_MODES, PostProcessor
from prvql.infer.score_cache import ScoreCache
from prvql.metrics.evaluation import evaluate_predictions

METRICS = ("tAP25", "stAP25", "success", "recovery", "tAP", "stAP")


def grid_search(
    annotations_path: Path,
    cache_dir: Path,
    kernels: list[int],
    peak_ratios: list[float],
    track_ratios: list[float],
    score_modes: list[str],
    objective: list[str],
    after_visual_crop: bool = False,
) -> list[dict]:
    """Every grid point with its metrics and ``objective`` score, best first (ties: the earlier grid point first).

    The score is the mean, over the ``objective`` metrics, of each metric divided by its best value on the grid
    (1.0 = best on all of them; scale-free, so AP fractions and success percentages weigh the same).
    """
    annotations = load_annotations(annotations_path)
    cache = ScoreCache(cache_dir)
    rows = []
    for kernel, peak_ratio, track_ratio, score in itertools.product(kernels, peak_ratios, track_ratios, score_modes):
        post = PostProcessor(
            median_kernel=kernel,
            peak_ratio=peak_ratio,
            track_ratio=track_ratio,
            score_mode=score,
            after_visual_crop=after_visual_crop,
        )
        metrics = evaluate_predictions(annotations, tracks_from_cache(annotations, cache, post)).overall.to_dict()
        rows.append(
            {
                "median_kernel": kernel,
                "peak_ratio": peak_ratio,
                "track_ratio": track_ratio,
                "score": score,
                **{k: metrics[k] for k in METRICS},
            }
        )
    best = {k: max(r[k] for r in rows) for k in objective}
    for row in rows:
        row["objective"] = sum(row[k] / best[k] if best[k] > 0 else 0.0 for k in objective) / len(objective)
    return sorted(rows, key=lambda r: -r["objective"])


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotations", type=Path, required=True, help="the validation annotation file")
    parser.add_argument("--cache", type=Path, required=True, help="score folder written by `prvql predict`")
    parser.add_argument("--kernels", default="1,3,5,7,9", help="median kernels (odd), comma-separated")
    parser.add_argument("--peak-ratios", default="0.5,0.6,0.7,0.79,0.85,0.9,0.95,1.0")
    parser.add_argument("--track-ratios", default="0.4,0.5,0.585,0.7,0.8,0.9")
    parser.add_argument("--score-modes", default="constant,peak", help=f"track scores, from {', '.join(SCORE_MODES)}")
    parser.add_argument(
        "--objective",
        default="stAP25,success,recovery",
        help=f"comma-separated metrics ({', '.join(METRICS)}) to maximise together (see grid_search)",
    )
    parser.add_argument(
        "--after-visual-crop",
        action="store_true",
        help="apply inference.after_visual_crop (the Ego4D protocol rule; prvql/infer/postprocess.py)",
    )
    parser.add_argument("--top", type=int, default=10, help="rows to print")
    parser.add_argument("--out", type=Path, help="write every row here (JSON)")
    args = parser.parse_args()
    objective = args.objective.split(",")
    unknown = sorted(set(objective) - set(METRICS))
    if unknown:
        parser.error(f"--objective: unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}")
    score_modes = args.score_modes.split(",")
    if not set(score_modes) <= set(SCORE_MODES):
        parser.error(f"--score-modes: choose from {', '.join(SCORE_MODES)} (got {args.score_modes})")
    try:
        grid = [int(k) for k in args.kernels.split(",")], _floats(args.peak_ratios), _floats(args.track_ratios)
        for kernel, peak_ratio, track_ratio in itertools.product(*grid):  # bad values: one line, before any work
            PostProcessor(median_kernel=kernel, peak_ratio=peak_ratio, track_ratio=track_ratio)
        rows = grid_search(args.annotations, args.cache, *grid, score_modes, objective, args.after_visual_crop)
    except (ValueError, PRVQLError) as exc:
        parser.error(str(exc))
    header = ["median_kernel", "peak_ratio", "track_ratio", "score", *METRICS, "objective"]
    print("| " + " | ".join(header) + " |")
    print("|---" * len(header) + "|")
    for row in rows[: args.top]:
        print("| " + " | ".join(f"{row[k]:.3f}" if isinstance(row[k], float) else str(row[k]) for k in header) + " |")
    if args.out:
        atomic_write_json(args.out, {"objective": objective, "rows": rows})


if __name__ == "__main__":
    main()
