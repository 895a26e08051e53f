"""Plot per-frame ROC curves of score caches against ``synthetic_occurrences`` (pooled over all queries).

    python -m experiments.demo_model.plot_frame_roc --annotations HELDOUT/vq_val.json \\
        --cache "before=runs/a/predictions.json.cache" --cache "after=runs/b/predictions.json.cache" \\
        --out experiments/demo_model/figures/demo_frame_roc.png

A frame is positive when the target is visible in it (as in ``demo_heldout.py``, whose AUROCs the legend repeats:
pooled / mean per query). The ROC points are the (false, true) positive rates at every distinct score,
computed with numpy (scikit-learn's ``roc_curve`` does the same; it is not a dependency).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments.demo_model.demo_heldout import auroc, frame_curves  # noqa: E402
from prvql.atomic import atomic_path  # noqa: E402
from prvql.errors import PRVQLError  # noqa: E402
from prvql.infer.score_cache import ScoreCache  # noqa: E402


def roc_points(positives: np.ndarray, negatives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[P] and [N] scores -> false and true positive rates at every threshold (from (0, 0) to (1, 1))."""
    thresholds = np.unique(np.concatenate([positives, negatives]))[::-1]
    tpr = 1 - np.searchsorted(np.sort(positives), thresholds, side="left") / len(positives)  # share >= threshold
    fpr = 1 - np.searchsorted(np.sort(negatives), thresholds, side="left") / len(negatives)
    return np.concatenate([[0.0], fpr, [1.0]]), np.concatenate([[0.0], tpr, [1.0]])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotations", type=Path, required=True, help="prvql synth annotation file (labels)")
    parser.add_argument("--cache", action="append", required=True, metavar="LABEL=DIR", help="a score cache")
    parser.add_argument("--title", default="per-frame ROC, pooled over queries")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args()
    fig, ax = plt.subplots(figsize=(5, 5))
    for item in args.cache:
        label, sep, folder = item.partition("=")
        if not sep or not Path(folder).is_dir():
            print(f"plot_frame_roc: error: --cache {item!r}: expected LABEL=DIR of an existing folder", file=sys.stderr)
            return 2
        try:
            curves = frame_curves(args.annotations, ScoreCache(Path(folder)))
        except PRVQLError as exc:
            print(f"plot_frame_roc: error: {exc}", file=sys.stderr)
            return 2
        if not curves:
            print(f"plot_frame_roc: error: {folder}: no cached curve of a labelled query", file=sys.stderr)
            return 2
        pos, neg = np.concatenate([p for p, _ in curves]), np.concatenate([n for _, n in curves])
        per_query = np.mean([auroc(p, n) for p, n in curves if len(p) and len(n)])
        fpr, tpr = roc_points(pos, neg)
        ax.plot(fpr, tpr, label=f"{label}: AUROC {auroc(pos, neg):.3f} / {per_query:.3f}")
    ax.plot([0, 1], [0, 1], ":", color="grey", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=args.title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    try:
        with atomic_path(args.out) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    except OSError as exc:
        print(f"plot_frame_roc: error: --out {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
