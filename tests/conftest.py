"""Shared fixtures: offline, single-threaded torch (pytest-xdist runs two workers on two cores), tiny config."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from prvql.config import Config, load_config  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def tiny_cfg() -> Config:
    """The CPU-sized preset (random ViT-S/14 backbone at 112 px, 6-frame windows)."""
    return load_config("tiny")


@pytest.fixture
def tiny_model(tiny_cfg: Config) -> torch.nn.Module:
    """The tiny model with random weights, in eval mode; the heads' output layers (initialised near zero) are scaled
    up so that scores and boxes vary across frames, anchors and queries."""
    from prvql.model import build_prvql
    from prvql.model.head import AnchorHead

    torch.manual_seed(0)
    model = build_prvql(tiny_cfg.model).eval()
    for head in (m for m in model.modules() if isinstance(m, AnchorHead)):
        for conv in (head.cls_out, head.reg_out):
            torch.nn.init.normal_(conv.weight, std=0.05)
    return model


@pytest.fixture
def tiny_weights(tiny_cfg: Config, tiny_model: torch.nn.Module, tmp_path: Path) -> Path:
    """:func:`tiny_model` saved as a weights file with its config (what ``--weights`` takes)."""
    from prvql.weights_file import save_weights

    path = tmp_path / "tiny.safetensors"
    save_weights(tiny_model, path, tiny_cfg)
    return path


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four small synthetic clips in the official layout (three for training, one for validation), built once per
    test process."""
    from prvql.synth.episode import SynthOptions, write_synthetic_dataset

    root = tmp_path_factory.mktemp("synth")
    opts = SynthOptions(frame_width=160, frame_height=120, num_frames=40)
    report = write_synthetic_dataset(root, 4, seed=0, opts=opts, progress=False)
    assert not report.failed
    return root


@pytest.fixture(scope="session")
def prvql_file() -> bytes:
    """A tiny PRVQL checkpoint in the released layout (:func:`tests.test_named_weights.checkpoint_bytes`)."""
    from tests.test_named_weights import checkpoint_bytes

    return checkpoint_bytes("prvql", "cross")


@pytest.fixture
def site() -> Iterator[object]:
    """A local HTTP server (:class:`tests.test_named_weights.Site`) for the weights downloads, stopped after."""
    from tests.test_named_weights import Site

    server = Site()
    yield server
    server.stop()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty weights cache folder (``PRVQL_CACHE``)."""
    monkeypatch.setenv("PRVQL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
