"""The training loop: ``fit(cfg, run_dir)`` trains PRVQL for ``cfg.train.iterations`` optimiser steps.

One process or many (``torchrun``; DDP over NCCL or gloo). Per optimiser step: ``grad_accum`` micro-batches of
``batch_size`` windows per process (global batch = batch_size x world_size x grad_accum), bf16 autocast on CUDA
when ``train.bf16``, gradient clipping, AdamW + warm-up/linear-decay schedule (:mod:`prvql.engine.schedule`).

Run folder: ``config.yaml`` (resolved config), ``log.jsonl`` (:mod:`prvql.engine.logger`), ``checkpoint.pt``
(latest training state, every ``checkpoint_every`` steps and at the end), ``weights.safetensors`` (final
trainable weights for inference) and ``weights_best.safetensors`` (best validation frame accuracy, the
released code's selection rule). ``fit(..., resume=True)`` continues from ``checkpoint.pt`` and ends with the same
weights as an uninterrupted run (same seed, CPU).
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from prvql.checkpoint import (
    capture_rng_state,
    load_trainable_state,
    load_weights,
    load_training_checkpoint,
    restore_rng_state,
    save_training_checkpoint,
    save_weights,
    trainable_state_dict,
)
from prvql.config import Config, config_from_dict, config_to_dict, write_config
from prvql.criterion import PRVQLCriterion, Targets, build_criterion
from prvql.engine.distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_max,
    barrier,
    init_distributed,
    reduce_mean,
    shutdown,
)
from prvql.engine.logger import RunLogger
from prvql.engine.sampling import BatchStream, make_loader
from prvql.engine.schedule import build_optimizer, build_scheduler
from prvql.engine.validate import validate
from prvql.errors import CheckpointError, ConfigError, TrainingError

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
WEIGHTS_NAME = "weights.safetensors"
BEST_WEIGHTS_NAME = "weights_best.safetensors"


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_train_mode(model: nn.Module, whole_model_eval: bool) -> None:
    """Train mode, except every submodule whose parameters are all frozen (the backbone) stays in eval.

    ``whole_model_eval=True`` puts the entire model in eval mode, as the released PRVQL code does during training
    (BatchNorm keeps its initial statistics, dropout is off).
    """
    if whole_model_eval:
        model.eval()
        return
    model.train()
    for module in model.modules():
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            module.eval()


def hard_negative_targets(boxes: Tensor, occurrence: Tensor, before_query: Tensor) -> Targets:
    """Targets of the B x B (clip i, query j) pairs of :class:`TrainForward`, pair index i * B + j.

    The matching pairs (i == j) keep their labels; every other pair is all-negative with every frame supervised.

    Args:
        boxes: [B, T, 4]; occurrence, before_query: [B, T] bool.

    Returns:
        Targets with boxes [B*B, T, 4], occurrence and before_query [B*B, T].
    """
    b = boxes.shape[0]
    clip = torch.arange(b, device=boxes.device).repeat_interleave(b)
    same = (clip == torch.arange(b, device=boxes.device).repeat(b))[:, None]
    return Targets(
        boxes=boxes[clip],
        occurrence=occurrence[clip].bool() & same,
        before_query=before_query[clip].bool() | ~same,
    )


class TrainForward(nn.Module):
    """The module DDP wraps: the model's forward, or with hard negatives every clip against every query.

    With ``hard_negatives`` the backbone runs once on the B clips and B queries; the B x B pairs
    (pair i * B + j = clip i with query j) are formed on the features.

    Args:
        model: a PRVQL model (``forward``, ``extract_features``, ``forward_features``).
        hard_negatives: pair every clip with every query of the batch.
    """

    def __init__(self, model: nn.Module, hard_negatives: bool) -> None:
        super().__init__()
        self.model = model
        self.hard_negatives = hard_negatives

    def forward(self, frames: Tensor, query: Tensor) -> dict[str, Any]:
        """frames [B, T, 3, S, S], query [B, 3, S, S] -> model outputs for B (or B*B) pairs."""
        if not self.hard_negatives:
            return self.model(frames, query)
        b, t = frames.shape[:2]
        frame_feats = self.model.extract_features(frames.flatten(0, 1))
        frame_feats = frame_feats.reshape(b, t, *frame_feats.shape[1:])
        query_feats = self.model.extract_features(query)
        clip = torch.arange(b, device=frames.device).repeat_interleave(b)
        pair_query = torch.arange(b, device=frames.device).repeat(b)
        return self.model.forward_features(frame_feats[clip], query_feats[pair_query])


def _nonfinite_term(losses: dict[str, Tensor]) -> str | None:
    for key, value in losses.items():
        if key != "loss" and not torch.isfinite(value):
            return key
    return None if torch.isfinite(losses["loss"]) else "loss"


def _val_batches(cfg: Config, info: DistInfo, collate: Any) -> Any:
    """This rank's share of ``train.val_queries`` evenly spaced validation queries (None when validation is off)."""
    from prvql.data import build_train_dataset

    if cfg.train.val_every <= 0 or cfg.train.val_queries <= 0:
        return None
    dataset = build_train_dataset(cfg, split="val")
    n = min(cfg.train.val_queries, len(dataset))
    chosen = np.linspace(0, len(dataset) - 1, n).round().astype(int).tolist()
    shard = chosen[info.rank :: info.world_size]
    return make_loader(dataset, shard, collate, cfg.train.batch_size, cfg.data.num_workers, drop_last=False)


