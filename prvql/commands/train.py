"""Train PRVQL on prepared data (one process, or DDP under torchrun).

Examples::

    prvql train --config prvql_vitb14 data.root=data/ego4d --output runs/prvql
    prvql train --output runs/prvql --resume                    # continue from runs/prvql/checkpoint.pt
    torchrun --nproc_per_node 4 -m prvql train --config prvql_vitb14 train.batch_size=3 --output runs/prvql

Global batch = train.batch_size x processes x train.grad_accum. The run folder receives config.yaml, log.jsonl,
checkpoint.pt, weights.safetensors and weights_best.safetensors (see docs/TRAINING.md).
"""

from __future__ import annotations

import argparse
import json
import os

from prvql.commands.options import add_output_option, add_process_device_option

# library error field -> the option that gave it (prvql.cli prints the option)
FLAGS = {"device": "--device", "run_dir": "--output"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file or preset name (default with --resume: RUN_DIR/config.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides, e.g. train.lr=3e-4")
    add_output_option(parser, "run folder", metavar="RUN_DIR")
    parser.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint.pt")
    add_process_device_option(parser)


def run(args: argparse.Namespace) -> int:
    from prvql.config import load_config
    from prvql.errors import ConfigError
    from prvql.paths import check_output_dir
    from prvql.train.loop import CHECKPOINT_NAME, fit

    output = check_output_dir(args.output, "--output")
    if args.resume and not (output / CHECKPOINT_NAME).is_file():
        raise ConfigError(
            f"--resume: {output} holds no {CHECKPOINT_NAME} to resume from (drop --resume to start a new run there)"
        )
    config = args.config
    if config is None:
        if not args.resume:
            raise ConfigError("--config is required (a YAML file or a preset name) unless --resume is given")
        config = output / "config.yaml"
        if not config.is_file():
            raise ConfigError(f"--resume: {config} is missing; give --config (the one the run was started with)")
    cfg = load_config(config, args.overrides)
    summary = fit(cfg, args.output, resume=args.resume, device=args.device)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: round(v, 6) for k, v in summary.items()}))
    return 0
