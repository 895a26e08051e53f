"""Training: schedule, modes, hard-negative pairs, overfitting one batch, exact kill-and-resume, 2-process DDP,
non-finite loss, CLI errors and checkpoint errors. Real tiny model on real synthetic data."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from prvql.cli import main
from prvql.config import Config, load_config
from prvql.errors import CheckpointError, ConfigError, TrainingError
from prvql.model import build_prvql
from prvql.train import loop as train_module
from prvql.train.checkpoint import load_training_checkpoint
from prvql.train.criterion import PRVQLCriterion, build_criterion
from prvql.train.logger import read_log
from prvql.train.loop import TrainForward, fit, pair_targets, set_train_mode, training_pairs
from prvql.train.schedule import build_optimizer, build_scheduler, warmup_linear_decay
from prvql.train.validate import frame_auroc, frame_stats
from prvql.weights_file import load_weights, load_weights_config, save_weights, trainable_state_dict

REPO = Path(__file__).resolve().parents[2]


def _cfg(root: Path, *overrides: str) -> Config:
    return load_config("tiny", [f"data.root={root}", "data.num_workers=0", "model.num_stages=2", *overrides])


def test_schedule_warms_up_then_decays_to_zero() -> None:
    factor = warmup_linear_decay(warmup=4, total=12)
    values = [factor(i) for i in range(12)]
    assert values[:4] == [0.25, 0.5, 0.75, 1.0]
    assert values[4] == 1.0 and values[11] == pytest.approx(1 / 8)
    assert all(a >= b for a, b in zip(values[3:], values[4:], strict=False))
    assert factor(12) == 0.0
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=0.1)
    sched = build_scheduler(opt, warmup=2, total=4)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.05, 0.1, 0.1, 0.05])


def test_train_mode_keeps_frozen_backbone_in_eval(tiny_cfg: Config) -> None:
    model = build_prvql(tiny_cfg.model)
    set_train_mode(model, whole_model_eval=False)
    assert model.training and not model.backbone.training
    assert all(not m.training for m in model.backbone.modules())
    assert model.stages[0].training
    set_train_mode(model, whole_model_eval=True)
    assert not any(m.training for m in model.modules())
    assert all(p.requires_grad for p in build_optimizer(model, 1e-4, 0.0).param_groups[0]["params"])


def test_hard_negative_targets_replicate_once() -> None:
    boxes = torch.rand(2, 3, 4)
    occurrence = torch.tensor([[True, False, True], [False, True, True]])
    before_query = torch.tensor([[True, True, False], [True, True, True]])
    t = pair_targets(boxes, occurrence, before_query, *training_pairs(2, True, False, boxes.device))
    assert t.boxes.shape == (4, 3, 4) and t.occurrence.shape == (4, 3)
    # pair i * B + j = clip i with query j
    assert torch.equal(t.occurrence[0], occurrence[0]) and torch.equal(t.occurrence[3], occurrence[1])
    assert not t.occurrence[1].any() and not t.occurrence[2].any()
    assert torch.equal(t.before_query[0], before_query[0])
    assert t.before_query[1].all() and t.before_query[2].all()
    assert torch.equal(t.boxes[1], boxes[0]) and torch.equal(t.boxes[2], boxes[1])


@pytest.mark.parametrize("hard_negatives", [False, True])
def test_recoloured_pairs_are_appended_all_negative(hard_negatives: bool) -> None:
    boxes = torch.rand(2, 3, 4)
    occurrence = torch.tensor([[True, False, True], [False, True, True]])
    before_query = torch.tensor([[True, True, False], [True, True, True]])
    clip, query = training_pairs(2, hard_negatives, True, boxes.device)
    base = 4 if hard_negatives else 2
    assert clip[base:].tolist() == [0, 1] and query[base:].tolist() == [2, 3]  # clip i, recoloured query i
    t = pair_targets(boxes, occurrence, before_query, clip, query)
    assert t.occurrence.shape == (base + 2, 3)
    assert not t.occurrence[base:].any() and t.before_query[base:].all()  # every frame a supervised negative
    assert torch.equal(t.boxes[base + 1], boxes[1])
    matching = [0, 3] if hard_negatives else [0, 1]
    assert torch.equal(t.occurrence[matching], occurrence) and torch.equal(t.before_query[matching], before_query)


def test_hard_negative_forward_pairs_every_clip_with_every_query(tiny_cfg: Config) -> None:
    torch.manual_seed(0)
    model = build_prvql(tiny_cfg.model).eval()
    size, frames = tiny_cfg.model.input_size, tiny_cfg.model.num_frames
    clips, queries = torch.randn(2, frames, 3, size, size), torch.randn(2, 3, size, size)
    recoloured = torch.randn(2, 3, size, size)
    with torch.no_grad():
        paired = TrainForward(model, hard_negatives=True)(clips, queries)
        crossed = model(clips[[1]], queries[[0]])  # pair 2 = clip 1 with query 0
        both = TrainForward(model, hard_negatives=True, recoloured=True)(clips, queries, recoloured)
        against_recoloured = model(clips[[1]], recoloured[[1]])  # pair 5 = clip 1 with its recoloured query
    assert paired["logits"].shape[0] == 4 and len(paired["stages"]) == tiny_cfg.model.num_stages
    torch.testing.assert_close(paired["logits"][2], crossed["logits"][0], rtol=1e-4, atol=1e-4)
    assert both["logits"].shape[0] == 6
    torch.testing.assert_close(both["logits"][:4], paired["logits"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(both["logits"][5], against_recoloured["logits"][0], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="recoloured"):
        TrainForward(model, hard_negatives=False, recoloured=True)(clips, queries)


def test_frame_stats_hand_made() -> None:
    logits = torch.tensor([[[2.0, -1.0], [-3.0, -2.0], [0.5, 1.0]]])  # frame scores 2, -2, 1
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]]).expand(1, 3, 2, 4)
    gt = torch.tensor([[[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.0, 0.0], [0.5, 0.5, 1.0, 0.75]]])
    occurrence = torch.tensor([[True, False, True]])
    stats = frame_stats(logits, boxes, gt, occurrence, torch.tensor([[True, True, False]]))
    assert stats["correct"].item() == 2 and stats["frames"].item() == 2  # frame 2 is after the query
    assert stats["positive_frames"].item() == 2
    assert stats["iou_sum"].item() == pytest.approx(1.0 + 0.5)  # top boxes: anchor 0, then anchor 1


def test_frame_auroc() -> None:
    scores = torch.tensor([0.9, 0.8, 0.3, 0.1])
    assert frame_auroc(scores, torch.tensor([True, True, False, False])) == 1.0
    assert frame_auroc(scores, torch.tensor([True, False, True, False])) == 0.75  # 3 of 4 pairs ordered
    assert frame_auroc(torch.tensor([0.5, 0.5]), torch.tensor([True, False])) == 0.5  # ties count half
    assert math.isnan(frame_auroc(scores, torch.ones(4, dtype=torch.bool)))


def test_one_batch_overfits(synth_root: Path) -> None:
    from prvql.data import build_train_dataset, collate

    cfg = _cfg(synth_root, "train.whole_model_eval=true")
    torch.manual_seed(0)
    model = build_prvql(cfg.model)
    set_train_mode(model, whole_model_eval=True)
    criterion = build_criterion(cfg.loss, cfg.model.num_stages)
    dataset = build_train_dataset(cfg)
    batch = collate([dataset[0], dataset[1]])
    assert batch.occurrence.any()
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.0)
    losses = []
    for _ in range(60):
        optimizer.zero_grad()
        loss = criterion(model(batch.frames, batch.query), batch)["loss"]
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], losses


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, iteration: int) -> None:
    """Make the next run die (KeyboardInterrupt) when it is about to start step ``iteration + 1``."""
    original = train_module._Run.train_step

    def step(self: train_module._Run) -> tuple[dict[str, float], float]:
        if self.iteration == iteration:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(train_module._Run, "train_step", step)


def test_kill_and_resume_gives_the_same_weights(
    synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _cfg(synth_root, "train.iterations=4", "train.checkpoint_every=2")
    fit(cfg, tmp_path / "straight", device="cpu")
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 2)
        with pytest.raises(KeyboardInterrupt):
            fit(cfg, tmp_path / "resumed", device="cpu")
    assert load_training_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["iteration"] == 2
    assert not (tmp_path / "resumed" / "weights.safetensors").exists()
    fit(cfg, tmp_path / "resumed", resume=True, device="cpu")

    a = load_file(tmp_path / "straight" / "weights.safetensors")
    b = load_file(tmp_path / "resumed" / "weights.safetensors")
    assert a.keys() == b.keys() and len(a) > 10
    for key in a:
        assert torch.equal(a[key], b[key]), key
    log_a = [r for r in read_log(tmp_path / "straight" / "log.jsonl") if r["split"] == "train"]
    log_b = [r for r in read_log(tmp_path / "resumed" / "log.jsonl") if r["split"] == "train"]
    assert [r["iteration"] for r in log_b] == [1, 2, 3, 4]
    assert [r["loss"] for r in log_a] == [r["loss"] for r in log_b]
    # and an uninterrupted run really moved the weights
    fresh = trainable_state_dict(build_prvql(cfg.model))
    assert any(not torch.equal(fresh[k], a[k]) for k in a)


def test_recoloured_negatives_train_end_to_end(
    synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = []
    original = PRVQLCriterion.__call__

    def spy(self: PRVQLCriterion, outputs: dict, targets: object) -> dict:
        seen.append((outputs["logits"].shape[0], targets.occurrence.shape[0], bool(targets.occurrence[-2:].any())))
        return original(self, outputs, targets)

    monkeypatch.setattr(PRVQLCriterion, "__call__", spy)
    cfg = _cfg(synth_root, "train.iterations=2", "train.batch_size=2", "loss.recoloured_negatives=true")
    fit(cfg, tmp_path, device="cpu")
    assert seen == [(4, 4, False)] * 2  # 2 matching pairs + 2 recoloured (all-negative) pairs per step
    assert all(math.isfinite(r["loss"]) for r in read_log(tmp_path / "log.jsonl") if r["split"] == "train")


def test_non_finite_loss_stops_with_a_checkpoint(
    synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = PRVQLCriterion.__call__
    calls = []

    def poisoned(self: PRVQLCriterion, outputs: dict, targets: object) -> dict:
        losses = original(self, outputs, targets)
        calls.append(1)
        if len(calls) == 2:  # the second step's loss
            losses["loss_giou_s1"] = losses["loss_giou_s1"] * float("nan")
            losses["loss"] = losses["loss"] + losses["loss_giou_s1"]
        return losses

    monkeypatch.setattr(PRVQLCriterion, "__call__", poisoned)
    with pytest.raises(TrainingError, match=r"iteration 2 \(term 'loss_giou_s1'\)"):
        fit(_cfg(synth_root, "train.iterations=4", "train.checkpoint_every=10"), tmp_path, device="cpu")
    assert load_training_checkpoint(tmp_path / "checkpoint.pt")["iteration"] == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_ddp_run_on_cpu(synth_root: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        "prvql",
        "train",
        "--config",
        "tiny",
        f"data.root={synth_root}",
        "data.num_workers=0",
        "model.num_stages=2",
        "train.batch_size=1",
        "train.iterations=2",
        "train.val_every=2",
        "train.val_queries=2",
        "--output",
        str(tmp_path),
        "--device",
        "cpu",
    ]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    state = load_training_checkpoint(tmp_path / "checkpoint.pt")
    assert state["iteration"] == 2 and len(state["rng"]) == 2
    records = read_log(tmp_path / "log.jsonl")
    assert [r["iteration"] for r in records if r["split"] == "train"] == [1, 2]
    val = [r for r in records if r["split"] == "val"]
    assert len(val) == 1 and 0.0 <= val[0]["frame_accuracy"] <= 1.0
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["loss"] > 0


def test_cli_unknown_config_key_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--config", "tiny", "train.no_such_key=1", "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train.no_such_key" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("loss:\n  weight_foo: 1.0\n")
    assert main(["train", "--config", str(bad), "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.yaml" in err and "loss.weight_foo" in err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_cuda_without_cuda_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--config", "tiny", "--output", str(tmp_path / "run"), "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "prvql: error: --device: cuda asked for but CUDA is not available"
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_resume_and_overwrite_guards(synth_root: Path, tmp_path: Path) -> None:
    cfg = _cfg(synth_root)
    with pytest.raises(CheckpointError, match="checkpoint.pt: checkpoint not found"):
        fit(cfg, tmp_path, resume=True, device="cpu")
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="already holds checkpoint.pt; resume from it") as error:
        fit(cfg, tmp_path, device="cpu")
    assert error.value.field == "run_dir"  # `prvql train` names its --output
    with pytest.raises(CheckpointError, match="checkpoint.pt: not a readable checkpoint"):
        fit(cfg, tmp_path, resume=True, device="cpu")


def test_weights_round_trip_and_errors(tiny_cfg: Config, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_prvql(tiny_cfg.model)
    path = tmp_path / "w.safetensors"
    save_weights(model, path, tiny_cfg)
    assert load_weights_config(path) == tiny_cfg
    saved = load_file(path)
    assert not any(k.startswith("backbone.") for k in saved)
    torch.manual_seed(1)
    other = build_prvql(tiny_cfg.model)
    load_weights(other, path)
    mine, theirs = trainable_state_dict(model), trainable_state_dict(other)
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)

    key = next(iter(saved))
    from safetensors.torch import save_file

    save_file({k: v for k, v in saved.items() if k != key}, str(tmp_path / "missing.safetensors"))
    with pytest.raises(CheckpointError, match=f"missing.safetensors: missing key '{key}'"):
        load_weights(other, tmp_path / "missing.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt.safetensors"):
        load_weights(other, corrupt)
    torch.save({"model": {}}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="partial.pt: missing key 'optimizer'"):
        load_training_checkpoint(tmp_path / "partial.pt")
