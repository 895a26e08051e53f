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
import time
from pathlib import Path

from prvql.commands.options import add_device_option, add_model_options, check_range
from prvql.errors import PRVQLError

DEFAULT_SEED = 0  # the first seed, not chosen by the model's result; docs/DEMO.md lists seeds 0-11
MAX_FRAMES = 1000  # the episode is rendered in memory (320x240 RGB: about 0.5 GB at this length)
MAX_PRINTED_FRAMES = 20  # longer tracks print their first and last ten frames


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", type=Path, default=Path("demo_output"), help="output folder (default demo_output)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"episode seed (default {DEFAULT_SEED})")
    parser.add_argument(
        "--frames", type=int, help=f"5 fps frames in the clip, 2 to {MAX_FRAMES} (default: the synthetic data's 120)"
    )
    add_model_options(parser)
    add_device_option(parser)
    parser.add_argument("--no-video", action="store_true", help="skip track.mp4 and episode.mp4")


def _box_text(box) -> str:
    return "(" + ", ".join(f"{float(v):6.1f}" for v in box) + ")"


def run(args: argparse.Namespace) -> int:
    from PIL import Image

    from prvql.atomic import atomic_outputs, atomic_write_json
    from prvql.data.video import write_video
    from prvql.infer.locate import locate
    from prvql.infer.outputs import write_locate_outputs
    from prvql.infer.postprocess import build_postprocessor
    from prvql.infer.predictor import build_predictor
    from prvql.infer.trained_model import load_inference_model, resolve_device
    from prvql.metrics.overlap import frame_ious
    from prvql.metrics.structures import ResponseTrack
    from prvql.metrics.vq2d import query_overlaps, summarize
    from prvql.paths import check_output_dir
    from prvql.synth.episode import SynthOptions, make_episode

    check_range("--seed", args.seed, 0, 2**32 - 1, shown="[0, 2**32)")
    check_range("--frames", args.frames, 2, MAX_FRAMES)
    check_output_dir(args.output, "--output")
    start = time.perf_counter()
    device = resolve_device(args.device)
    cfg, model = load_inference_model(args.config, args.weights)
    loaded = time.perf_counter()

    opts = SynthOptions() if args.frames is None else SynthOptions(num_frames=args.frames)
    try:
        episode = make_episode(args.seed, opts, pool="heldout")
    except RuntimeError as exc:
        raise PRVQLError(f"--frames: {exc}") from None
    rendered = time.perf_counter()

    searched = episode.frames[: episode.query_frame]
    result = locate(
        build_predictor(cfg, model, device),
        build_postprocessor(cfg.inference),
        searched,
        episode.frames[episode.visual_crop_frame],
        episode.visual_crop_box,
        visual_crop_frame=episode.visual_crop_frame,
    )
    truth = ResponseTrack.from_pairs(episode.response_track)
    overlaps = query_overlaps([result.track], [truth])
    metrics = summarize(overlaps)
    located = time.perf_counter()

    out = Path(args.output)
    height, width = episode.frames.shape[1:3]
    episode_info = {
        "seed": args.seed,
        "imagery": "heldout",
        "frames": int(episode.frames.shape[0]),
        "fps": episode.fps,
        "object_title": episode.object_title,
        "query_frame": episode.query_frame,
        "visual_crop": {"frame": episode.visual_crop_frame, "box": list(episode.visual_crop_box)},
        "ground_truth": [{"frame": f, "box": list(b)} for f, b in episode.response_track],
    }
    with atomic_outputs() as stage:  # every output appears together, or none does
        written = write_locate_outputs(
            result,
            None if args.no_video else searched,
            out,
            episode.fps,
            info={"episode": episode_info, "query": episode_info["visual_crop"]},
            ground_truth=truth,
            title=f"seed {args.seed}, {episode.object_title}",
            stage=stage,
        )
        Image.fromarray(episode.query).save(stage(out / "query.png"))
        written.append(out / "query.png")
        if not args.no_video:
            write_video(stage(out / "episode.mp4"), episode.frames, episode.fps)
            written.append(out / "episode.mp4")
        wrote = time.perf_counter()
        timings = {
            "load_model": loaded - start,
            "render_episode": rendered - loaded,
            "search": located - rendered,
            "write_outputs": wrote - located,
            "total": wrote - start,
        }
        atomic_write_json(
            stage(out / "metrics.json"),
            {
                "episode": episode_info,
                "prediction": {"start": result.window.start, "end": result.window.end},
                "metrics": metrics.to_dict(),
                "tiou": float(overlaps.tiou[0]),
                "stiou": float(overlaps.stiou[0]),
                "recovered_frames": int(overlaps.recovered[0]),
                "device": str(device),
                "seconds": {k: round(v, 3) for k, v in timings.items()},
            },
            indent=1,
        )
        written.append(out / "metrics.json")

    print(
        f"episode: seed {args.seed}, held-out imagery, {episode.frames.shape[0]} frames at {episode.fps:g} fps "
        f"({width}x{height}); query {episode.object_title!r} (crop from frame {episode.visual_crop_frame}) "
        f"asked at frame {episode.query_frame}, frames 0-{episode.query_frame - 1} searched"
    )
    if result.window.first_frame > 0:
        print(
            f"frames 0-{result.window.first_frame - 1} ruled out: the answer comes after the visual crop's frame "
            "(inference.after_visual_crop, the Ego4D protocol rule; docs/EVALUATION.md)"
        )
    first, last = truth.extent
    print(f"ground truth: frames {first}-{last}")
    print(
        f"response track: frames {result.window.start}-{result.window.end} "
        f"(peak frame {result.window.peak}, score {result.window.peak_score:.3f})"
    )
    ious = frame_ious(truth, result.track)  # IoU is symmetric: per predicted frame, with the true box there
    truth_frames = set(truth.frames.tolist())
    print(f"  {'frame':>5}  {'time':>6}  {'box (x1, y1, x2, y2)':<34}  {'score':>5}  IoU with truth")
    rows = list(zip(result.track.frames.tolist(), result.track.boxes, ious, strict=True))
    half = MAX_PRINTED_FRAMES // 2
    shown = rows if len(rows) <= MAX_PRINTED_FRAMES else rows[:half] + rows[-half:]
    for i, (frame, box, iou) in enumerate(shown):
        if len(shown) < len(rows) and i == half:
            print(f"  {'...':>5}  ({len(rows) - len(shown)} more frames in track.json)")
        iou_text = f"{iou:.2f}" if frame in truth_frames else "-"
        print(
            f"  {frame:>5}  {frame / episode.fps:>5.1f}s  {_box_text(box):<34}  "
            f"{result.scores[frame]:>5.3f}  {iou_text}"
        )
    print(
        f"metrics (this query): tAP25 {metrics.tap25:.3f}  stAP25 {metrics.stap25:.3f}  "
        f"success {metrics.success:.1f}%  recovery {metrics.recovery:.1f}%  "
        f"tIoU {overlaps.tiou[0]:.3f}  stIoU {overlaps.stiou[0]:.3f}"
    )
    print("wrote " + ", ".join(str(p) for p in written))
    print(
        f"elapsed {timings['total']:.1f} s on {device} (model {timings['load_model']:.1f} s, "
        f"episode {timings['render_episode']:.1f} s, search {timings['search']:.1f} s, "
        f"outputs {timings['write_outputs']:.1f} s)"
    )
    return 0
