"""prvql: PRVQL (ICCV 2025) visual query localisation in egocentric videos.

The one Python entry point for a trained model is :func:`load_model`; the command line is ``prvql`` (``prvql.cli``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

    from prvql.config import Config

__all__ = ["load_model"]


def load_model(
    weights: str | Path, config: str | Path | Config | None = None, device: str | torch.device = "cpu"
) -> tuple[Config, nn.Module]:
    """A trained model for inference, and its resolved config: in eval mode, batch norms folded into their convs
    (:meth:`prvql.model.prvql.PRVQL.fuse_for_inference`: the same outputs; such a model cannot be trained).

    Args:
        weights: a weights file written by ``prvql train`` / ``prvql convert`` (``.safetensors``), or the authors'
            VQLoC or PRVQL checkpoint (``.pth`` / ``.pth.tar``, converted in memory; nothing is written), or
            ``"vqloc"`` / ``"prvql"``: the authors' model cached by ``prvql weights get``.
        config: a preset name, a config file or a :class:`prvql.config.Config` to use instead of the config stored
            in (or, for the authors' files, detected from) ``weights``.
        device: where the model goes.

    Returns:
        ``(cfg, model)``; ``model.forward(frames [B, T, 3, S, S], query [B, 3, S, S])`` as in ``docs/MODEL.md``.

    Raises:
        prvql.errors.CheckpointError / ConfigError: an unreadable or unfitting file, naming it and the key.
    """
    from prvql.infer.trained_model import load_inference_model

    cfg, model = load_inference_model(config, weights)
    return cfg, model.to(device).eval()
