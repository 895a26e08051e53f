"""Training checkpoints and inference weights.

- Training checkpoint (``RUN_DIR/checkpoint.pt``, ``torch.save``): trainable model tensors, optimiser, scheduler,
  RNG states of every rank (python, numpy, torch, CUDA) as tensors and plain types, the data sampler's position,
  the iteration and the resolved config. Read back with ``torch.load(weights_only=True)``, so a checkpoint from
  elsewhere cannot run code.
- Weights (``*.safetensors``): the trainable tensors only (the frozen backbone comes from its own weights file),
  with the resolved config as JSON metadata under ``"config"``. Used by predict / locate / demo.

"Trainable" tensors are the parameters that require a gradient plus the buffers of modules that own such a
parameter or own no parameter at all (BatchNorm statistics of the head, the anchors); the frozen backbone's
parameters and buffers are left out.

Every failure to read or fit a file raises :class:`prvql.errors.CheckpointError` naming the file (and the key).
"""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from prvql.atomic import atomic_path
from prvql.config import Config, config_from_dict, config_to_dict
from prvql.errors import CheckpointError, ConfigError

CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "iteration", "sampler", "rng", "config")


def trainable_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The model's state that training changes (see the module docstring), detached, same devices."""
    state: dict[str, Tensor] = {}
    for prefix, module in model.named_modules():
        direct = list(module.parameters(recurse=False))
        trains = any(p.requires_grad for p in direct)
        dot = f"{prefix}." if prefix else ""
        for name, param in module.named_parameters(recurse=False):
            if param.requires_grad:
                state[dot + name] = param.detach()
        if trains or not direct:
            for name, buf in module.named_buffers(recurse=False):
                if name not in module._non_persistent_buffers_set:
                    state[dot + name] = buf.detach()
    return state


def load_trainable_state(model: nn.Module, tensors: dict[str, Tensor], source: str | Path) -> None:
    """Copy ``tensors`` into ``model``; every trainable key must be there with the right shape, and nothing else.

    Raises:
        CheckpointError: naming ``source`` and the first missing, unexpected or mis-shaped key.
    """
    expected = trainable_state_dict(model)
    for key, value in expected.items():
        if key not in tensors:
            raise CheckpointError(f"{source}: missing key '{key}' (the file does not fit this model)")
        if tuple(tensors[key].shape) != tuple(value.shape):
            raise CheckpointError(
                f"{source}: key '{key}' has shape {tuple(tensors[key].shape)}, the model expects {tuple(value.shape)}"
            )
    for key in tensors:
        if key not in expected:
            raise CheckpointError(f"{source}: unexpected key '{key}' (the file does not fit this model)")
    model.load_state_dict(tensors, strict=False)


def save_weights(model: nn.Module, path: str | Path, cfg: Config, extra: dict[str, str] | None = None) -> None:
    """Write the trainable tensors of ``model`` to a safetensors file, atomically, with ``cfg`` as metadata
    (plus the ``extra`` string entries, e.g. how ``weights_best`` was selected)."""
    tensors = {k: v.cpu().clone().contiguous() for k, v in trainable_state_dict(model).items()}
    metadata = {**(extra or {}), "format": "prvql", "config": json.dumps(config_to_dict(cfg))}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a :func:`save_weights` file into ``model`` (strict about its trainable keys)."""
    path = Path(path)
    load_trainable_state(model, _read_safetensors(path), path)


def load_weights_config(path: str | Path) -> Config:
    """The resolved config stored in a weights file's metadata."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    if "config" not in metadata:
        raise CheckpointError(f"{path}: metadata has no 'config' (not written by prvql)")
    try:
        return config_from_dict(json.loads(metadata["config"]))
    except (json.JSONDecodeError, ConfigError) as exc:
        raise CheckpointError(f"{path}: metadata 'config' is not a valid config ({exc})") from exc


def save_training_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write a training checkpoint atomically (``state`` holds tensors and plain Python types only)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint on the CPU with ``weights_only=True``.

    Raises:
        CheckpointError: missing, corrupt, or lacking one of :data:`CHECKPOINT_KEYS`.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a prvql training checkpoint")
    for key in CHECKPOINT_KEYS:
        if key not in state:
            raise CheckpointError(f"{path}: missing key '{key}' (not a prvql training checkpoint)")
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
