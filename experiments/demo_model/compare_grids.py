"""Compare the post-processing grids of several models: each grid's best point under one shared objective.

``tune_postprocess.py --out`` scores each grid point relative to the best value *on that grid*, so the objectives
of two grids do not compare. This reads several of its JSON files and rescores every row against the
best value over *all* of them (the same objective metrics), then prints each grid's best row::

    python -m experiments.demo_model.compare_grids shipped=runs/a/grid.json candidate=runs/b/grid.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

METRICS = ("tAP25", "stAP25", "success", "recovery", "tAP", "stAP")


def best_rows(grids: dict[str, list[dict]], objective: list[str]) -> dict[str, dict]:
    """name -> its best row, with ``joint`` = mean over ``objective`` of metric / best value over all grids."""
    best = {m: max(row[m] for rows in grids.values() for row in rows) for m in objective}
    out = {}
    for name, rows in grids.items():
        scored = [dict(row, joint=sum(row[m] / best[m] if best[m] > 0 else 0.0 for m in objective) / len(objective))
                  for row in rows]  # fmt: skip
        out[name] = max(scored, key=lambda row: row["joint"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("grids", nargs="+", help="NAME=grid.json, as written by tune_postprocess.py --out")
    args = parser.parse_args()
    grids: dict[str, list[dict]] = {}
    objective: list[str] | None = None
    for item in args.grids:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            parser.error(f"{item!r}: expected NAME=grid.json")
        try:
            data = json.loads(Path(path).read_text())
            rows, this = data["rows"], data["objective"]
        except OSError as exc:
            parser.error(f"{path}: cannot read ({exc.strerror})")
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            parser.error(f"{path}: not a tune_postprocess.py grid ({type(exc).__name__}: {exc})")
        need = {*this, *METRICS, "median_kernel", "peak_ratio", "track_ratio", "score"}
        if not rows or not all(isinstance(row, dict) and need <= row.keys() for row in rows):
            parser.error(f"{path}: not a tune_postprocess.py grid (no rows, or rows without {sorted(need)})")
        if objective is not None and this != objective:
            parser.error(f"{path}: objective {this} differs from {objective}")
        objective = this
        grids[name] = rows
    assert objective is not None
    header = ["grid", "median_kernel", "peak_ratio", "track_ratio", "score", *METRICS, "joint"]
    print(f"objective: {', '.join(objective)}, each relative to its best over all grids")
    print("| " + " | ".join(header) + " |")
    print("|---" * len(header) + "|")
    for name, row in best_rows(grids, objective).items():
        cells = [name] + [f"{row[k]:.3f}" if isinstance(row[k], float) else str(row[k]) for k in header[1:]]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
