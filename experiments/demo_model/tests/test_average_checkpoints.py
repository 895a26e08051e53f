"""experiments/demo_model/average_checkpoints.py: the key-wise mean of one run's checkpoints, refused across models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from prvql.config import Config, apply_overrides, config_to_dict
from prvql.model import build_prvql
from prvql.weights_file import load_trainable_state, load_weights_config, save_weights, trainable_state_dict

SCRIPT = Path(__file__).resolve().parents[1] / "average_checkpoints.py"


def _checkpoint(path: Path, cfg: Config, iteration: int, seed: int) -> dict[str, torch.Tensor]:
    """A training checkpoint of ``cfg``'s model with random weights (seed); returns its model state."""
    torch.manual_seed(seed)
    state = {k: v.clone() for k, v in trainable_state_dict(build_prvql(cfg.model)).items()}
    for value in state.values():
        if value.is_floating_point():
            value.add_(torch.randn_like(value))
    payload = {"model": state, "optimizer": {}, "scheduler": {}, "iteration": iteration, "sampler": {}, "rng": {}}
    torch.save({**payload, "config": config_to_dict(cfg)}, path)
    return state


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


def test_writes_the_mean_of_the_checkpoints(tmp_path: Path, tiny_cfg: Config) -> None:
    a = _checkpoint(tmp_path / "a.pt", tiny_cfg, 30, seed=1)
    b = _checkpoint(tmp_path / "b.pt", tiny_cfg, 10, seed=2)
    out = tmp_path / "avg.safetensors"
    done = _run(
        str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--set", "inference.median_kernel=7", "--output", str(out)
    )
    assert done.returncode == 0, done.stderr
    written = load_file(str(out))
    assert written.keys() == a.keys()
    floats = [k for k in a if a[k].is_floating_point()]
    assert floats
    for key in floats:
        torch.testing.assert_close(written[key], (a[key] + b[key]) / 2)
        assert not torch.equal(written[key], a[key])
    for key in (k for k in a if not a[k].is_floating_point()):
        assert torch.equal(written[key], a[key])  # from the latest (iteration 30)
    assert load_weights_config(out).inference.median_kernel == 7
    with safe_open(str(out), "pt") as f:
        assert f.metadata()["averaged"] == "10, 30" and f.metadata()["iteration"] == "30"


def test_a_weights_file_averages_with_a_checkpoint(tmp_path: Path, tiny_cfg: Config) -> None:
    start = _checkpoint(tmp_path / "start.pt", tiny_cfg, 0, seed=3)
    model = build_prvql(tiny_cfg.model)
    load_trainable_state(model, start, tmp_path / "start.pt")
    save_weights(model, tmp_path / "init.safetensors", tiny_cfg)  # an init file: no iteration in its metadata
    end = _checkpoint(tmp_path / "end.pt", tiny_cfg, 40, seed=4)
    out = tmp_path / "avg.safetensors"
    done = _run(str(tmp_path / "init.safetensors"), str(tmp_path / "end.pt"), "--output", str(out))
    assert done.returncode == 0, done.stderr
    written = load_file(str(out))
    for key in (k for k in end if end[k].is_floating_point()):
        torch.testing.assert_close(written[key], (start[key] + end[key]) / 2)
    with safe_open(str(out), "pt") as f:
        assert f.metadata()["averaged"] == "0, 40"
    save_weights(model, tmp_path / "odd.safetensors", tiny_cfg, extra={"iteration": "x"})
    done = _run(str(tmp_path / "odd.safetensors"), str(tmp_path / "end.pt"), "--output", str(out.with_name("o")))
    assert done.returncode == 2 and "'iteration'" in done.stderr and "odd.safetensors" in done.stderr


def test_runs_that_differ_only_in_dropout_average(tmp_path: Path, tiny_cfg: Config) -> None:
    """Dropout changes no tensor, so a run fine-tuned with more dropout averages with its start; the output carries
    the latest file's config."""
    a = _checkpoint(tmp_path / "a.pt", tiny_cfg, 10, seed=1)
    dropped = apply_overrides(tiny_cfg, ["model.cab.dropout=0.1", "model.temporal.dropout=0.1"])
    b = _checkpoint(tmp_path / "b.pt", dropped, 20, seed=2)
    out = tmp_path / "avg.safetensors"
    done = _run(str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--output", str(out))
    assert done.returncode == 0, done.stderr
    written = load_file(str(out))
    key = next(k for k in a if a[k].is_floating_point() and not torch.equal(a[k], b[k]))
    torch.testing.assert_close(written[key], (a[key] + b[key]) / 2)
    assert load_weights_config(out).model.cab.dropout == 0.1


def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, tiny_cfg: Config) -> None:
    _checkpoint(tmp_path / "a.pt", tiny_cfg, 10, seed=1)
    _checkpoint(tmp_path / "big.pt", apply_overrides(tiny_cfg, ["model.input_size=140"]), 20, seed=2)
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    good = torch.load(tmp_path / "a.pt", weights_only=True)
    malformed = {"config": "x", "iteration": "a", "model": {"stage.weight": 1}}
    for field, value in malformed.items():  # fields of the wrong type: refused when read, not a traceback later
        torch.save({**good, field: value}, tmp_path / f"bad_{field}.pt")
    out = tmp_path / "avg.safetensors"
    for args, names in (
        ([str(tmp_path / "a.pt"), str(tmp_path / "nope.pt")], "nope.pt"),
        ([str(tmp_path / "a.pt"), str(tmp_path / "corrupt.pt")], "corrupt.pt"),
        ([str(tmp_path / "a.pt"), str(tmp_path / "big.pt")], "big.pt"),
        *(([str(tmp_path / "a.pt"), str(tmp_path / f"bad_{f}.pt")], f"'{f}'") for f in malformed),
        ([str(tmp_path / "a.pt"), "--set", "model.nope=1"], "model.nope"),
    ):
        done = _run(*args, "--output", str(out))
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and names in done.stderr
        assert not out.exists()
