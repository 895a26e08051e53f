"""The ``training_step`` section of ``python -m benchmarks``: one PRVQL training iteration, timed.

Forward, losses, backward, clipping and the AdamW step of a fresh model with RANDOM backbone weights (the config
given, ``prvql_vitb14`` by default: DINOv2 ViT-B/14 at 448 px, K = 3 stages, 30-frame windows) on a fixed random
batch with a target box in every other frame, so no data is read. The backbone forward is also timed on its own
(it runs without gradient). On the CPU: batch 1, one timed step, fp32; on CUDA: batch ``train.batch_size``, bf16
autocast as ``train.bf16`` says (as in training), one warm-up step and the median of 3; the peak memory is
measured above a clean baseline taken before the model is built (what an earlier section left is freed first).
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import time

import torch

from prvql.config import Config, load_config
from prvql.model import build_prvql
from prvql.train.criterion import Targets, build_criterion
from prvql.train.loop import set_train_mode
from prvql.train.schedule import build_optimizer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class RandomTrainStep:
    """One training iteration (forward, losses, backward, clipping, AdamW step) of a fresh model on a fixed random
    batch: frames [B, T, 3, S, S] and query [B, 3, S, S] drawn once, a target box in every other frame.

    Args:
        cfg: the configuration (model, loss and optimiser settings; ``train.grad_clip``).
        device: where the model and batch live.
        batch_size: windows B per step.
        bf16: bf16 autocast around the forward pass (the losses in fp32, as in training).
    """

    def __init__(self, cfg: Config, device: torch.device, batch_size: int, bf16: bool) -> None:
        torch.manual_seed(0)
        self.model = build_prvql(cfg.model).to(device)
        set_train_mode(self.model, cfg.train.whole_model_eval)
        self.criterion = build_criterion(cfg.loss, cfg.model.num_stages)
        self.optimizer = build_optimizer(self.model, cfg.train.lr, cfg.train.weight_decay)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.grad_clip = cfg.train.grad_clip
        self.device, self.bf16 = device, bf16
        b, t, s = batch_size, cfg.model.num_frames, cfg.model.input_size
        self.frames = torch.randn(b, t, 3, s, s, device=device)
        self.query = torch.randn(b, 3, s, s, device=device)
        occurrence = (torch.arange(t, device=device) % 2 == 0).expand(b, t).clone()
        boxes = torch.tensor([0.3, 0.3, 0.6, 0.55], device=device).expand(b, t, 4) * occurrence[..., None]
        before = torch.ones(b, t, dtype=torch.bool, device=device)
        self.targets = Targets(boxes=boxes, occurrence=occurrence, before_query=before)

    def __call__(self) -> None:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            outputs = self.model(self.frames, self.query)
        loss = self.criterion(outputs, self.targets)["loss"]  # outside autocast, as in prvql.train.loop
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()


def bench_training_step(args: argparse.Namespace) -> dict:
    cfg = load_config(args.config, ["model.backbone.weights=null"])
    device = args.torch_device
    cuda = device.type == "cuda"
    batch, steps, warmup = (cfg.train.batch_size, 3, 1) if cuda else (1, 1, 0)
    gc.collect()  # a clean baseline: nothing of an earlier section counts in this peak
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    baseline = torch.cuda.memory_allocated(device) if cuda else 0
    step = RandomTrainStep(cfg, device, batch, bf16=cfg.train.bf16 and cuda)

    def timed_step() -> float:
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        return time.perf_counter() - start

    for _ in range(warmup):
        timed_step()
    times = [timed_step() for _ in range(steps)]
    _sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        step.model.extract_features(torch.cat([step.query, step.frames.flatten(0, 1)]))
    _sync(device)
    backbone = time.perf_counter() - start
    peak_gb = (
        (torch.cuda.max_memory_allocated(device) - baseline) / 2**30
        if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    )
    return {
        "config": args.config,
        "backbone": cfg.model.backbone.name,
        "frames": cfg.model.num_frames,
        "input_size": cfg.model.input_size,
        "stages": cfg.model.num_stages,
        "batch_size": batch,
        "bf16": step.bf16,
        "torch_threads": torch.get_num_threads(),
        "trainable_params_m": round(sum(p.numel() for p in step.params) / 1e6, 2),
        "seconds_per_step": round(statistics.median(times), 4),
        "seconds_per_step_all": [round(x, 4) for x in times],
        "backbone_forward_s": round(backbone, 4),
        "peak_memory_gb": round(peak_gb, 2),
        "peak_memory_method": "cuda max_memory_allocated above a clean baseline (model, optimiser, batch, activations)"
        if cuda
        else "peak RSS of the process (ru_maxrss)",
    }