class _Run:
    """State of one training run (built by :func:`fit`)."""

    def __init__(self, cfg: Config, run_dir: Path, info: DistInfo, resume: bool) -> None:
        from prvql.data import build_train_dataset, collate
        from prvql.model import build_prvql

        self.cfg, self.run_dir, self.info = cfg, run_dir, info
        tcfg = cfg.train
        self.ckpt_path = run_dir / CHECKPOINT_NAME
        state = self._read_checkpoint() if resume else None
        if state is None and self.ckpt_path.exists():
            raise ConfigError(f"--output {run_dir}: already holds {CHECKPOINT_NAME}; pass --resume or a new folder")

        seed_everything(tcfg.seed)
        model = build_prvql(cfg.model).to(info.device)
        if info.distributed and info.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        self.criterion: PRVQLCriterion = build_criterion(cfg.loss, cfg.model.num_stages)
        self.optimizer = build_optimizer(model, tcfg.lr, tcfg.weight_decay)
        self.scheduler = build_scheduler(self.optimizer, tcfg.warmup, tcfg.iterations)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.iteration, epoch, position, self.best_accuracy = 0, 0, 0, -1.0
        if state is None and tcfg.init_weights:
            load_weights(model, tcfg.init_weights)  # a new run starting from trained weights; resuming ignores it
        if state is not None:
            load_trainable_state(model, state["model"], self.ckpt_path)
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.iteration = int(state["iteration"])
            epoch, position = int(state["sampler"]["epoch"]), int(state["sampler"]["position"])
            self.best_accuracy = float(state.get("best_accuracy", -1.0))
            rngs = state["rng"]
            if len(rngs) != info.world_size:
                log.warning(
                    "checkpoint saved by %d processes, resuming on %d: RNG states differ", len(rngs), info.world_size
                )
            restore_rng_state(rngs[info.rank] if info.rank < len(rngs) else rngs[0])

        self.stream = BatchStream(
            build_train_dataset(cfg, split="train"),
            collate,
            batch_size=tcfg.batch_size,
            num_workers=cfg.data.num_workers,
            seed=tcfg.seed,
            rank=info.rank,
            world_size=info.world_size,
            epoch=epoch,
            position=position,
        )
        self.val_batches = _val_batches(cfg, info, collate)
        net: nn.Module = TrainForward(model, cfg.loss.hard_negatives)
        if info.distributed:
            net = DistributedDataParallel(net, device_ids=[info.local_rank] if info.device.type == "cuda" else None)
        self.net = net
        use_bf16 = tcfg.bf16 and info.device.type == "cuda"
        self.autocast_dtype = torch.bfloat16 if use_bf16 else None

    def _read_checkpoint(self) -> dict[str, Any]:
        state = load_training_checkpoint(self.ckpt_path)
        saved = config_from_dict(state["config"])
        if saved.model != self.cfg.model:
            raise CheckpointError(f"{self.ckpt_path}: its model config differs from the one given (key 'config.model')")
        return state

    def save_checkpoint(self) -> None:
        """Write ``checkpoint.pt`` (collective: every rank contributes its RNG state)."""
        rngs = all_gather_objects(capture_rng_state())
        if self.info.is_main:
            state = {
                "model": {k: v.cpu() for k, v in trainable_state_dict(self.model).items()},
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "iteration": self.iteration,
                "sampler": self.stream.state(),
                "rng": rngs,
                "best_accuracy": self.best_accuracy,
                "config": config_to_dict(self.cfg),
            }
            save_training_checkpoint(state, self.ckpt_path)
        barrier()

    def train_step(self) -> tuple[dict[str, float], float]:
        """One optimiser step over ``grad_accum`` micro-batches; returns (mean loss terms, gradient norm)."""
        tcfg = self.cfg.train
        set_train_mode(self.model, tcfg.whole_model_eval)
        self.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        for micro in range(tcfg.grad_accum):
            batch = self.stream.next().to(self.info.device)
            last = micro == tcfg.grad_accum - 1
            sync = self.net.no_sync() if self.info.distributed and not last else contextlib.nullcontext()
            with sync:
                with torch.autocast(
                    self.info.device.type,
                    dtype=self.autocast_dtype or torch.float32,
                    enabled=self.autocast_dtype is not None,
                ):
                    outputs = self.net(batch.frames, batch.query)
                targets = (
                    hard_negative_targets(batch.boxes, batch.occurrence, batch.before_query)
                    if self.cfg.loss.hard_negatives
                    else batch
                )
                losses = self.criterion(outputs, targets)
                self._check_finite(losses)
                (losses["loss"] / tcfg.grad_accum).backward()
            for key, value in losses.items():
                totals[key] = totals.get(key, 0.0) + float(value.detach()) / tcfg.grad_accum
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, tcfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.iteration += 1
        return totals, float(grad_norm)

    def _check_finite(self, losses: dict[str, Tensor]) -> None:
        bad = _nonfinite_term(losses)
        flag = all_reduce_max(torch.tensor(0.0 if bad is None else 1.0, device=self.info.device))
        if flag.item() == 0:
            return
        self.save_checkpoint()
        where = f"term '{bad}'" if bad else "on another process"
        raise TrainingError(
            f"non-finite loss at iteration {self.iteration + 1} ({where}); weights of iteration {self.iteration} "
            f"saved to {self.ckpt_path}"
        )

    def run_validation(self, logger: RunLogger) -> dict[str, float]:
        metrics = validate(self.model, self.criterion, self.val_batches, self.info.device, self.autocast_dtype)
        logger.record("val", self.iteration, metrics)
        if self.info.is_main and metrics["frame_accuracy"] > self.best_accuracy:
            save_weights(self.model, self.run_dir / BEST_WEIGHTS_NAME, self.cfg)
        self.best_accuracy = max(self.best_accuracy, metrics["frame_accuracy"])
        return metrics

    def loop(self) -> dict[str, float]:
        tcfg = self.cfg.train
        if self.info.is_main:
            write_config(self.cfg, self.run_dir / "config.yaml")
            log.info(
                "training %d iterations from %d; global batch %d (= %d x %d processes x %d accumulation)",
                tcfg.iterations,
                self.iteration,
                tcfg.batch_size * self.info.world_size * tcfg.grad_accum,
                tcfg.batch_size,
                self.info.world_size,
                tcfg.grad_accum,
            )
        summary: dict[str, float] = {}
        sums: dict[str, float] = {}
        count, tick = 0, time.perf_counter()
        with RunLogger(self.run_dir, tcfg.iterations, self.iteration, enabled=self.info.is_main) as logger:
            while self.iteration < tcfg.iterations:
                lr = self.optimizer.param_groups[0]["lr"]
                losses, grad_norm = self.train_step()
                for key, value in losses.items():
                    sums[key] = sums.get(key, 0.0) + value
                sums["grad_norm"] = sums.get("grad_norm", 0.0) + grad_norm
                count += 1
                logger.step(losses["loss"], lr)
                it, end = self.iteration, self.iteration == tcfg.iterations
                if (tcfg.log_every > 0 and it % tcfg.log_every == 0) or end:
                    values = reduce_mean({k: v / count for k, v in sorted(sums.items())}, self.info.device)
                    now = time.perf_counter()
                    values.update(lr=lr, sec_per_iter=(now - tick) / count, epoch=self.stream.epoch)
                    logger.record("train", it, values)
                    summary.update(values)
                    sums, count, tick = {}, 0, now
                if self.val_batches is not None and (it % tcfg.val_every == 0 or end):
                    summary.update({f"val_{k}": v for k, v in self.run_validation(logger).items()})
                if (tcfg.checkpoint_every > 0 and it % tcfg.checkpoint_every == 0) or end:
                    self.save_checkpoint()
        if self.info.is_main:
            save_weights(self.model, self.run_dir / WEIGHTS_NAME, self.cfg)
        return summary


def fit(cfg: Config, run_dir: str | Path, *, resume: bool = False, device: str = "auto") -> dict[str, float]:
    """Train PRVQL as ``cfg`` says, writing into ``run_dir``.

    Args:
        cfg: the resolved config.
        run_dir: the run folder (created).
        resume: continue from ``run_dir/checkpoint.pt``.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``; under torchrun each process takes ``cuda:LOCAL_RANK``.

    Returns:
        The last logged training values (and ``val_*`` metrics when validation ran).

    Raises:
        TrainingError: a loss term became NaN/inf (a checkpoint is saved first).
        CheckpointError: ``resume`` without a readable checkpoint fitting ``cfg.model``.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    info = init_distributed(device)
    try:
        return _Run(cfg, run_dir, info, resume).loop()
    finally:
        shutdown()
