"""Regenerate the README's demo figures: run `prvql demo`, copy its score plot and one frame of its video.

    python -m experiments.demo_model.readme_images [--seed 0]

Writes docs/images/demo_scores.png and docs/images/demo_frame.png (the frame at the predicted peak).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

from prvql.data.video import VideoReader

ROOT = Path(__file__).resolve().parents[2]  # the repository


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    images = ROOT / "docs" / "images"
    images.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo"
        subprocess.run(
            [sys.executable, "-m", "prvql", "demo", "--output", str(out), "--seed", str(args.seed)], check=True
        )
        shutil.copy(out / "scores.png", images / "demo_scores.png")
        track = json.loads((out / "track.json").read_text())
        peak = int(track["track"]["peak"])
        with VideoReader(out / "track.mp4") as reader:
            frame = reader.read([min(peak, reader.num_frames - 1)])[0]
        Image.fromarray(frame).save(images / "demo_frame.png")
    print(f"wrote {images / 'demo_scores.png'} and {images / 'demo_frame.png'}")


if __name__ == "__main__":
    main()
