"""Time one PRVQL training iteration (forward, losses, backward, clipping, AdamW step) and print JSON.

Default: the paper configuration (``prvql_vitb14``: DINOv2 ViT-B/14 at 448 px, K = 3 stages, 30-frame windows)
with RANDOM backbone weights, batch 1, on the CPU. Inputs are random tensors with a target box in half of the
frames, so no data is read. The backbone forward is also timed on its own (it runs without gradient).

    python benchmarks/bench_train_step.py                       # paper config, CPU, 1 timed step
    python benchmarks/bench_train_step.py --config tiny --steps 5 --warmup 1
    python benchmarks/bench_train_step.py --device cuda --batch-size 3 --steps 10 --warmup 2
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time

import torch

from prvql.config import Config, load_config
from prvql.model import build_prvql
from prvql.train.criterion import Targets, build_criterion
from prvql.train.loop import set_train_mode
from prvql.train.schedule import build_optimizer


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="prvql_vitb14", help="config file or preset (default: prvql_vitb14)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--steps", type=int, default=1, help="timed iterations")
    parser.add_argument("--warmup", type=int, default=0, help="untimed iterations first")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA only)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args()

    cfg = load_config(args.config, ["model.backbone.weights=null", *args.overrides])
    device = torch.device(args.device)
    step = RandomTrainStep(cfg, device, args.batch_size, bf16=args.bf16 and device.type == "cuda")

    def timed_step() -> float:
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        return time.perf_counter() - start

    for _ in range(args.warmup):
        timed_step()
    times = [timed_step() for _ in range(args.steps)]
    _sync(device)
    start = time.perf_counter()
    step.model.extract_features(torch.cat([step.query, step.frames.flatten(0, 1)]))
    _sync(device)
    backbone = time.perf_counter() - start

    result = {
        "config": args.config,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "torch_threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "frames": cfg.model.num_frames,
        "input_size": cfg.model.input_size,
        "stages": cfg.model.num_stages,
        "backbone": cfg.model.backbone.name,
        "trainable_params_m": round(sum(p.numel() for p in step.params) / 1e6, 2),
        "sec_per_iter_median": round(statistics.median(times), 3),
        "sec_per_iter_all": [round(x, 3) for x in times],
        "backbone_forward_sec": round(backbone, 3),
        "peak_memory_gb": round(
            torch.cuda.max_memory_allocated(device) / 2**30
            if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            2,
        ),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
