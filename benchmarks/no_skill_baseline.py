"""No-skill baseline for VQ2D: a predictions file that never looks at the video or the query.

For every query it predicts the last ``L`` frames before the query frame (the response track is the LAST
sighting, so "just before the query" is the strongest blind guess), each with the same box: ``L`` is the median
response-track length and the box the median ground-truth box of the TRAINING annotations (both in pixels).
Evaluate it like any other predictions file:

    python benchmarks/no_skill_baseline.py --train data/synth_demo/vq_train.json \
        --annotations data/synth_demo/vq_val.json --output runs/baseline_pred.json
    prvql evaluate --annotations data/synth_demo/vq_val.json --predictions runs/baseline_pred.json
"""

from __future__ import annotations

import argparse

import numpy as np

from prvql.data.annotations import load_annotations
from prvql.infer.predictions import write_predictions
from prvql.metrics.structures import ResponseTrack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True, help="training annotations (for the length and box priors)")
    parser.add_argument("--annotations", required=True, help="annotations to predict for")
    parser.add_argument("--output", required=True, help="predictions JSON to write")
    args = parser.parse_args()

    train = [r for r in load_annotations(args.train).valid_records() if r.response_track]
    length = int(np.median([len(r.response_track) for r in train]))
    box = np.median(np.array([b for r in train for _, b in r.response_track], dtype=np.float64), axis=0)

    annotations = load_annotations(args.annotations)
    tracks = {}
    for record in annotations.records():
        if not record.is_valid or record.query_frame < 1:
            continue
        frames = np.arange(max(0, record.query_frame - length), record.query_frame)
        tracks[record.key] = ResponseTrack(frames, np.repeat(box[None], len(frames), axis=0), 1.0)
    write_predictions(args.output, annotations, tracks)
    print(f"wrote {args.output}: {len(tracks)} queries, last {length} frames, box {np.round(box, 1).tolist()}")


if __name__ == "__main__":
    main()
