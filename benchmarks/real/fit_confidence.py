"""Fit ``inference.confidence`` on the tuning half of the real-footage set.

```
python -m benchmarks.real.fit_confidence REPORT.json
```

``REPORT.json`` is a ``benchmarks.real.score --split tune --output`` report (made with the settings the
confidence is for, e.g. ``--set inference.geometric.enabled=true``): every query's confidence signals and whether
its track was right (stIoU >= 0.05; an absent object is never right). The fit is a logistic regression on the
three signals of :mod:`prvql.infer.confidence`, with a small L2 penalty (scikit-learn is not a dependency: the
regularised log-loss is minimised with ``scipy.optimize.minimize``, L-BFGS). The threshold is the one that best
separates the tuning queries (largest mean of the "found" rate on right tracks and the "not found" rate on the
rest; the middle of the best interval). Prints the coefficients as ``--set`` overrides and a YAML block.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_expit

from prvql.infer.confidence import SIGNALS

L2 = 0.1  # penalty on the weights (not the bias): 17 queries decide 4 numbers


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = L2) -> tuple[np.ndarray, float]:
    """Weights [F] and bias of ``P(y=1) = sigmoid(x @ w + b)`` for float [M, F] ``x`` and bool [M] ``y``."""

    def loss(theta: np.ndarray) -> float:
        z = x @ theta[:-1] + theta[-1]
        return float(-(log_expit(z)[y].sum() + log_expit(-z)[~y].sum()) + l2 * theta[:-1] @ theta[:-1])

    theta = minimize(loss, np.zeros(x.shape[1] + 1), method="L-BFGS-B").x
    return theta[:-1], float(theta[-1])


def best_threshold(confidence: np.ndarray, right: np.ndarray) -> float:
    """The threshold maximising (found rate on right + not-found rate on the rest) / 2; the middle of the best
    interval between consecutive confidences."""
    values = np.unique(confidence)
    cuts = np.concatenate([[values[0] - 1e-6], (values[1:] + values[:-1]) / 2, [values[-1] + 1e-6]])
    balanced = [((confidence[right] >= c).mean() + (confidence[~right] < c).mean()) / 2 for c in cuts]
    best = np.flatnonzero(np.isclose(balanced, max(balanced)))
    return float((cuts[best[0]] + cuts[best[-1]]) / 2)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    report = json.loads(Path(args[0]).read_text())
    queries = report["queries"]
    if any(q["split"] != "tune" for q in queries):
        print("fit_confidence: the report holds held-out queries; fit on --split tune only", file=sys.stderr)
        return 2
    x = np.array([[q["signals"]["confidence_signals"][s] for s in SIGNALS] for q in queries], dtype=np.float64)
    y = np.array([bool(q.get("right", False)) for q in queries])
    weights, bias = fit_logistic(x, y)
    confidence = expit(x @ weights + bias)
    threshold = best_threshold(confidence, y)
    names = ("peak_weight", "prominence_weight", "inlier_weight")
    values = {**dict(zip(names, weights.round(4).tolist(), strict=True)), "bias": round(bias, 4)}
    values["threshold"] = round(threshold, 4)
    print(f"{len(y)} tuning queries, {int(y.sum())} right")
    for q, c in zip(queries, confidence, strict=True):
        print(f"  {q['id']:28s} right={bool(q.get('right', False))!s:5s} confidence={c:.3f}")
    print(" ".join(f"--set inference.confidence.{k}={v}" for k, v in values.items()))
    print("inference:\n  confidence:\n" + "".join(f"    {k}: {v}\n" for k, v in values.items()), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
