"""Training correctness: SKG in float32 under autocast, QFR normalisation, AKG keep rates, global batch,
the weights_best rule and range checks of every training value."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from prvql.cli import main
from prvql.config import load_config
from prvql.model import build_prvql
from prvql.model.knowledge import SpatialKnowledgeGeneration
from prvql.model.layers import MultiHeadAttention
from prvql.model.refinement import QueryFeatureRefinement
from prvql.train import loop as train_module
from prvql.train.logger import read_log
from prvql.train.loop import fit


def _cfg(root: Path, *overrides: str):
    return load_config("tiny", [f"data.root={root}", "data.num_workers=0", "model.num_stages=2", *overrides])


def _bf16() -> torch.autocast:
    return torch.autocast("cpu", dtype=torch.bfloat16)


# ---------------------------------------------------------------------------------------------------------------------
# SKG and the attention probes it reads: float32 whatever the autocast


def test_skg_under_bf16_autocast_matches_fp32() -> None:
    torch.manual_seed(0)
    skg = SpatialKnowledgeGeneration(16, 16, alpha=0.5, learned_mlp=True)
    cross = torch.randn(2, 3, 256).softmax(-1)  # S' values near 1/256, as SKG sees them
    temporal = torch.randn(2, 3, 8, 8).flatten(2).softmax(-1).view(2, 3, 8, 8)
    reference = skg(cross, temporal)
    with _bf16():
        mixed = skg(cross.bfloat16(), temporal.bfloat16())
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, reference, rtol=1e-3, atol=1e-3 * reference.abs().max().item())


def test_probed_attention_under_bf16_autocast_matches_fp32() -> None:
    torch.manual_seed(0)
    attn = MultiHeadAttention(32, 4)
    x, memory = torch.randn(2, 64, 32), torch.randn(2, 49, 32)
    probe = torch.zeros(49, 1)
    probe[24] = 1.0
    _, reference = attn(x, memory, probe=probe)
    with _bf16():
        out, probed = attn(x, memory, probe=probe)
    assert out.dtype == torch.bfloat16 and probed.dtype == torch.float32
    torch.testing.assert_close(probed, reference, rtol=1e-3, atol=1e-6)
    reference = attn.probabilities(x, memory)
    with _bf16():
        torch.testing.assert_close(attn.probabilities(x, memory), reference, rtol=1e-3, atol=1e-6)
    # without a probe the layer keeps running in bf16 (no cost outside SKG's probes)
    with _bf16():
        assert attn(x, memory)[0].dtype == torch.bfloat16


def test_model_forward_under_bf16_autocast(tiny_cfg) -> None:
    torch.manual_seed(0)
    model = build_prvql(tiny_cfg.model).eval()
    size, t = tiny_cfg.model.input_size, tiny_cfg.model.num_frames
    frames, query = torch.randn(1, t, 3, size, size), torch.randn(1, 3, size, size)
    with torch.no_grad(), _bf16():
        out = model(frames, query)
    assert out["logits"].dtype == torch.float32 and torch.isfinite(out["logits"]).all()


# ---------------------------------------------------------------------------------------------------------------------
# QFR normalisation: "no knowledge" must mean the same in training and at eval


@pytest.mark.parametrize("groups", [0, 8])
def test_qfr_all_zero_knowledge_same_in_train_and_eval(groups: int) -> None:
    torch.manual_seed(0)
    qfr = QueryFeatureRefinement(32, 2, "cross_attention", 2, 32, 0.0, norm_groups=groups)
    with torch.no_grad():
        qfr.cnb[0].bias.normal_()  # a trained conv has a bias: the all-zero input becomes a constant map
    query, zeros = torch.randn(3, 32, 4, 4), torch.zeros(3, 2, 32, 3, 3)
    train_out = qfr.train()(query, zeros)
    eval_out = qfr.eval()(query, zeros)
    same = torch.allclose(train_out, eval_out, atol=1e-5)
    # BatchNorm in train mode normalises the constant map away; its eval statistics do not: the two differ
    assert same == (groups > 0)
    assert isinstance(qfr.cnb[1], torch.nn.GroupNorm if groups else torch.nn.BatchNorm2d)


# ---------------------------------------------------------------------------------------------------------------------
# Run-time reports: AKG keep rates, tau never passed, global batch


def _warnings(run: Path) -> list[str]:
    return [r["message"] for r in read_log(run / "log.jsonl") if r["split"] == "warning"]


def test_akg_keep_rates_and_run_time_warnings(synth_root: Path, tmp_path: Path) -> None:
    # tau = 1: no slot can pass; batch 2 against the 12 the config was set for
    fit(_cfg(synth_root, "model.akg.tau=1.0", "train.iterations=2", "train.expected_global_batch=12"), tmp_path / "a")
    train = [r for r in read_log(tmp_path / "a" / "log.jsonl") if r["split"] == "train"]
    assert train and all(r["akg_keep_s0_0"] == 0.0 and r["akg_keep_s0_1"] == 0.0 for r in train)
    warnings = _warnings(tmp_path / "a")
    assert any("AKG kept no knowledge slot" in w and "QFR" in w for w in warnings)
    assert any("global batch 2 differs from the 12" in w and "train.grad_accum=6" in w for w in warnings)
    # tau = 0: every slot is kept; global batch 2 = 1 x 1 x 2 is what the config expects
    cfg = _cfg(
        synth_root,
        "model.akg.tau=0.0",
        "train.iterations=1",
        "train.batch_size=1",
        "train.grad_accum=2",
        "train.expected_global_batch=2",
    )
    fit(cfg, tmp_path / "b")
    train = [r for r in read_log(tmp_path / "b" / "log.jsonl") if r["split"] == "train"]
    assert train[-1]["akg_keep_s0_0"] == 1.0 and train[-1]["akg_keep_s0_1"] == 1.0
    assert _warnings(tmp_path / "b") == []


# ---------------------------------------------------------------------------------------------------------------------
# weights_best follows the validation AUROC of per-frame scores, not frame accuracy


def test_weights_best_is_chosen_by_frame_auroc(synth_root: Path, tmp_path: Path, monkeypatch) -> None:
    # iteration 1: baseline; 2: higher accuracy but lower AUROC (must not win); 3: best AUROC
    sequence = iter([(0.80, 0.60), (0.95, 0.55), (0.50, 0.70)])

    def fake_validate(*args, **kwargs) -> dict[str, float]:
        accuracy, auroc = next(sequence)
        return {"loss": 1.0, "frame_accuracy": accuracy, "frame_auroc": auroc, "top_box_iou": 0.1}

    monkeypatch.setattr(train_module, "validate", fake_validate)
    fit(_cfg(synth_root, "train.iterations=3", "train.val_every=1", "train.val_queries=1"), tmp_path)
    with safe_open(str(tmp_path / "weights_best.safetensors"), framework="pt") as f:
        meta = f.metadata()
    assert meta["selected_by"] == "frame_auroc" and meta["iteration"] == "3" and float(meta["frame_auroc"]) == 0.7
    val = [r for r in read_log(tmp_path / "log.jsonl") if r["split"] == "val"]
    assert [r["is_best"] for r in val] == [1.0, 0.0, 1.0]
    assert [r["best_frame_auroc"] for r in val] == [0.6, 0.6, 0.7]


# ---------------------------------------------------------------------------------------------------------------------
# Range checks: one line, exit 2, no run folder


@pytest.mark.parametrize(
    "override",
    [
        "train.iterations=0",
        "train.iterations=-5",
        "train.batch_size=0",
        "train.grad_accum=0",
        "train.lr=nan",
        "train.lr=0",
        "train.grad_clip=inf",
        "model.num_frames=0",
        "model.dim=0",
        "model.akg.tau=1.5",
        "model.akg.tau=-0.1",
        "model.qfr.norm_groups=5",
        "loss.weight_giou=-1",
        "data.query_scale=[2,1]",
        "data.query_blur_prob=2",
        "data.query_degrees=-5",
        "data.query_perspective=1.5",
    ],
)
def test_out_of_range_training_values_exit_2_before_the_run_folder(
    override: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert main(["train", "--config", "tiny", override, "--output", str(run), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and override.split("=")[0] in err, err
    assert not run.exists()


def test_paper_preset_uses_groupnorm_in_qfr_and_released_keeps_bn() -> None:
    from prvql.config import check_training_config

    paper, released = load_config("prvql_vitb14"), load_config("prvql_released")
    check_training_config(paper)
    assert paper.model.qfr.norm_groups > 0 and paper.model.dim % paper.model.qfr.norm_groups == 0
    assert released.model.qfr.norm_groups == 0 and released.train.whole_model_eval
    assert paper.train.expected_global_batch == released.train.expected_global_batch == 12
