"""Draw the figure of procedurally generated training objects shown in docs/DATA.md.

    python -m experiments.demo_model.generated_objects_figure [--count 24] [--columns 8]

Writes docs/images/generated_objects.png: the objects of seeds 0..count-1 (prvql/synth/generated.py), as
`prvql synth --generated-objects` draws them, on a white grid.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from prvql.synth.generated import SIDE_RANGE, generated_picture
from prvql.synth.imagery import load_picture

ROOT = Path(__file__).resolve().parents[2]  # the repository
GAP = 8  # pixels between cells


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (got {value})")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=_positive, default=24, help="objects drawn (seeds 0..count-1)")
    parser.add_argument("--columns", type=_positive, default=8, help="objects per row")
    args = parser.parse_args()
    cell = SIDE_RANGE[1] + GAP
    rows = -(-args.count // args.columns)
    canvas = Image.new("RGB", (args.columns * cell, rows * cell), (255, 255, 255))
    for seed in range(args.count):
        picture = Image.fromarray(generated_picture(seed, load_picture))
        canvas.paste(picture, ((seed % args.columns) * cell, (seed // args.columns) * cell))
    out = ROOT / "docs" / "images" / "generated_objects.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    print(out)


if __name__ == "__main__":
    main()
