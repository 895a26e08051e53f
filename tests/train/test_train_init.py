"""`train.init_weights`: a new run starts from a weights file (fine-tuning); resuming ignores it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from prvql.config import Config, load_config
from prvql.errors import CheckpointError
from prvql.train.loop import fit


def _cfg(root: Path, *overrides: str) -> Config:
    return load_config(
        "tiny",
        [f"data.root={root}", "data.num_workers=0", "train.iterations=1", "train.val_every=0", *overrides],
    )


def test_a_new_run_starts_from_init_weights(synth_root: Path, tiny_weights: Path, tmp_path: Path) -> None:
    # lr 1e-30: AdamW moves no parameter by more than 1e-29, so the run's weights are its starting point
    # (batch-norm statistics still move in train mode)
    fit(_cfg(synth_root, "train.lr=1e-30", f"train.init_weights={tiny_weights}"), tmp_path / "init", device="cpu")
    fit(_cfg(synth_root, "train.lr=1e-30"), tmp_path / "fresh", device="cpu")
    start = {k: v for k, v in load_file(tiny_weights).items() if "running_" not in k and "num_batches" not in k}
    init = load_file(tmp_path / "init" / "weights.safetensors")
    fresh = load_file(tmp_path / "fresh" / "weights.safetensors")
    assert init.keys() >= start.keys() and len(start) > 10
    assert all(torch.allclose(init[k], start[k], rtol=0, atol=1e-12) for k in start)
    assert any(not torch.allclose(fresh[k], start[k], rtol=0, atol=1e-3) for k in start)


def test_init_weights_of_another_model_is_refused(synth_root: Path, tiny_weights: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="tiny.safetensors"):
        fit(_cfg(synth_root, "model.dim=40", f"train.init_weights={tiny_weights}"), tmp_path / "run", device="cpu")


def test_self_contained_weights_load_into_a_live_model_in_place(tmp_path: Path) -> None:
    """A self-contained file (backbone included) copied into a built model: the parameter objects an optimizer
    holds stay the model's, and they get the file's values."""
    from prvql.model import build_prvql
    from prvql.weights_file import load_weights, save_weights

    cfg = load_config("tiny", ["model.backbone.weights=null"])
    torch.manual_seed(1)
    source = build_prvql(cfg.model)
    path = tmp_path / "all.safetensors"
    save_weights(source, path, cfg, include_backbone=True)
    torch.manual_seed(2)
    model = build_prvql(cfg.model)
    before = [id(p) for p in model.parameters()]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    load_weights(model, path)
    assert [id(p) for p in model.parameters()] == before
    assert {id(p) for group in optimizer.param_groups for p in group["params"]} <= set(before)
    expected = source.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
