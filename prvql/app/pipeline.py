"""The web app's model: loaded once, warmed up, and the files a job may hand out.

A job runs :func:`prvql.infer.memory.locate_memory` on the upload's video memory (the same function as ``prvql
locate --memory``; :func:`prvql.infer.locate.locate_video` when the memory could not be made): a box on frame F
searching "before" gives the track of ``prvql locate --query-frame F --query-box ...`` and a crop image searching
"anywhere" that of ``prvql locate --query IMAGE``. The app adds two choices the command line does not offer: a box
searched for in the whole video, and a crop searched for before a chosen frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from prvql.config import Config
from prvql.errors import ConfigError
from prvql.infer.locate import locate
from prvql.infer.postprocess import build_postprocessor
from prvql.infer.predictor import build_predictor

OUTPUT_FILES = ("track.json", "track.mp4", "scores.png")  # what a job writes; the only names the server hands out

WARM_UP_SIDE = 64  # pixels of the blank frames searched by LoadedModel.warm_up


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """The model the server loads once (``prvql.infer.trained_model.load_inference_model``) and its device."""

    cfg: Config
    model: nn.Module
    device: torch.device

    def __post_init__(self) -> None:
        if self.cfg.inference.fps <= 0:
            raise ConfigError(f"inference.fps: must be > 0 (got {self.cfg.inference.fps})")

    @property
    def fps(self) -> float:
        """The rate frames are searched at."""
        return float(self.cfg.inference.fps)

    def warm_up(self) -> None:
        """Search one window of blank frames, so that the first job does not pay for the backend's lazy setup
        (kernel selection, memory pools): a user's search then shows progress from its first second."""
        frames = np.zeros((self.cfg.model.num_frames, WARM_UP_SIDE, WARM_UP_SIDE, 3), np.uint8)
        locate(
            build_predictor(self.cfg, self.model, self.device),
            build_postprocessor(self.cfg.inference),
            frames,
            frames[0],
            (0.0, 0.0, WARM_UP_SIDE / 2, WARM_UP_SIDE / 2),
        )
