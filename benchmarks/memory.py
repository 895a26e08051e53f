"""The ``memory`` section of ``python -m benchmarks``: a second question through a video memory against
``locate --video``, on the CPU with 2 torch threads.

A generated 640x360 video of ``--memory-seconds`` (120 by default: 600 frames at the model's 5 fps; 6 with
``--quick``) is indexed once (timed), then one box query (the last frame's object, searched before it) is answered
in alternating rounds, order rotated, through ``locate_video`` (decode + backbone + stages + post-processing, no
``track.mp4``) and through ``locate_memory`` (query embedding + stages + post-processing on the stored features).
Models (``--memory-models``): the shipped demo model (with its stored overlapping windows, and with
``inference.window_overlap=0``), and ``prvql_vitb14`` with random weights (paper size: ViT-B/14 at 448 px, 30-frame
windows; toy sizes with ``--quick``). Also per model: the stages' share of the ``--video`` time (the Predictor's
stage seconds over the memory, the whole cost of a question once the video is remembered), and for ``float16`` /
``int8`` storage (``--memory-storages``) the largest change of the tracks against ``float32`` (exact).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.cpu_speed import QUICK, interleaved, paper_model, ratio
from prvql.config import apply_overrides
from prvql.data.video import write_video
from prvql.infer.locate import Query, locate, locate_video
from prvql.infer.memory import VideoMemory, index_video, locate_memory
from prvql.infer.postprocess import build_postprocessor
from prvql.infer.predictor import build_predictor
from prvql.infer.trained_model import load_inference_model

FRAME_SIZE = (360, 640)  # height, width
SOURCE_FPS = 10.0
CPU = torch.device("cpu")


def make_video(path: Path, seconds: float) -> Query:
    """A ``seconds`` long 640x360 video at 10 fps (smooth noise, a coloured square wandering); returns a box query
    on its last frame."""
    rng = np.random.default_rng(0)
    count = max(2, round(seconds * SOURCE_FPS))
    height, width = FRAME_SIZE
    background = rng.integers(0, 256, (height // 20, width // 20, 3), dtype=np.uint8).repeat(20, 0).repeat(20, 1)

    def frames():
        for i in range(count):
            frame = background.copy()
            x, y = int(300 + 250 * np.sin(i / 40)), int(160 + 120 * np.cos(i / 55))
            frame[y : y + 40, x : x + 40] = (220, 40, 40)
            yield frame

    write_video(path, frames(), fps=SOURCE_FPS)
    x, y = int(300 + 250 * np.sin((count - 1) / 40)), int(160 + 120 * np.cos((count - 1) / 55))
    return Query(frame=count - 1, search="before", box=(float(x), float(y), float(x + 40), float(y + 40)))


def track_change(a: object, b: object) -> dict:
    """How far result ``b`` is from ``a``: same track frames, largest box (px) and score differences."""
    return {
        "same_track_frames": a.track.extent == b.track.extent,
        "max_box_diff_px": round(float(np.abs(a.boxes - b.boxes).max()), 5),
        "max_score_diff": round(float(np.abs(a.scores - b.scores).max()), 6),
    }


def measure(
    name: str, seconds: float, rounds: int, storages: tuple[str, ...] = ("float16", "int8"), quick: bool = False
) -> dict:
    """One model on a generated video of ``seconds``: ``demo`` (the shipped model and its stored search: a 12-frame
    window starting at every frame), ``demo_overlap0`` (the same with windows side by side, as the released code
    searches) or ``paper`` (``quick``: the paper-size model at toy sizes)."""
    if name.startswith("demo"):
        cfg, model = load_inference_model(None, None)
        if name == "demo_overlap0":  # the released search: windows side by side, 1/12 of the stage work
            cfg = apply_overrides(cfg, ["inference.window_overlap=0"])
    else:
        cfg, model = paper_model("prvql_vitb14", QUICK if quick else [])
        model = model.fuse_for_inference()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        video = tmp / "video.mp4"
        query = make_video(video, seconds)
        indexed = index_video(cfg, model, CPU, video, tmp / "video.h5")
        memory = VideoMemory.open(indexed.path)
        runs = {}

        def from_memory():
            runs["memory"] = locate_memory(cfg, model, CPU, memory, query, tmp / "m", name="v", render_video=False)

        def from_video():
            runs["video"] = locate_video(cfg, model, CPU, video, query, tmp / "v", name="v", render_video=False)

        timed = interleaved({"memory": from_memory, "video": from_video}, rounds, warm_all=False)
        predictor = build_predictor(cfg, model, CPU)
        found = runs["memory"].result
        locate(
            predictor,
            build_postprocessor(cfg.inference),
            memory.embedded(),
            found.query_image,
            found.query_box,
            num_frames=len(found),
        )
        stats = predictor.stats
        compact = {}
        for storage in storages:
            small = index_video(cfg, model, CPU, video, tmp / f"{storage}.h5", storage=storage).path
            with VideoMemory.open(small) as m:
                approx = locate_memory(cfg, model, CPU, m, query, tmp / storage, name="v", render_video=False)
            compact[storage] = {
                **track_change(runs["video"].result, approx.result),
                "bytes_per_frame": round(small.stat().st_size / len(found), 1),
            }
        shape = list(memory.feature_shape)
        memory.close()
        return {
            "model": name,
            "video_seconds": seconds,
            "searched_frames": len(found),
            "features_per_frame": shape,
            "memory_bytes_per_frame": round(indexed.path.stat().st_size / indexed.frames, 1),
            "index_s": round(indexed.seconds, 2),
            "second_question": timed,
            "memory_over_video": ratio(timed["memory"], timed["video"]),
            "memory_equals_video": track_change(runs["video"].result, found),
            "stage_s_on_memory": round(stats.stage_seconds, 3),
            "query_embedding_s": round(stats.backbone_seconds, 3),
            "stage_share_of_video_question": round(stats.stage_seconds / timed["video"]["median_s"], 3),
            "storage": compact,
        }


def bench_memory(args: argparse.Namespace) -> dict:
    """The section: the models of ``--memory-models`` (both by default), 2 torch threads (restored after)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    seconds = args.memory_seconds
    try:
        models = args.memory_models.split(",")
        storages = () if args.memory_storages == "none" else tuple(args.memory_storages.split(","))
        return {
            name: measure(name, seconds, args.rounds, () if name == "demo_overlap0" else storages, args.quick)
            for name in models
        }
    finally:
        torch.set_num_threads(threads)
