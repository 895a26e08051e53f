#!/bin/bash
# Batch-norm options on the synthetic set (docs/TRAINING.md, "Batch norm on small batches"). CPU, one thread per run.
#   experiments/demo_model/bn_comparison.sh DATA OUT_DIR SEED
# DATA: `prvql synth --output DATA --clips 48 --seed 2 --frames 60 --width 192 --height 144`.
# Each run has a 300-iteration schedule; the docs compare the validation line at iteration 100 of log.jsonl (runs
# can be stopped after it: every later line is irrelevant to the comparison). CPU runs with one thread are
# deterministic, so the numbers reproduce exactly.
set -euo pipefail
data=$1; out=$2; seed=${3:-42}
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
common=(--config tiny "data.root=$data" data.num_workers=1
  model.backbone.name=efficientnet_lite0 model.backbone.weights=package model.backbone.depth=null
  model.input_size=128 model.num_frames=8 model.dim=64 model.temporal.downsample_steps=1
  model.cab.ffn_dim=128 model.temporal.ffn_dim=128
  train.batch_size=3 train.iterations=300 loss.weight_frame_bce=1.0 train.warmup=30 train.lr=3e-4
  train.weight_decay=5e-3 train.val_every=50 train.val_queries=48 train.log_every=10 train.checkpoint_every=1000
  "train.seed=$seed" --device cpu)
run() { name=$1; shift; nice -n 19 python -m prvql train "${common[@]}" "$@" --output "$out/$name"; }
run a_train_bn                                   # (a) BatchNorm in train mode, statistics of 3 windows
run b_frozen train.whole_model_eval=true         # (b) frozen statistics (released)
run d_qfr_gn model.qfr.norm_groups=8             # (d) GroupNorm in QFR (8 channels per group)
# (c) SyncBatchNorm exists on CUDA only; on one process it is BatchNorm over the global batch. Same optimiser
# batch of 6 windows: BN over 3 windows x 2 accumulation steps (a) against BN over all 6 (c).
run a6_train_bn train.grad_accum=2 train.val_every=25
run c6_global_bn train.batch_size=6 train.val_every=25
