"""scripts/resize_weights.py: an init file for another input size keeps what fits and resizes the position grids."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from prvql.checkpoint import load_weights, trainable_state_dict
from prvql.config import apply_overrides
from prvql.model import build_prvql

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "resize_weights.py"
spec = importlib.util.spec_from_file_location("resize_weights", SCRIPT)
resize_weights = importlib.util.module_from_spec(spec)
spec.loader.exec_module(resize_weights)


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
