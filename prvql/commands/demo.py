"""Find an object's last sighting in a fresh synthetic clip of held-out imagery, score it, draw it (offline, CPU).

A new episode is rendered from photographs that training never sees (``make_episode(seed, pool="heldout")``;
``--seed`` picks another, the default is fixed so the demo is reproducible). The visual crop is searched for in the
frames before the query frame with the shipped demo model (or ``--config/--weights``); the response track and the
official VQ2D metrics of this one query (tAP25, stAP25, success, recovery, its tIoU and stIoU) are printed.

Outputs in ``--output`` (default demo_output):
  track.json    the response track and the per-frame score curve (as ``prvql locate`` writes it), plus the episode;
  scores.png    the score curve with the chosen peak, the thresholds, the track and the ground truth marked;
  track.mp4     the searched frames: the track (green), the best box of the other frames (grey), the ground truth
                (red), the query crop in the corner;
  query.png     the visual crop;
  episode.mp4   the whole rendered clip, as the camera saw it;
  metrics.json  the metrics, the ground truth, the timings.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from prvql.commands.options import MODEL_FLAGS, add_device_option, add_model_options, check_range

if TYPE_CHECKING:
    from prvql.demo import DemoResult

DEFAULT_SEED = 0  # the first seed, not chosen by the model's result (docs/DEMO.md counts seeds 0-11)
MAX_FRAMES = 1000  # the episode is rendered in memory (320x240 RGB: about 0.5 GB at this length)
MAX_PRINTED_FRAMES = 20  # longer tracks print their first and last ten frames

# library error field -> the option that gave it (prvql.cli prints the option)
FLAGS = {**MODEL_FLAGS, "output": "--output", "frames": "--frames"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", type=Path, default=Path("demo_output"), help="output folder (default demo_output)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"episode seed (default {DEFAULT_SEED})")
    parser.add_argument(
        "--frames", type=int, help=f"5 fps frames in the clip, 2 to {MAX_FRAMES} (default: the synthetic data's 120)"
    )
    add_model_options(parser)
    add_device_option(parser)
    parser.add_argument("--no-video", action="store_true", help="skip track.mp4 and episode.mp4")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def run(args: argparse.Namespace) -> int:
    from prvql.demo import run_demo
    from prvql.progress import PhaseBars

    check_range("--seed", args.seed, 0, 2**32 - 1, shown="[0, 2**32)")
    check_range("--frames", args.frames, 2, MAX_FRAMES)
    with PhaseBars(enabled=not args.no_progress, labels={"episode": "rendering episode"}) as progress:
        result = run_demo(
            args.output,
            seed=args.seed,
            num_frames=args.frames,
            config=args.config,
            weights=args.weights,
            device=args.device,
            videos=not args.no_video,
            progress=progress,
        )
    print("\n".join(report_lines(result)))
    return 0


def _box_text(box: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{float(v):6.1f}" for v in box) + ")"


def report_lines(result: DemoResult) -> list[str]:
    """What ``prvql demo`` prints: the episode, the track frame by frame (the first and last ten of a longer one),
    the metrics, the files written and the timings."""
    height, width = result.frame_size
    lines = [
        f"episode: seed {result.seed}, held-out imagery, {result.num_frames} frames at {result.fps:g} fps "
        f"({width}x{height}); query {result.object_title!r} (crop from frame {result.visual_crop_frame}) "
        f"asked at frame {result.query_frame}, frames 0-{result.query_frame - 1} searched"
    ]
    if result.ruled_out_before > 0:
        lines.append(
            f"frames 0-{result.ruled_out_before - 1} ruled out: the answer comes after the visual crop's frame "
            "(inference.after_visual_crop, the Ego4D protocol rule; docs/EVALUATION.md)"
        )
    lines.append(f"ground truth: frames {result.ground_truth[0]}-{result.ground_truth[1]}")
    lines.append(
        f"response track: frames {result.track[0]}-{result.track[1]} "
        f"(peak frame {result.peak}, score {result.peak_score:.3f})"
    )
    lines.append(f"  {'frame':>5}  {'time':>6}  {'box (x1, y1, x2, y2)':<34}  {'score':>5}  IoU with truth")
    rows, half = result.frames, MAX_PRINTED_FRAMES // 2
    shown = rows if len(rows) <= MAX_PRINTED_FRAMES else rows[:half] + rows[-half:]
    for i, row in enumerate(shown):
        if len(shown) < len(rows) and i == half:
            lines.append(f"  {'...':>5}  ({len(rows) - len(shown)} more frames in track.json)")
        iou_text = f"{row.iou:.2f}" if row.iou is not None else "-"
        lines.append(f"  {row.frame:>5}  {row.seconds:>5.1f}s  {_box_text(row.box):<34}  {row.score:>5.3f}  {iou_text}")
    m, seconds = result.metrics, result.seconds
    lines.append(
        f"metrics (this query): tAP25 {m.tap25:.3f}  stAP25 {m.stap25:.3f}  success {m.success:.1f}%  "
        f"recovery {m.recovery:.1f}%  tIoU {result.tiou:.3f}  stIoU {result.stiou:.3f}"
    )
    lines.append("wrote " + ", ".join(str(p) for p in result.written))
    lines.append(
        f"elapsed {seconds['total']:.1f} s on {result.device} (model {seconds['load_model']:.1f} s, "
        f"episode {seconds['render_episode']:.1f} s, search {seconds['search']:.1f} s, "
        f"outputs {seconds['write_outputs']:.1f} s)"
    )
    return lines
