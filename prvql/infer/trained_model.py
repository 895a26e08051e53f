"""The trained model and device for the inference commands (``predict``, ``locate``, ``demo``).

Weights files (``prvql.weights_file.save_weights``) carry the trainable tensors and the resolved config, so
the weights alone are enough; the shipped demo model is used when neither a config nor weights are given. The
weights may also be a self-contained file written by ``prvql convert`` or the authors' own VQLoC / PRVQL
checkpoint files (any name not ending in ``.safetensors``), converted in memory
(:mod:`prvql.model.released_weights`), or the name ``vqloc`` / ``prvql`` of the authors' model converted and
cached by ``prvql weights get`` (:mod:`prvql.named_weights`). Errors about an input carry its ``field``
(``"weights"``, ``"device"``).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from prvql.config import Config, load_config
from prvql.errors import CheckpointError, ConfigError, PRVQLError

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent.parent


def default_weights_path() -> Path:
    """The demo model shipped in the package, ``prvql/weights/demo.safetensors``. Its config, post-processing
    included, is the one stored in the file (the ``demo`` preset is what new demo models are trained with).

    Raises:
        CheckpointError: (field ``"weights"``) if the file is absent from this installation.
    """
    weights = PACKAGE_DIR / "weights" / "demo.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"{weights}: the shipped demo model is missing; give a weights file", field="weights")
    return weights


def load_inference_model(
    config: str | Path | Config | None, weights: str | Path | None, overrides: Sequence[str] = ()
) -> tuple[Config, nn.Module]:
    """The config and the model with trained weights, in eval mode with its batch norms folded into the convs
    (:meth:`~prvql.model.prvql.PRVQL.fuse_for_inference`: same outputs, for inference only).

    Args:
        config: config file, preset or :class:`Config`; ``None`` = the config stored in the weights file.
        weights: ``prvql.weights_file.save_weights`` file (the trainable parts, the backbone then coming from
            ``cfg.model.backbone.weights``; or a self-contained file), an authors' ``.pth`` checkpoint, or the name
            ``vqloc`` / ``prvql`` of the authors' model cached by ``prvql weights get``
            (:func:`prvql.named_weights.resolve_weights`).
            ``config`` and ``weights`` both None = the shipped demo model with its stored config
            (:func:`default_weights_path`).
        overrides: dotted ``key=value`` overrides applied last.

    Raises:
        ConfigError: a config without weights (field ``"weights"``), or a bad override.
        CheckpointError: a missing or unfitting weights file, or a named model not downloaded yet.
    """
    from prvql.config import apply_overrides
    from prvql.model import build_prvql
    from prvql.model.backbone import build_backbone
    from prvql.model.released_weights import load_released
    from prvql.named_weights import resolve_weights
    from prvql.weights_file import load_weights, load_weights_config, weights_include_backbone

    weights = resolve_weights(weights)  # "vqloc" / "prvql": the authors' model from the cache (prvql weights get)
    if config is None and weights is None:
        weights = default_weights_path()
    if weights is None:
        raise ConfigError(
            "missing: a config alone gives a model with random weights, which finds nothing", field="weights"
        )
    if Path(weights).suffix != ".safetensors":
        converted = load_released(weights, config, list(overrides))
        logger.info("%s", converted.summary(weights))
        return converted.cfg, converted.model.fuse_for_inference()
    if isinstance(config, Config):
        cfg = apply_overrides(copy.deepcopy(config), list(overrides))  # the caller's Config stays as it is
    elif config is not None:
        cfg = load_config(config, list(overrides))
    else:
        cfg = apply_overrides(load_weights_config(weights), list(overrides))
    backbone = None
    if weights_include_backbone(weights):
        cfg.model.backbone.weights = None  # the file holds the backbone
        with torch.device("meta"):  # its weights come from the file: skip the (slow) random initialisation
            backbone = build_backbone(cfg.model.backbone)
    elif cfg.model.backbone.weights is None:
        logger.warning("model.backbone.weights is not set: the frozen backbone keeps its random initialisation")
    torch.manual_seed(0)  # whatever stays random (a backbone without weights) is the same in every process
    model = build_prvql(cfg.model, backbone=backbone)
    try:
        load_weights(model, weights)
    except CheckpointError:
        check_model_matches_weights(cfg, weights)  # name the setting that makes the tensors not fit, if one does
        raise
    return cfg, model.fuse_for_inference()


def check_model_matches_weights(cfg: Config, weights: str | Path) -> None:
    """Refuse a config whose ``model`` section differs from the one the weights were trained with (stored in the
    weights file), naming the differing keys, e.g. ``model.dim=8`` against 64; the backbone's weights file may
    differ. Weights without a stored config are not compared. Called when the tensors do not fit, so
    that the message blames the setting rather than the file (settings without tensors may differ on purpose).

    Raises:
        ConfigError: naming the key, the trained value and the given one.
    """
    from prvql.config import config_to_dict
    from prvql.weights_file import load_weights_config

    try:
        trained = config_to_dict(load_weights_config(weights).model)
    except CheckpointError:
        return
    given = config_to_dict(cfg.model)
    trained["backbone"].pop("weights", None)
    given["backbone"].pop("weights", None)
    differences = _differences(trained, given, "model")
    if differences:
        shown = ", ".join(f"{key}={now!r} (trained: {was!r})" for key, was, now in differences[:4])
        more = f" and {len(differences) - 4} more" if len(differences) > 4 else ""
        raise ConfigError(f"{shown}{more}: not the settings {weights} was trained with, so its tensors do not fit")


def _differences(a: dict, b: dict, prefix: str) -> list[tuple[str, object, object]]:
    """(dotted key, value in a, value in b) for every leaf where the nested dicts differ, in key order."""
    found = []
    for key in sorted(a.keys() | b.keys()):
        here = f"{prefix}.{key}"
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            found += _differences(a[key], b[key], here)
        elif a.get(key) != b.get(key):
            found.append((here, a.get(key), b.get(key)))
    return found


def resolve_device(name: str | None) -> torch.device:
    """``None`` = CUDA when available, else CPU.

    Raises:
        PRVQLError: (field ``"device"``) not a device name, or CUDA asked for without it.
    """
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise PRVQLError(f"not a device name ({name!r})", field="device") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PRVQLError(f"{name} asked for but CUDA is not available", field="device")
    return device
