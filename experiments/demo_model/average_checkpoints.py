"""Average the weights of several checkpoints of one model into one weights file (checkpoint averaging).

    python -m experiments.demo_model.average_checkpoints runs/demo-v6-snaps/ckpt_*.pt \
        --output runs/averaged.safetensors --set inference.median_kernel=9

Each file is a ``checkpoint.pt`` that ``prvql train`` wrote (read with ``weights_only=True``) or a ``.safetensors``
weights file (its metadata's iteration, 0 if it has none: e.g. a fine-tuning run's init file, to average a run
with its start). Every floating-point trainable tensor becomes the mean over the files; integer buffers
(batch-norm counters) are taken from the latest file. The checkpoints must come from one model: the same ``model``
config section but for dropout rates (which change no tensor), and the same keys and shapes (the points of one run,
or runs fine-tuned from one start, such as the shipped demo model's ``demo-v7`` and ``demo-v9``). The output carries
the config of the latest checkpoint (the overrides applied) and the averaged iterations. A missing or corrupt file,
checkpoints of different models or a bad override: one line, exit status 2, nothing written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import Tensor

from prvql.config import apply_overrides, config_from_dict, config_to_dict
from prvql.errors import CheckpointError, PRVQLError
from prvql.model import build_prvql
from prvql.train.checkpoint import load_training_checkpoint
from prvql.weights_file import load_trainable_state, load_weights_config, read_weights_file, save_weights


def average_states(states: list[dict[str, Tensor]], sources: list[Path]) -> dict[str, Tensor]:
    """The key-wise mean of ``states`` (floating tensors; others from the last state). Same keys and shapes."""
    first = states[0]
    for state, source in zip(states[1:], sources[1:], strict=True):
        if state.keys() != first.keys():
            extra = sorted(state.keys() ^ first.keys())[0]
            raise CheckpointError(f"{source}: key '{extra}' is not in every checkpoint (different models)")
        for key, value in state.items():
            if value.shape != first[key].shape:
                raise CheckpointError(
                    f"{source}: key '{key}' has shape {tuple(value.shape)}, not {tuple(first[key].shape)}"
                )
    averaged = {}
    for key, value in states[-1].items():
        if value.is_floating_point():
            averaged[key] = torch.stack([s[key].double() for s in states]).mean(0).to(value.dtype)
        else:
            averaged[key] = value.clone()
    return averaged


def architecture(model_config: object) -> object:
    """A ``model`` config section (nested dicts) without its dropout rates: what must match to average weights."""
    if not isinstance(model_config, dict):
        return model_config
    return {k: architecture(v) for k, v in model_config.items() if k != "dropout"}


def load_point(path: Path) -> dict:
    """``{"model", "config", "iteration"}`` of a ``checkpoint.pt`` or a ``.safetensors`` weights file."""
    if path.suffix != ".safetensors":
        return load_training_checkpoint(path)
    tensors, metadata = read_weights_file(path)
    iteration = metadata.get("iteration", "0")
    if not iteration.isdigit():
        raise CheckpointError(f"{path}: metadata 'iteration' is not a number ({iteration!r})")
    return {"model": tensors, "config": config_to_dict(load_weights_config(path)), "iteration": int(iteration)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path, help="checkpoint.pt or .safetensors files of one model")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--output", type=Path, required=True, help="the weights file to write")
    args = parser.parse_args()
    try:
        loaded = sorted(((load_point(p), p) for p in args.checkpoints), key=lambda item: item[0]["iteration"])
        checkpoints, sources = [c for c, _ in loaded], [p for _, p in loaded]
        for checkpoint, source in loaded[1:]:
            if architecture(checkpoint["config"].get("model")) != architecture(checkpoints[0]["config"].get("model")):
                raise CheckpointError(f"{source}: its model config differs from {sources[0]}'s (different models)")
        cfg = apply_overrides(config_from_dict(checkpoints[-1]["config"]), args.set)
        model = build_prvql(cfg.model)
        load_trainable_state(model, average_states([c["model"] for c in checkpoints], sources), sources[-1])
        iterations = ", ".join(str(c["iteration"]) for c in checkpoints)
        save_weights(
            model, args.output, cfg, extra={"iteration": str(checkpoints[-1]["iteration"]), "averaged": iterations}
        )
    except (PRVQLError, OSError) as exc:
        print(f"average_checkpoints: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: the mean of iterations {iterations}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
