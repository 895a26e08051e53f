"""Shared fixtures: offline, single-threaded torch (pytest-xdist runs two workers on two cores), tiny config."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from prvql.config import Config, load_config  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def tiny_cfg() -> Config:
    """The CPU-sized preset (random ViT-S/14 backbone at 112 px, 6-frame windows)."""
    return load_config("tiny")
