"""Fit ``inference.confidence`` on the tuning half of the real-footage set and a synthetic fitting split.

```
python -m benchmarks.real.fit_confidence TUNE.json [--synthetic FIT.json] [--signals S1,S2,...] [--folds 5]
```

- ``TUNE.json``: a ``benchmarks.real.score --split tune --output`` report (made with the settings the confidence is
  for, geometric verification on): every query's confidence signals and whether its track was right (stIoU >= 0.05;
  an absent object is never right). A report holding held-out queries is refused.
- ``FIT.json``: a ``benchmarks.synthetic_confidence --output`` report of a synthetic split made for fitting only
  (``prvql synth`` with a seed used nowhere else; never the held-out split): its ``geometric_on`` answers.

The fit is a logistic regression on the chosen :data:`prvql.infer.confidence.SIGNALS` (default: all; the others
get weight 0) over the queries of both sets pooled, with a small L2 penalty on the standardised signals
(scikit-learn is not a dependency: the regularised log-loss is minimised with ``scipy.optimize.minimize``,
L-BFGS). The threshold is the highest at which the right tracks said "not found" stay at most
:data:`RIGHT_NOT_FOUND` (15 %, the target; the mean of the two sets' rates), the middle of the gap to the next
confidence: as many wrong answers and absent objects as possible read "not found" without losing right ones.
Printed: per set, the in-sample AUROC and the ``--folds``-fold cross-validated AUROC (each fold's queries judged
by a fit without them: how the choice of signals generalises) and the verdict's error counts, then the
coefficients as ``--set`` overrides and a YAML block.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_expit
from scipy.stats import mannwhitneyu

from prvql.infer.confidence import SIGNALS, WEIGHTS

L2 = 0.1  # penalty on the standardised weights (not the bias)
RIGHT_NOT_FOUND = 0.15  # the threshold keeps at most this share of right tracks "not found" (the target)
SUCCESS = 0.05  # stIoU of a right track


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = L2) -> tuple[np.ndarray, float]:
    """Weights [F] and bias of ``P(y=1) = sigmoid(x @ w + b)`` for float [M, F] ``x`` and bool [M] ``y``; the penalty
    is on the weights of the standardised signals."""
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-9
    z_x = (x - mean) / std

    def loss(theta: np.ndarray) -> float:
        z = z_x @ theta[:-1] + theta[-1]
        return float(-(log_expit(z)[y].sum() + log_expit(-z)[~y].sum()) + l2 * theta[:-1] @ theta[:-1])

    theta = minimize(loss, np.zeros(x.shape[1] + 1), method="L-BFGS-B").x
    weights = theta[:-1] / std
    return weights, float(theta[-1] - weights @ mean)


def auroc(values: np.ndarray, right: np.ndarray) -> float | None:
    """P(value of a right track > value of a wrong one), ties half; None without both kinds."""
    if right.all() or not right.any():
        return None
    return float(mannwhitneyu(values[right], values[~right]).statistic / (right.sum() * (~right).sum()))


def best_threshold(confidence: np.ndarray, right: np.ndarray, groups: np.ndarray | None = None) -> float:
    """The highest threshold at which the mean over ``groups`` (int [M]; None = one group) of the share of right
    tracks below it is at most :data:`RIGHT_NOT_FOUND`; the middle between the confidences around it."""
    groups = np.zeros(len(right), dtype=int) if groups is None else groups
    values = np.unique(confidence)
    cuts = np.concatenate([[values[0] - 1e-6], (values[1:] + values[:-1]) / 2, [values[-1] + 1e-6]])

    def lost(cut: float) -> float:
        return float(np.mean([(confidence[(groups == g) & right] < cut).mean() for g in np.unique(groups[right])]))

    return float(max(c for c in cuts if lost(c) <= RIGHT_NOT_FOUND))


def load_sets(real: Path, synthetic: Path | None) -> list[tuple[str, list[str], np.ndarray, np.ndarray]]:
    """[(name, query ids, float [M, len(SIGNALS)] signals, bool [M] right)] of the real report and the synthetic
    one; raises ValueError for a real report with held-out queries."""
    queries = json.loads(real.read_text())["queries"]
    if any(q["split"] != "tune" for q in queries):
        raise ValueError(f"{real}: the report holds held-out queries; fit on --split tune only")
    sets = [
        (
            "real tune",
            [q["id"] for q in queries],
            np.array([[q["signals"]["confidence_signals"][s] for s in SIGNALS] for q in queries], dtype=np.float64),
            np.array([bool(q.get("right", False)) for q in queries]),
        )
    ]
    if synthetic is not None:
        rows = [r["geometric_on"] for r in json.loads(synthetic.read_text())["queries"]]
        keys = [r["key"] for r in json.loads(synthetic.read_text())["queries"]]
        x = np.array([[r["signals"][s] for s in SIGNALS] for r in rows], dtype=np.float64)
        sets.append(("synthetic fit", keys, x, np.array([r["stiou"] >= SUCCESS for r in rows])))
    return sets


def cross_validated(x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int) -> np.ndarray:
    """float [M] confidences, each from a fit on the other folds (stratified by group and label, fixed order)."""
    fold = np.zeros(len(y), dtype=int)
    for g in np.unique(groups):
        for label in (False, True):
            idx = np.flatnonzero((groups == g) & (y == label))
            fold[idx] = np.arange(len(idx)) % folds
    out = np.zeros(len(y))
    for k in range(folds):
        test = fold == k
        w, b = fit_logistic(x[~test], y[~test])
        out[test] = expit(x[test] @ w + b)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("real", type=Path, help="benchmarks.real.score report of the tuning half")
    parser.add_argument("--synthetic", type=Path, help="benchmarks.synthetic_confidence report of a fitting split")
    parser.add_argument("--signals", default=",".join(SIGNALS), help="comma-separated signals to fit")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds per set")
    args = parser.parse_args(argv)
    chosen = args.signals.split(",")
    if not set(chosen) <= set(SIGNALS):
        print(f"fit_confidence: --signals: unknown {sorted(set(chosen) - set(SIGNALS))}", file=sys.stderr)
        return 2
    try:
        sets = load_sets(args.real, args.synthetic)
    except ValueError as exc:
        print(f"fit_confidence: {exc}", file=sys.stderr)
        return 2
    columns = [SIGNALS.index(s) for s in chosen]
    x = np.concatenate([s[2][:, columns] for s in sets])
    y = np.concatenate([s[3] for s in sets])
    groups = np.concatenate([np.full(len(s[3]), g) for g, s in enumerate(sets)])
    fitted, bias = fit_logistic(x, y)
    confidence = expit(x @ fitted + bias)
    threshold = best_threshold(confidence, y, groups)
    held = cross_validated(x, y, groups, args.folds)
    for g, (name, ids, _, right) in enumerate(sets):
        c, cv = confidence[groups == g], held[groups == g]
        print(
            f"{name}: {len(right)} queries, {int(right.sum())} right; AUROC {auroc(c, right) or float('nan'):.3f} "
            f"(cross-validated {auroc(cv, right) or float('nan'):.3f}); right said not found "
            f"{int((c[right] < threshold).sum())}/{int(right.sum())}, wrong said found "
            f"{int((c[~right] >= threshold).sum())}/{int((~right).sum())}"
        )
        if len(ids) <= 40:
            for qid, r, v in zip(ids, right, c, strict=True):
                print(f"  {qid:28s} right={bool(r)!s:5s} confidence={v:.3f}")
    values = dict.fromkeys(WEIGHTS, 0.0)
    for s, w in zip(chosen, fitted, strict=True):
        values[WEIGHTS[SIGNALS.index(s)]] = round(float(w), 4)
    values |= {"bias": round(bias, 4), "threshold": round(threshold, 4)}
    print(" ".join(f"--set inference.confidence.{k}={v}" for k, v in values.items()))
    print("inference:\n  confidence:\n" + "".join(f"    {k}: {v}\n" for k, v in values.items()), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
