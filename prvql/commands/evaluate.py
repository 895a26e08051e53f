"""Score a challenge predictions file with the official Ego4D VQ2D metrics (tAP, stAP, success, recovery).

Only valid query sets with a response track are evaluated, in annotation order. Prints the overall metrics and the
per-scale table (small < 64², medium < 192², large; by the largest ground-truth box area). With --json, prints one
JSON object: {"tAP", "tAP25", "stAP", "stAP25", "success", "recovery", "num_queries", "scales": {...}}; AP values
are fractions, success and recovery percentages, as the official evaluate_vq.py reports them.
"""

from __future__ import annotations

import argparse
import json

COLUMNS = ("tAP", "tAP25", "stAP", "stAP25", "success", "recovery", "num_queries")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--annotations", required=True, help="Ego4D VQ2D annotation file (e.g. vq_val.json)")
    parser.add_argument("--predictions", required=True, help="challenge predictions JSON (from `prvql predict`)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def format_table(result: dict) -> str:
    """The overall row and one row per scale, fixed-width."""
    lines = [f"{'':<8}" + "".join(f"{c:>12}" for c in COLUMNS)]
    rows = [("all", result)] + list(result["scales"].items())
    for name, row in rows:
        cells = []
        for column in COLUMNS:
            value = row.get(column)
            if value is None:
                cells.append(f"{'-':>12}")
            elif column == "num_queries":
                cells.append(f"{value:>12d}")
            elif column in ("success", "recovery"):
                cells.append(f"{value:>12.2f}")
            else:
                cells.append(f"{value:>12.4f}")
        lines.append(f"{name:<8}" + "".join(cells))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from prvql.data.annotations import load_annotations
    from prvql.infer.predictions import load_predictions
    from prvql.metrics.evaluation import evaluate_predictions

    annotations = load_annotations(args.annotations)
    predictions = load_predictions(args.predictions, annotations)
    result = evaluate_predictions(annotations, predictions).to_dict()
    print(json.dumps(result) if args.json else format_table(result))
    return 0
