"""Run a trained model over Ego4D clips and write the VQ2D challenge predictions JSON.

Every valid query set is searched over the frames before its query frame; the backbone runs once per clip frame
whatever the number of queries on the clip. Per-query score curves are cached in ``OUTPUT.cache/<key>.npz`` as
clips finish (``--resume`` skips the cached ones; ``prvql visualize`` and ``prvql locate``-style plots read them).
A missing or unreadable clip is reported and its queries are written empty; the run goes on. ``--max-clips N``
searches only the first N clips (in file order, counting clips with a valid query set): a quick sample, whose
other queries are written empty.

Several processes share the clips under torchrun (rank r takes clips i with i % world == r), e.g.
``torchrun --nproc_per_node 8 -m prvql predict ...``; rank 0 writes the file when every rank has finished.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from prvql.commands.options import add_model_options, add_override_option, add_process_device_option

logger = logging.getLogger(__name__)

POLL_SECONDS = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser)
    parser.add_argument("--annotations", required=True, type=Path, help="Ego4D VQ2D file, e.g. vq_val.json")
    parser.add_argument("--clips", required=True, type=Path, help="folder of <clip_uid>.mp4 (5 fps clips)")
    parser.add_argument("--output", required=True, type=Path, help="predictions JSON to write")
    parser.add_argument("--cache", type=Path, help="per-query score folder (default: OUTPUT.cache)")
    parser.add_argument("--resume", action="store_true", help="reuse cached per-query results")
    parser.add_argument(
        "--max-clips", type=int, metavar="N", help="search only the first N clips (file order; a sample)"
    )
    add_process_device_option(parser)
    add_override_option(parser, "inference.windows_per_batch=8")


def _wait_for_ranks(cache_dir: Path, world_size: int) -> list[str]:
    """Block until every rank's ``done.<rank>.json`` exists; return the clips they could not read."""
    import json
    import time

    markers = [cache_dir / f"done.{rank}.json" for rank in range(world_size)]
    while not all(m.exists() for m in markers):
        time.sleep(POLL_SECONDS)
    return [clip for m in markers for clip in json.loads(m.read_text())["failed_clips"]]


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from prvql.atomic import atomic_write_json
    from prvql.config import config_to_dict
    from prvql.data.annotations import load_annotations
    from prvql.distributed import barrier, init_distributed, shutdown
    from prvql.errors import PRVQLError
    from prvql.infer.challenge import predict_search_jobs, search_jobs, tracks_from_cache
    from prvql.infer.postprocess import build_postprocessor
    from prvql.infer.predictions import write_predictions
    from prvql.infer.predictor import build_predictor
    from prvql.infer.score_cache import ScoreCache
    from prvql.infer.trained_model import default_weights_path, load_inference_model
    from prvql.paths import check_input_dir, check_output_dir, check_output_file

    check_output_file(args.output, "--output")
    if args.max_clips is not None and args.max_clips < 1:
        raise PRVQLError(f"--max-clips: must be >= 1 (got {args.max_clips})")
    cache = ScoreCache(args.cache or args.output.with_name(args.output.name + ".cache"))
    check_output_dir(cache.root, "--cache")
    annotations = load_annotations(args.annotations)
    check_input_dir(args.clips, "--clips folder of <clip_uid>.mp4")
    cfg, model = load_inference_model(args.config, args.weights, args.overrides)
    postprocess = build_postprocessor(cfg.inference)
    info = init_distributed(args.device)
    try:
        if info.is_main:
            cache.root.mkdir(parents=True, exist_ok=True)
            weights = args.weights if args.weights is not None else default_weights_path()
            cache.write_meta(config_to_dict(cfg), weights, args.resume)
            for marker in cache.root.glob("done.*.json"):
                marker.unlink()
            if not args.resume:
                cache.clear()
            else:
                cache.drop_unreadable([r.key for r in annotations.records() if r.is_valid and r.clip_uid])
        barrier()
        jobs = search_jobs(annotations)[: args.max_clips][info.rank :: info.world_size]
        predictor = build_predictor(cfg, model, info.device)

        def progress(items):
            return tqdm(items, desc=f"predict rank {info.rank}", unit="clip", position=info.rank, disable=None)

        failed = predict_search_jobs(predictor, jobs, args.clips, cache, resume=args.resume, progress=progress)
        atomic_write_json(cache.root / f"done.{info.rank}.json", {"failed_clips": failed})
        if not info.is_main:
            return 0
        failed = _wait_for_ranks(cache.root, info.world_size)
    finally:
        shutdown()
    tracks = tracks_from_cache(annotations, cache, postprocess)
    write_predictions(args.output, annotations, tracks)
    valid = sum(r.is_valid for r in annotations.records())
    print(
        f"wrote {args.output}: {len(tracks)} of {valid} valid query sets predicted"
        + (f"; {len(failed)} clips missing or unreadable: {', '.join(failed[:5])}" if failed else "")
    )
    return 0
