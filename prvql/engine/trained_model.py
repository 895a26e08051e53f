"""The trained model and device for the inference commands (``predict``, ``locate``, ``demo``).

Weights files (``prvql.checkpoint.save_weights``) carry the trainable tensors and the resolved config, so
``--weights`` alone is enough; the shipped demo model is used when neither ``--config`` nor ``--weights`` is given.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from prvql.config import Config, load_config
from prvql.errors import CheckpointError, ConfigError, PRVQLError

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent.parent


def default_model_paths() -> tuple[Path, Path]:
    """(config, weights) of the demo model shipped in the package: ``prvql/configs/demo.yaml`` and
    ``prvql/weights/demo.safetensors``.

    Raises:
        CheckpointError: if either file is absent from this installation.
    """
    config = PACKAGE_DIR / "configs" / "demo.yaml"
    weights = PACKAGE_DIR / "weights" / "demo.safetensors"
    for path in (config, weights):
        if not path.is_file():
            raise CheckpointError(f"{path}: the shipped demo model is missing; pass --config and --weights")
    return config, weights


def load_inference_model(
    config: str | Path | None, weights: str | Path | None, overrides: Sequence[str] = ()
) -> tuple[Config, nn.Module]:
    """The config and the model with trained weights, in eval mode with its batch norms folded into the convs
    (:meth:`~prvql.model.prvql.PRVQL.fuse_for_inference`: same outputs, for inference only).

    Args:
        config: config file or preset; ``None`` = the config stored in the weights file.
        weights: ``prvql.checkpoint.save_weights`` file (the trainable parts; the backbone comes from
            ``cfg.model.backbone.weights``). ``config`` and ``weights`` both None = the shipped demo model
            (:func:`default_model_paths`).
        overrides: dotted ``key=value`` overrides applied last.

    Raises:
        ConfigError: a config without weights, or a bad override.
        CheckpointError: a missing or unfitting weights file.
    """
    from prvql.checkpoint import load_weights, load_weights_config
    from prvql.config import config_from_dict, config_to_dict, parse_override
    from prvql.model import build_prvql

    if config is None and weights is None:
        config, weights = default_model_paths()
    if weights is None:
        raise ConfigError("--config needs --weights (a model with random weights finds nothing)")
    if config is not None:
        cfg = load_config(config, list(overrides))
    else:
        data = config_to_dict(load_weights_config(weights))
        for text in overrides:
            _deep_update(data, parse_override(text))
        cfg = config_from_dict(data)
    if cfg.model.backbone.weights is None:
        logger.warning("model.backbone.weights is not set: the frozen backbone keeps its random initialisation")
    torch.manual_seed(0)  # whatever stays random (a backbone without weights) is the same in every process
    model = build_prvql(cfg.model)
    load_weights(model, weights)
    return cfg, model.fuse_for_inference()


def _deep_update(target: dict, update: dict) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = value


def resolve_device(name: str | None) -> torch.device:
    """``None`` = CUDA when available, else CPU; asking for CUDA without it raises :class:`PRVQLError`."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise PRVQLError(f"--device: not a device name ({name!r})") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PRVQLError(f"--device: {name} asked for but CUDA is not available")
    return device
