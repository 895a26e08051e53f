"""experiments/demo_model/resize_weights.py: an init file for another input size keeps what fits and resizes the
position grids."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from experiments.demo_model import resize_weights
from prvql.config import Config, apply_overrides, load_config
from prvql.model import build_prvql
from prvql.weights_file import load_weights, trainable_state_dict

SCRIPT = Path(resize_weights.__file__)


def test_position_grids_are_resized_frame_by_frame() -> None:
    t, side, c = 3, 4, 2
    pos = torch.arange(t, dtype=torch.float32).repeat_interleave(side * side * c).reshape(1, t * side * side, c)
    resized = resize_weights.resize_position_embedding(pos, t, 6)
    assert resized.shape == (1, t * 36, c)
    # frame f's grid held the constant f: so must its resized grid (a wrong (t, h, w) order would mix frames)
    torch.testing.assert_close(
        resized.reshape(t, 36, c), torch.arange(t, dtype=torch.float32)[:, None, None].expand(t, 36, c)
    )
    noise = torch.randn(1, t * side * side, c)
    torch.testing.assert_close(resize_weights.resize_position_embedding(noise, t, side), noise)


def test_cli_writes_an_init_file_the_larger_model_loads(tmp_path: Path, tiny_cfg, tiny_weights: Path) -> None:
    out = tmp_path / "init140.safetensors"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--weights", str(tiny_weights), "--set", "model.input_size=140"]
        + ["--output", str(out)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    big_cfg = apply_overrides(tiny_cfg, ["model.input_size=140"])
    model = build_prvql(big_cfg.model)
    load_weights(model, out)  # strict about every trainable key and shape
    old, new = load_file(str(tiny_weights)), trainable_state_dict(model)
    same = [k for k in new if k in old and old[k].shape == new[k].shape]
    assert all(torch.equal(new[k], old[k]) for k in same)
    changed = sorted(k for k in new if k not in same)
    assert changed and all(k.startswith("skg.") or k.endswith("temporal.pos_embed") for k in changed)
    fresh = done.stdout.split("fresh", 1)[1]
    assert "skg." in fresh and "pos_embed" not in fresh  # position grids are resized, SKG's MLPs start fresh


def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, tiny_weights: Path) -> None:
    out = tmp_path / "init.safetensors"
    for args in (
        ["--weights", str(tmp_path / "nope.safetensors")],
        ["--weights", str(tiny_weights), "--set", "model.nope=1"],
    ):
        done = subprocess.run(
            [sys.executable, str(SCRIPT), *args, "--output", str(out)], capture_output=True, text=True
        )
        assert done.returncode == 2 and "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
        assert not out.exists()


def _demo_cfg(*overrides: str) -> Config:
    """The demo preset, small enough for a CPU test."""
    small = ["model.input_size=64", "model.num_frames=4", "model.dim=16", "model.cab.num_heads=2"]
    return load_config("demo", [*small, "model.temporal.num_heads=2", "model.qfr.num_heads=2", *overrides])


def test_resize_weights_adds_the_backbone_stages_to_a_frozen_models_weights() -> None:
    torch.manual_seed(3)
    frozen = build_prvql(_demo_cfg("model.backbone.weights=package", "model.backbone.finetune_stages=0").model)
    old = trainable_state_dict(frozen)
    cfg = _demo_cfg("model.backbone.weights=package", "model.backbone.finetune_stages=2")
    model, fresh = resize_weights.resized_model(old, cfg)
    new = trainable_state_dict(model)
    assert sorted(fresh) == sorted(k for k in new if k.startswith("backbone."))  # the stages keep the backbone's own
    assert {k.split(".")[2] for k in fresh} == {str(len(model.backbone.body) - i) for i in (1, 2)}
    assert all(torch.equal(new[k], old[k]) for k in old)
    for key in fresh:
        torch.testing.assert_close(new[key], frozen.state_dict()[key])  # ImageNet, not random
