"""Weights files, and reading untrusted torch files.

- Weights (``*.safetensors``): the trainable tensors only (the frozen backbone comes from its own weights file),
  with the resolved config as JSON metadata under ``"config"``. Used by predict / locate / demo.
- Self-contained weights (``save_weights(..., include_backbone=True)``, written by ``prvql convert``): every tensor
  of the model, backbone included, metadata ``"backbone": "included"``; ``--weights`` alone runs it.
- :func:`torch_load_untrusted`: ``torch.load(weights_only=True)`` for every torch file from elsewhere (training
  checkpoints, the authors' checkpoints, DINOv2 weights), so none can run code.

"Trainable" tensors are the parameters that require a gradient plus the buffers of modules that own such a
parameter or own no parameter at all (BatchNorm statistics of the head, the anchors); the frozen backbone's
parameters and buffers are left out.

Every failure to read or fit a file raises :class:`prvql.errors.CheckpointError` naming the file (and the key).
"""

from __future__ import annotations

import json
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from prvql.atomic import atomic_path
from prvql.config import Config, config_from_dict, config_to_dict
from prvql.errors import CheckpointError, ConfigError, one_line
from prvql.paths import check_input_file


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


def load_trainable_state(
    model: nn.Module, tensors: dict[str, Tensor], source: str | Path, everything: bool = False
) -> None:
    """Copy ``tensors`` into ``model``; every trainable key (``everything``: every key of the model's state dict)
    must be there with the right shape, and nothing else. The values are copied into the model's own tensors (an
    optimizer built on them stays valid); only a model with parts on the meta device (built without initialising
    what the file replaces) is assigned the file's tensors instead.

    Raises:
        CheckpointError: naming ``source`` and the first missing, unexpected or mis-shaped key.
    """
    expected = model.state_dict() if everything else trainable_state_dict(model)
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
    on_meta = any(t.is_meta for t in expected.values())
    model.load_state_dict(tensors, strict=False, assign=on_meta)


def save_weights(
    model: nn.Module,
    path: str | Path,
    cfg: Config,
    *,
    include_backbone: bool = False,
    extra: dict[str, str] | None = None,
) -> None:
    """Write the trainable tensors of ``model`` (``include_backbone``: every tensor of its state dict) to a
    safetensors file, atomically, with ``cfg`` as metadata, plus the ``extra`` string entries (where the weights
    came from, how ``weights_best`` was selected)."""
    state = model.state_dict() if include_backbone else trainable_state_dict(model)
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in state.items()}
    metadata = {**(extra or {}), "format": "prvql", "config": json.dumps(config_to_dict(cfg))}
    if include_backbone:
        metadata["backbone"] = "included"
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def weights_include_backbone(path: str | Path) -> bool:
    """True for a self-contained weights file (metadata ``"backbone": "included"``)."""
    return _read_metadata(Path(path)).get("backbone") == "included"


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    check_input_file(path, "weights file", CheckpointError)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a :func:`save_weights` file into ``model`` (strict about its trainable keys, or about every key of the
    model's state dict for a self-contained file)."""
    path = Path(path)
    tensors = _read_safetensors(path)
    load_trainable_state(model, tensors, path, everything=weights_include_backbone(path))


def read_weights_file(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The tensors and the metadata of a :func:`save_weights` file, unchecked against any model."""
    path = Path(path)
    return _read_safetensors(path), _read_metadata(path)


def _read_metadata(path: Path) -> dict[str, str]:
    check_input_file(path, "weights file", CheckpointError)
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc


def load_weights_config(path: str | Path) -> Config:
    """The resolved config stored in a weights file's metadata."""
    path = Path(path)
    metadata = _read_metadata(path)
    if "config" not in metadata:
        raise CheckpointError(f"{path}: metadata has no 'config' (not written by prvql)")
    try:
        return config_from_dict(json.loads(metadata["config"]))
    except (json.JSONDecodeError, ConfigError) as exc:
        raise CheckpointError(f"{path}: metadata 'config' is not a valid config ({exc})") from exc


def torch_load_untrusted(path: str | Path, what: str, mmap: bool = False) -> Any:
    """``torch.load(weights_only=True)`` of a file from elsewhere, on the CPU: tensors and plain types only, so it
    cannot run code. ``mmap``: page tensors in from the file as they are used (zip format; the legacy format is
    read whole).

    Raises:
        CheckpointError: one line naming the file: missing, a folder, a payload that needs code to unpickle,
            truncated or corrupt.
    """
    path = check_input_file(path, what, CheckpointError)
    try:
        with warnings.catch_warnings():  # torch warns (several lines) about foreign pickle protocols: we refuse anyway
            warnings.simplefilter("ignore")
            try:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
            except RuntimeError as exc:
                if not mmap or "mmap" not in str(exc):
                    raise
                return torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except pickle.UnpicklingError as exc:  # torch explains weights_only over several lines: keep the cause
        boilerplate = ("Weights only load failed", "Check the documentation", "Please file an issue")
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = " ".join(line for line in lines if not line.startswith(boilerplate)) or "unpickling refused"
        needs_code = "global" in reason.lower()  # a payload naming Python objects
        reason = one_line(reason, 200)
        if needs_code:  # a payload naming Python objects: the file needs code to unpickle
            raise CheckpointError(f"{path}: refused, the file needs code to unpickle ({reason})") from None
        raise CheckpointError(f"{path}: not a readable {what}, truncated or corrupt ({reason})") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError, zipfile.BadZipFile) as exc:
        reason = one_line(str(exc), 200)
        raise CheckpointError(f"{path}: not a readable {what}, truncated or corrupt ({reason})") from None
