"""Training checkpoints (``RUN_DIR/checkpoint.pt``, ``torch.save``): trainable model tensors, optimiser, scheduler,
RNG states of every rank (python, numpy, torch, CUDA) as tensors and plain types, the data sampler's position, the
iteration and the resolved config. Read back with ``torch.load(weights_only=True)``, so a checkpoint from elsewhere
cannot run code.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prvql.atomic import atomic_path
from prvql.errors import CheckpointError
from prvql.weights_file import torch_load_untrusted

CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "iteration", "sampler", "rng", "config")


def save_training_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write a training checkpoint atomically (``state`` holds tensors and plain Python types only)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint on the CPU with ``weights_only=True`` (:func:`torch_load_untrusted`).

    Raises:
        CheckpointError: missing, corrupt, lacking one of :data:`CHECKPOINT_KEYS`, or with a ``model`` that is not
            name -> tensor, an ``iteration`` that is not a non-negative integer or a ``config`` that is not a mapping.
    """
    state = torch_load_untrusted(path, "checkpoint")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a prvql training checkpoint")
    for key in CHECKPOINT_KEYS:
        if key not in state:
            raise CheckpointError(f"{path}: missing key '{key}' (not a prvql training checkpoint)")
    model = state["model"]
    if not isinstance(model, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in model.items()):
        raise CheckpointError(f"{path}: 'model' is not a mapping of names to tensors (not a prvql training checkpoint)")
    iteration = state["iteration"]
    if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
        raise CheckpointError(f"{path}: 'iteration' is {iteration!r}, not a non-negative integer")
    if not isinstance(state["config"], dict):
        raise CheckpointError(f"{path}: 'config' is not a mapping (not a prvql training checkpoint)")
    return state


def capture_rng_state() -> dict[str, Any]:
    """This process's python, numpy, torch (and CUDA) RNG states as tensors and plain types."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["internal"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(
        (npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
