"""The inference stage path and the losses call nothing that makes a GPU wait for the host (a tensor built from
Python numbers and copied to the device, ``.item()``, ``bool(tensor)``, boolean-mask indexing ...). Checked on the
CPU by recording every torch function prvql's own code calls: the same calls on CUDA would synchronise. (Libraries
are not checked: torchvision's GIoU loss indexes by a mask inside.)"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

from prvql.config import Config
from prvql.train.criterion import Targets, build_criterion

SYNCING = {"new_tensor", "tensor", "as_tensor", "item", "tolist", "nonzero", "__bool__", "__int__", "__float__"}
MASK = "indexing by a boolean mask"  # recorded for t[mask] and t[mask] = v
PACKAGE = str(Path(__file__).resolve().parents[2] / "prvql")


class _Calls(TorchFunctionMode):
    """Names of the torch functions and tensor methods that prvql's code calls inside the block."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        index = args[1] if name in ("__getitem__", "__setitem__") else ()
        masks = [i for i in (index if isinstance(index, tuple) else (index,)) if isinstance(i, torch.Tensor)]
        if sys._getframe(1).f_code.co_filename.startswith(PACKAGE):
            self.names.append(MASK if any(i.dtype == torch.bool for i in masks) else name)
        return func(*args, **(kwargs or {}))


def test_the_stage_forward_never_waits_for_the_host(tiny_cfg: Config, tiny_model: torch.nn.Module) -> None:
    model = tiny_model.fuse_for_inference()
    t, s = tiny_cfg.model.num_frames, tiny_cfg.model.input_size
    with torch.inference_mode():
        video, query = model.embed(torch.randn(2 * t, 3, s, s)), model.embed(torch.randn(2, 3, s, s))
        with _Calls() as calls:
            model.forward_embedded(video.view(2, t, *video.shape[1:]), query)
            model.forward_embedded(video.view(2, t, *video.shape[1:]), query, stage_mean=True, top=True)
    assert "clamp" in calls.names  # AKG ran: its box scaling and clamping (clip_boxes) are checked too
    assert not (SYNCING | {MASK}) & set(calls.names)


def test_the_losses_wait_for_the_host_once(tiny_cfg: Config, tiny_model: torch.nn.Module) -> None:
    """Only the positive anchors' indices (their number sizes the box terms) are read back, once per step."""
    t, s = tiny_cfg.model.num_frames, tiny_cfg.model.input_size
    outputs = tiny_model(torch.randn(2, t, 3, s, s), torch.randn(2, 3, s, s))
    occurrence = torch.arange(t).expand(2, t) % 2 == 0
    boxes = torch.tensor([0.3, 0.3, 0.6, 0.55]).expand(2, t, 4).clone()
    targets = Targets(boxes=boxes, occurrence=occurrence, before_query=torch.arange(t).expand(2, t) < t - 1)
    criterion = build_criterion(tiny_cfg.loss, tiny_cfg.model.num_stages)
    with _Calls() as calls:
        losses = criterion(outputs, targets)
    assert [n for n in calls.names if n in SYNCING | {MASK}] == ["nonzero"]
    assert torch.isfinite(losses["loss"])
