"""Convert the authors' VQLoC or PRVQL checkpoint into one self-contained prvql weights file.

Reads a training checkpoint ({"epoch", "state_dict", ...}) or a bare state dict, with or without a "module."
prefix, with torch.load(weights_only=True) only. Detects the model (VQLoC or PRVQL), the number of stages, the
cross-attention block layout and the DINOv2 size from the keys, picks the preset with the parity switches
(vqloc_vitb14 or prvql_released; docs/MODEL.md), prints one summary line and writes a safetensors file holding
every tensor the model uses, backbone included, with the resolved config as metadata:

    prvql convert --checkpoint cpt_best_prob.pth.tar --output prvql_authors.safetensors
    prvql locate --weights prvql_authors.safetensors --video my.mp4 ...

An unknown, missing or mis-shaped key, a file that needs code to unpickle or a truncated file: one line naming the
file and the key or reason, exit status 2, nothing written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prvql.commands.options import add_output_option


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, type=Path, help="the authors' .pth / .pth.tar file")
    add_output_option(parser, "the .safetensors file to write")
    parser.add_argument("--config", help="preset or config file to start from (default: the detected preset)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. inference.bf16=true")


def run(args: argparse.Namespace) -> int:
    from prvql.errors import PRVQLError
    from prvql.model.released_weights import load_released
    from prvql.weights_file import save_weights

    if args.output.suffix != ".safetensors":
        raise PRVQLError(f"--output: {args.output} must end in .safetensors")
    converted = load_released(args.checkpoint, args.config, args.overrides)
    print(converted.summary(args.checkpoint), flush=True)
    source = {"source": args.checkpoint.name}
    save_weights(converted.model, args.output, converted.cfg, include_backbone=True, extra=source)
    print(f"wrote {args.output}")
    return 0
