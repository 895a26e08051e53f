"""Fit the colour verification's coefficients (``inference.verification``) on labelled score curves.

Colour verification (``prvql.infer.verification``, not in the paper) re-scores each frame as
``sigmoid(score_weight * logit(score) + colour_weight * distance + bias)``. This script fits the three numbers by
logistic regression on every searched frame of a ``prvql synth`` annotation file, a frame being positive when the
target is visible in it (``synthetic_occurrences``). Fit on episodes the model was not trained on, and never on the
split you will report.

First score the episodes with verification on and its default, identity coefficients (score_weight 1,
colour_weight 0, bias 0: the cache then holds the model's own scores and each box's colour distance), then fit::

    prvql predict --weights W --annotations A --clips C --output OUT/p.json --set inference.verification.enabled=true
    python -m experiments.demo_model.fit_verification --annotations A --cache OUT/p.json.cache

It prints the ``--set`` overrides to write into a weights file with
``python -m experiments.demo_model.average_checkpoints W --set ...``.
The fit is a three-parameter logistic regression solved by ``torch.optim.LBFGS`` on the exact log-loss (torch is
already a dependency; scikit-learn is not).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from prvql.atomic import atomic_write_json
from prvql.data.annotations import load_annotations, load_synthetic_occurrences
from prvql.errors import PRVQLError
from prvql.infer.score_cache import ScoreCache
from prvql.infer.verification import score_logits


def labelled_frames(annotations: Path, cache: ScoreCache) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """[F] logits, [F] colour distances and [F] labels of every cached frame of the labelled queries; and the
    number of queries."""
    occurrences = load_synthetic_occurrences(annotations)
    if not occurrences:
        raise PRVQLError(f"{annotations}: no query set lists synthetic_occurrences (a prvql synth file is needed)")
    logits, distances, labels, queries = [], [], [], 0
    for record in load_annotations(annotations).valid_records():
        if record.key not in occurrences or record.key not in cache:
            continue
        result = cache.load(record.key)
        if result.colour_distances is None:
            raise PRVQLError(
                f"{cache.path(record.key)}: no colour distances (predict with inference.verification.enabled=true)"
            )
        logits.append(score_logits(result.scores))
        distances.append(result.colour_distances.astype(np.float64))
        labels.append(np.array([j in occurrences[record.key] for j in range(len(result))], np.float64))
        queries += 1
    if not queries:
        raise PRVQLError(f"{cache.root}: no cached curve of a labelled query of {annotations.name}")
    return np.concatenate(logits), np.concatenate(distances), np.concatenate(labels), queries


def fit_logistic(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, float]:
    """[F, D] features and [F] 0/1 labels -> (weights [D], bias) minimising the mean log-loss."""
    x = torch.from_numpy(features)
    y = torch.from_numpy(labels)
    linear = torch.nn.Linear(features.shape[1], 1).double()
    optimiser = torch.optim.LBFGS(linear.parameters(), max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(linear(x)[:, 0], y)
        loss.backward()
        return loss

    optimiser.step(closure)
    return linear.weight.detach()[0].numpy(), float(linear.bias.detach()[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotations", type=Path, required=True, help="prvql synth annotation file (labels)")
    parser.add_argument("--cache", type=Path, required=True, help="score cache of prvql predict (OUTPUT.cache)")
    parser.add_argument("--out", type=Path, help="also write the coefficients here (JSON)")
    args = parser.parse_args()
    try:
        logits, distances, labels, queries = labelled_frames(args.annotations, ScoreCache(args.cache))
    except PRVQLError as exc:
        print(f"fit_verification: error: {exc}", file=sys.stderr)
        return 2
    if labels.min() == labels.max():
        print("fit_verification: error: every frame has the same label; nothing to fit", file=sys.stderr)
        return 2
    (score_weight, colour_weight), bias = fit_logistic(np.stack([logits, distances], 1), labels)
    result = {
        "score_weight": round(float(score_weight), 6),
        "colour_weight": round(float(colour_weight), 6),
        "bias": round(bias, 6),
        "frames": int(len(labels)),
        "positive_frames": int(labels.sum()),
        "queries": queries,
    }
    if args.out:
        try:
            atomic_write_json(args.out, result, indent=1)
        except OSError as exc:
            print(f"fit_verification: error: --out {args.out}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    print(json.dumps(result))
    print(
        "--set inference.verification.enabled=true"
        + "".join(f" --set inference.verification.{k}={result[k]}" for k in ("score_weight", "colour_weight", "bias"))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
