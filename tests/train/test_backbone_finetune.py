"""model.backbone.finetune_stages: the demo backbone's last stages train with the model and travel in its weights
(experiments/demo_model/resize_weights.py adding them to an init file: its tests are beside it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prvql.config import Config, check_training_config, load_config
from prvql.errors import ConfigError
from prvql.model import build_prvql
from prvql.train.schedule import build_optimizer, build_scheduler
from prvql.weights_file import load_weights, save_weights, trainable_state_dict

SMALL = ["model.backbone.weights=null", "model.input_size=64", "model.num_frames=4", "model.dim=16"]


def _cfg(*overrides: str) -> Config:
    return load_config(
        "demo",
        [*SMALL, "model.cab.num_heads=2", "model.temporal.num_heads=2", "model.qfr.num_heads=2"] + list(overrides),
    )


def _inputs(cfg: Config) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    s, t = cfg.model.input_size, cfg.model.num_frames
    return torch.randn(1, t, 3, s, s, generator=gen), torch.randn(1, 3, s, s, generator=gen)


def test_fine_tuned_stage_gets_gradients_and_is_part_of_the_weights(tmp_path: Path) -> None:
    cfg = _cfg("model.backbone.finetune_stages=1")
    torch.manual_seed(0)
    model = build_prvql(cfg.model).train()
    last = len(model.backbone.body) - 1
    state = trainable_state_dict(model)
    in_weights = {k.split(".")[2] for k in state if k.startswith("backbone.")}
    assert in_weights == {str(last)}  # the last stage only, with its (frozen) BatchNorm statistics
    assert any(k.startswith(f"backbone.body.{last}.") and k.endswith("running_mean") for k in state)
    frozen_model = build_prvql(_cfg("model.backbone.finetune_stages=0").model)
    assert not any(k.startswith("backbone.") for k in trainable_state_dict(frozen_model))

    frames, query = _inputs(cfg)
    out = model(frames, query)
    out["logits"].sigmoid().mean().backward()
    assert all(p.grad is not None for p in model.backbone.body[last].parameters())
    assert all(p.grad is None for p in model.backbone.body[:last].parameters())

    with torch.no_grad():  # a trained backbone stage must reach the weights file and come back from it
        for p in model.backbone.body[last].parameters():
            p.add_(0.1 * torch.randn_like(p))
    path = tmp_path / "finetuned.safetensors"
    save_weights(model, path, cfg)
    torch.manual_seed(1)
    loaded = build_prvql(cfg.model)
    load_weights(loaded, path)
    model.eval()
    loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(frames, query)["logits"], model(frames, query)["logits"])


def test_only_efficientnet_can_fine_tune() -> None:
    with pytest.raises(ConfigError, match="model.backbone.finetune_stages"):
        build_prvql(load_config("tiny", ["model.backbone.finetune_stages=1"]).model)


def test_backbone_lr_scale_puts_the_tuned_stages_in_their_own_group() -> None:
    model = build_prvql(_cfg("model.backbone.finetune_stages=1").model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    tuned = {id(p) for p in model.backbone.parameters() if p.requires_grad}
    assert tuned and len(tuned) < len(trainable)
    one = build_optimizer(model, 1e-3, 0.0)
    assert len(one.param_groups) == 1 and len(one.param_groups[0]["params"]) == len(trainable)
    two = build_optimizer(model, 1e-3, 0.0, backbone_lr_scale=0.25)
    head, body = two.param_groups
    assert {id(p) for p in body["params"]} == tuned
    assert {id(p) for p in head["params"]} == {id(p) for p in trainable} - tuned
    scheduler = build_scheduler(two, warmup=2, total=10)  # the schedule scales both groups alike
    assert (head["lr"], body["lr"]) == pytest.approx((0.5e-3, 0.125e-3))
    two.step()
    scheduler.step()
    assert (head["lr"], body["lr"]) == pytest.approx((1e-3, 0.25e-3))


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_backbone_lr_scale_must_be_positive(value: str) -> None:
    with pytest.raises(ConfigError, match="train.backbone_lr_scale"):
        check_training_config(_cfg(f"train.backbone_lr_scale={value}"))
