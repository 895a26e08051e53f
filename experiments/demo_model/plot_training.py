"""Plot the curves of a training run from its ``log.jsonl``: training loss terms and validation metrics.

    python -m experiments.demo_model.plot_training RUN_DIR [--out docs/images/training_curves.png]

Left: the total training loss and the last stage's weighted terms (log scale). Right: validation frame-level
occurrence accuracy (with the majority-class chance level), AUROC and top-box IoU.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from prvql.atomic import atomic_path  # noqa: E402
from prvql.train.logger import LOG_NAME, read_log  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, help="PNG path (default: RUN_DIR/curves.png)")
    args = parser.parse_args()
    records = read_log(args.run_dir / LOG_NAME)
    train = [r for r in records if r["split"] == "train"]
    val = [r for r in records if r["split"] == "val"]
    last = max(int(k.rsplit("_s", 1)[1]) for k in train[0] if k.startswith("loss_") and "_s" in k)

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    its = [r["iteration"] for r in train]
    left.plot(its, [r["loss"] for r in train], label="total loss", color="black")
    for term in ("prob", "center", "size", "giou", "frame_bce"):
        key = f"loss_{term}_s{last}"
        if key in train[0]:
            left.plot(its, [r[key] for r in train], label=key, alpha=0.8)
    left.set_yscale("log")
    left.set_xlabel("iteration")
    left.set_title("training loss (unweighted terms of the last stage)")
    left.legend(fontsize=8)

    if val:
        vits = [r["iteration"] for r in val]
        right.plot(vits, [r["frame_accuracy"] for r in val], "o-", label="frame occurrence accuracy")
        if "frame_auroc" in val[0]:
            right.plot(vits, [r["frame_auroc"] for r in val], "^-", label="frame occurrence AUROC (chance 0.5)")
        right.plot(vits, [r["top_box_iou"] for r in val], "s-", label="top-box IoU (positive frames)")
        chance = max(val[-1]["occurrence_rate"], 1 - val[-1]["occurrence_rate"])
        right.axhline(chance, ls="--", color="gray", label=f"accuracy chance (majority) {chance:.2f}")
        right.set_ylim(0, 1)
        right.legend(fontsize=8)
    right.set_xlabel("iteration")
    right.set_title("validation (held-out clips)")
    fig.tight_layout()
    out = args.out or args.run_dir / "curves.png"
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
