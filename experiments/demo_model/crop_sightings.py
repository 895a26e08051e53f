"""How often tracks land on the visual crop's own sighting (the case ``inference.after_visual_crop`` rules out).

For the valid queries whose visual-crop frame comes before the query frame, counts the tracks of each predictions
file (``prvql predict`` output) that cover the crop's frame and those that meet the response track in time::

    python -m experiments.demo_model.crop_sightings --annotations vq_val.json \
        runs/a/predictions.json runs/b/predictions.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prvql.data.annotations import AnnotationSet, load_annotations
from prvql.errors import PRVQLError
from prvql.infer.predictions import load_predictions


def crop_sightings(annotations: AnnotationSet, predictions: Path) -> dict[str, int]:
    """``queries`` (valid, crop before the query frame), ``on_crop`` (track covers the crop frame) and ``on_truth``
    (track shares a frame with the response track) for one predictions file."""
    tracks = load_predictions(predictions, annotations)
    counts = {"queries": 0, "on_crop": 0, "on_truth": 0}
    for record in annotations.valid_records():
        if record.visual_crop_frame >= record.query_frame:
            continue
        frames = set(tracks[record.key].frames.tolist())
        counts["queries"] += 1
        counts["on_crop"] += record.visual_crop_frame in frames
        counts["on_truth"] += bool(frames & {f for f, _ in record.response_track})
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotations", type=Path, required=True, help="the annotation file the predictions answer")
    parser.add_argument("predictions", type=Path, nargs="+", help="predictions files written by prvql predict")
    args = parser.parse_args()
    try:
        annotations = load_annotations(args.annotations)
        for path in args.predictions:
            c = crop_sightings(annotations, path)
            print(
                f"{path}: {c['queries']} queries with the crop before the query frame; the track covers the crop's "
                f"frame in {c['on_crop']}, meets the truth in {c['on_truth']}"
            )
    except PRVQLError as exc:
        print(f"crop_sightings: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
