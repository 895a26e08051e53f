"""The training loop: ``fit(cfg, run_dir)`` trains PRVQL for ``cfg.train.iterations`` optimiser steps.

One process or many (``torchrun``; DDP over NCCL or gloo). Per optimiser step: ``grad_accum`` micro-batches of
``batch_size`` windows per process (global batch = batch_size x world_size x grad_accum), bf16 autocast on CUDA
when ``train.bf16``, gradient clipping, AdamW + warm-up/linear-decay schedule (:mod:`prvql.train.schedule`).

Run folder: ``config.yaml`` (resolved config), ``log.jsonl`` (:mod:`prvql.train.logger`), ``checkpoint.pt``
(latest training state, every ``checkpoint_every`` steps and at the end), ``weights.safetensors`` (final
trainable weights for inference) and ``weights_best.safetensors`` (best validation :data:`BEST_MEASURE`: the AUROC
of the per-frame scores, which ranks models the way the benchmark's score curve does; the released code's frame
accuracy is meaningless when most validation frames hold the target). ``fit(..., resume=True)`` continues from
``checkpoint.pt`` and ends with the same weights as an uninterrupted run (same seed, CPU).

Also logged: the share of windows in which AKG kept each knowledge slot (``akg_keep_s{k}_{j}``; a run where tau is
never passed trains no QFR and says so), and the global batch at start, with a warning when it is not
``train.expected_global_batch``.
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

from prvql.config import Config, check_training_config, config_from_dict, config_to_dict, write_config
from prvql.data.batch import Batch
from prvql.distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_max,
    barrier,
    init_distributed,
    reduce_mean,
    shutdown,
)
from prvql.errors import CheckpointError, ConfigError, TrainingError
from prvql.train.checkpoint import (
    capture_rng_state,
    load_training_checkpoint,
    restore_rng_state,
    save_training_checkpoint,
)
from prvql.train.criterion import PRVQLCriterion, Targets, build_criterion
from prvql.train.logger import RunLogger
from prvql.train.order import BatchStream, make_loader
from prvql.train.schedule import build_optimizer, build_scheduler
from prvql.train.validate import validate
from prvql.weights_file import load_trainable_state, load_weights, save_weights, trainable_state_dict

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
WEIGHTS_NAME = "weights.safetensors"
BEST_WEIGHTS_NAME = "weights_best.safetensors"
BEST_MEASURE = "frame_auroc"  # validation measure that selects weights_best (written into the log and metadata)


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


def training_pairs(b: int, hard_negatives: bool, recoloured: bool, device: torch.device) -> tuple[Tensor, Tensor]:
    """The (clip, query) pairs a training step scores, for a batch of ``b`` clips and queries.

    Queries are indexed in ``cat(queries [B], recoloured queries [B])``. The pairs are the B matching ones (i, i);
    with ``hard_negatives`` every (clip i, query j) instead, pair index i * B + j; with ``recoloured`` B more,
    (clip i, recoloured query i), appended. A pair keeps its clip's labels when ``clip == query``; every other pair is
    all-negative.

    Returns:
        clip, query: long [P].
    """
    index = torch.arange(b, device=device)
    clip, query = (index.repeat_interleave(b), index.repeat(b)) if hard_negatives else (index, index)
    if recoloured:
        clip, query = torch.cat([clip, index]), torch.cat([query, index + b])
    return clip, query


def pair_targets(boxes: Tensor, occurrence: Tensor, before_query: Tensor, clip: Tensor, query: Tensor) -> Targets:
    """Targets of the pairs of :func:`training_pairs`.

    The matching pairs keep their labels; every other pair is all-negative with every frame supervised.

    Args:
        boxes: [B, T, 4]; occurrence, before_query: [B, T] bool; clip, query: long [P].

    Returns:
        Targets with boxes [P, T, 4], occurrence and before_query [P, T].
    """
    same = (clip == query)[:, None]
    return Targets(
        boxes=boxes[clip],
        occurrence=occurrence[clip].bool() & same,
        before_query=before_query[clip].bool() | ~same,
    )


class TrainForward(nn.Module):
    """The module DDP wraps: the model's forward, or the pairs of :func:`training_pairs` scored on features.

    With ``hard_negatives`` or ``recoloured`` the backbone runs once on the B clips and the (2)B queries; the pairs
    are formed on the features.

    Args:
        model: a PRVQL model (``forward``, ``extract_features``, ``forward_features``).
        hard_negatives: pair every clip with every query of the batch.
        recoloured: also pair every clip with its recoloured query (``Batch.recoloured_query``).
    """

    def __init__(self, model: nn.Module, hard_negatives: bool, recoloured: bool = False) -> None:
        super().__init__()
        self.model = model
        self.hard_negatives = hard_negatives
        self.recoloured = recoloured

    def forward(self, frames: Tensor, query: Tensor, recoloured_query: Tensor | None = None) -> dict[str, Any]:
        """frames [B, T, 3, S, S], query and recoloured_query [B, 3, S, S] -> model outputs for the P pairs."""
        if not self.hard_negatives and not self.recoloured:
            return self.model(frames, query)
        b, t = frames.shape[:2]
        if self.recoloured:
            if recoloured_query is None:
                raise ValueError("loss.recoloured_negatives: the batch has no recoloured queries")
            query = torch.cat([query, recoloured_query])
        frame_feats = self.model.extract_features(frames.flatten(0, 1))
        frame_feats = frame_feats.reshape(b, t, *frame_feats.shape[1:])
        query_feats = self.model.extract_features(query)
        clip, pair_query = training_pairs(b, self.hard_negatives, self.recoloured, frames.device)
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
            raise ConfigError(
                f"{run_dir}: already holds {CHECKPOINT_NAME}; resume from it or give a new folder", field="run_dir"
            )

        seed_everything(tcfg.seed)
        model = build_prvql(cfg.model).to(info.device)
        if info.distributed and info.device.type == "cuda" and tcfg.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        self.criterion: PRVQLCriterion = build_criterion(cfg.loss, cfg.model.num_stages)
        self.optimizer = build_optimizer(model, tcfg.lr, tcfg.weight_decay, tcfg.backbone_lr_scale)
        self.scheduler = build_scheduler(self.optimizer, tcfg.warmup, tcfg.iterations)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.iteration, epoch, position, self.best_score = 0, 0, 0, float("-inf")
        self.akg_kept, self.akg_slots = 0.0, 0.0  # knowledge slots kept / offered since this process started
        if state is None and tcfg.init_weights:
            load_weights(model, tcfg.init_weights)  # a new run starting from trained weights; resuming ignores it
        if state is not None:
            load_trainable_state(model, state["model"], self.ckpt_path)
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.iteration = int(state["iteration"])
            epoch, position = int(state["sampler"]["epoch"]), int(state["sampler"]["position"])
            self.best_score = float(state.get("best_score", float("-inf")))
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
        net: nn.Module = TrainForward(model, cfg.loss.hard_negatives, cfg.loss.recoloured_negatives)
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
                "best_score": self.best_score,
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
                    outputs = self.net(batch.frames, batch.query, batch.recoloured_query)
                targets = self._targets(batch)
                losses = self.criterion(outputs, targets)
                self._check_finite(losses)
                (losses["loss"] / tcfg.grad_accum).backward()
            for key, value in losses.items():
                totals[key] = totals.get(key, 0.0) + float(value.detach()) / tcfg.grad_accum
            for key, value in self._akg_keep_rates(outputs).items():
                totals[key] = totals.get(key, 0.0) + value / tcfg.grad_accum
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, tcfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.iteration += 1
        return totals, float(grad_norm)

    def _targets(self, batch: Batch) -> Batch | Targets:
        """The batch's own labels, or those of the pairs :class:`TrainForward` scores."""
        loss = self.cfg.loss
        if not loss.hard_negatives and not loss.recoloured_negatives:
            return batch
        pairs = training_pairs(len(batch), loss.hard_negatives, loss.recoloured_negatives, batch.boxes.device)
        return pair_targets(batch.boxes, batch.occurrence, batch.before_query, *pairs)

    def _akg_keep_rates(self, outputs: dict[str, Any]) -> dict[str, float]:
        """``akg_keep_s{k}_{j}``: share of windows whose knowledge slot j passed tau after stage k (none w/o AKG)."""
        keep = outputs.get("akg_keep")
        if keep is None:
            return {}
        rates = keep.float().mean(dim=0).tolist()  # [K-1][n], one device sync
        self.akg_kept += sum(map(sum, rates)) * keep.shape[0]
        self.akg_slots += keep.numel()
        return {f"akg_keep_s{k}_{j}": rate for k, row in enumerate(rates) for j, rate in enumerate(row)}

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
        """Validate; ``weights_best`` follows the best :data:`BEST_MEASURE` (NaN, e.g. no negative frame, never wins
        over a number; the first validation always writes the file)."""
        metrics = validate(self.model, self.criterion, self.val_batches, self.info.device, self.autocast_dtype)
        value = metrics[BEST_MEASURE]
        better = value > self.best_score or self.best_score == float("-inf")
        if better:
            self.best_score = value if value == value else float("-inf")
        metrics = {**metrics, f"best_{BEST_MEASURE}": self.best_score, "is_best": float(better)}
        logger.record("val", self.iteration, metrics)
        if self.info.is_main and better:
            save_weights(
                self.model,
                self.run_dir / BEST_WEIGHTS_NAME,
                self.cfg,
                extra={"selected_by": BEST_MEASURE, BEST_MEASURE: f"{value:.6g}", "iteration": str(self.iteration)},
            )
        return metrics

    def _warn_if_akg_never_kept(self, logger: RunLogger) -> None:
        """A run in which no knowledge slot ever passed tau sent QFR only zeros: QFR learned nothing."""
        kept = all_reduce_max(torch.tensor(self.akg_kept, device=self.info.device)).item()
        if self.akg_slots and not kept:
            logger.warn(
                self.iteration,
                f"AKG kept no knowledge slot in this run (model.akg.tau={self.cfg.model.akg.tau}: no frame's best "
                "anchor reached it), so QFR only ever saw zeros and was not trained",
            )

    def log_start(self, logger: RunLogger) -> None:
        """State the global batch, and warn when it is not the one the preset's hyper-parameters were set for."""
        tcfg = self.cfg.train
        global_batch = tcfg.batch_size * self.info.world_size * tcfg.grad_accum
        log.info(
            "training %d iterations from %d; global batch %d (= train.batch_size %d x %d processes x "
            "train.grad_accum %d)",
            tcfg.iterations,
            self.iteration,
            global_batch,
            tcfg.batch_size,
            self.info.world_size,
            tcfg.grad_accum,
        )
        if self.val_batches is not None:
            log.info("weights_best: the validation %s (per-frame scores) decides", BEST_MEASURE)
        expected = tcfg.expected_global_batch
        if expected and global_batch != expected:
            logger.warn(
                self.iteration,
                f"global batch {global_batch} differs from the {expected} this config's learning rate and schedule "
                f"were set for (train.expected_global_batch); e.g. train.grad_accum="
                f"{max(1, round(expected / (tcfg.batch_size * self.info.world_size)))} on {self.info.world_size} "
                "process(es)",
            )

    def loop(self) -> dict[str, float]:
        tcfg = self.cfg.train
        if self.info.is_main:
            write_config(self.cfg, self.run_dir / "config.yaml")
        summary: dict[str, float] = {}
        sums: dict[str, float] = {}
        count, tick = 0, time.perf_counter()
        with RunLogger(self.run_dir, tcfg.iterations, self.iteration, enabled=self.info.is_main) as logger:
            if self.info.is_main:
                self.log_start(logger)
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
            self._warn_if_akg_never_kept(logger)
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
        ConfigError: a training value is out of range (before the run folder is created).
        TrainingError: a loss term became NaN/inf (a checkpoint is saved first).
        CheckpointError: ``resume`` without a readable checkpoint fitting ``cfg.model``.
        ConfigError: (field ``"run_dir"``) not ``resume`` but ``run_dir`` already holds a checkpoint.
        PRVQLError: (field ``"device"``) CUDA asked for without it.
    """
    check_training_config(cfg)
    run_dir = Path(run_dir)
    info = init_distributed(device)
    try:
        run = _Run(cfg, run_dir, info, resume)  # reads and checks the data and the checkpoint: creates nothing
        run_dir.mkdir(parents=True, exist_ok=True)
        return run.loop()
    finally:
        shutdown()
