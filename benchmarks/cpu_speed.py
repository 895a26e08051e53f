"""The CPU speed sections of ``python -m benchmarks``: ratios measured interleaved in one run.

Each section times its variants in alternating rounds (the order rotated every round, after a warm-up) and reports
the median and range of each, so that a machine whose speed drifts still gives fair ratios. Random weights
everywhere (heads' output layers redrawn with std 0.05 so that outputs vary). With ``--quick`` every section runs
at toy sizes (6-frame windows at 112 px, one ViT block, one round): plumbing only, no number to quote.

- ``backbone``: a plain timm DINOv2 ViT-B/14 (``forward_features``) against prvql's backbone, 448 px, ``--images``
  images per call.
- ``stages``: everything after the backbone for one paper-size window (30 frames, 32x32 ViT-B features) of
  ``prvql_vitb14`` and ``vqloc_vitb14``, before and after each exact speed-up, cumulatively: the plain path
  (full masked temporal attention, batch norms, ``forward_features`` reducing channels inside and decoding every
  stage's boxes, attention probes through padded values), + banded temporal attention, + batch norm folded into
  the convs, + embeddings reduced once outside the stages with intermediate boxes decoded for AKG's frames only
  (``embed`` + ``forward_embedded``), + channels-last convs, + attention probes read from the softmax normaliser,
  + the last stage regressing each frame's best anchor only (``forward_embedded(top=True)``, the Predictor's
  path). A plain timm DINOv2 ViT-B/14 forward on one image is timed in the same rounds: the stages' share is
  stage time per frame / ViT time per image, before and after. Also the bf16-autocast approximation on the CPU
  (speed and the largest output difference).
- ``queries``: the Predictor end to end on one 30-frame window with Q = 1 and Q = 3 queries, before (the plain
  model through ``forward_features``) and after, against the bound ``backbone + Q x stages``; the backbone is cut
  to ``--queries-depth`` blocks so that it fits a CPU run.
- ``e2e``: end to end, measured directly: one paper-size window (30 frames of 540x720 + one query crop, 448 px,
  ViT-B/14 cut to ``--e2e-depth`` blocks, all 12 by default, 2 torch threads) per FRESH process, the variants
  alternating round by round (order rotated): ``reference`` = the VQLoC configuration as a plain program runs it
  (plain timm ViT ``forward_features`` on query + frames in one call, ``vqloc_vitb14``'s stage in its plain form,
  glibc's default malloc); ``prvql_cli`` and ``vqloc_cli`` = our presets as ``prvql predict``/``locate`` run them
  (malloc tuned before torch loads as prvql/cli.py does, batch norms folded, the Predictor embedding once);
  ``prvql_default_malloc`` = ``prvql_cli`` with ``PRVQL_MALLOC=default``. Each process warms up on one image
  through its backbone and one stage call of a tiny model of the same preset, so lazy initialisation is not timed
  but the window's large buffers are first touched in the timed call, as in a real run.
- ``decode``: a generated 1080p 30 fps H.264 video of ``--video-seconds``: decoding at 5 fps (PyAV threading
  AUTO / SLICE / off), preprocessing, ``locate`` end to end with the shipped demo model, and ``locate_video``
  (search + the three outputs, as ``prvql locate``) decoding once (frames kept for ``track.mp4``) or twice.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from prvql.config import load_config
from prvql.model import build_prvql
from prvql.model.head import AnchorHead, top_boxes
from prvql.model.layers import MultiHeadAttention
from prvql.model.temporal import MaskedSpatioTemporalAttention

QUICK = ["model.num_frames=6", "model.input_size=112", "model.backbone.depth=1"]  # --quick: toy windows
QUICK_FRAME_SIZE = (60, 80)
E2E_FRAME_SIZE = (540, 720)  # Ego4D clips' frames (height, width)
ROOT = Path(__file__).resolve().parents[1]  # the repository


def interleaved(variants: dict[str, Callable[[], object]], rounds: int, warm_all: bool = True) -> dict[str, dict]:
    """Time every variant once per round, in an order rotated each round, after one warm-up call each (or one
    warm-up call of the first variant only)."""
    for fn in list(variants.values())[: None if warm_all else 1]:
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - start)
    return {name: summary(ts) for name, ts in times.items()}


def summary(times: list[float]) -> dict:
    return {
        "median_s": round(statistics.median(times), 4),
        "min_s": round(min(times), 4),
        "max_s": round(max(times), 4),
    }


def ratio(a: dict, b: dict) -> float:
    return round(a["median_s"] / b["median_s"], 3)


def paper_model(name: str, overrides: list[str] = (), backbone: nn.Module | None = None) -> tuple:
    """A preset with random weights, head outputs redrawn (std 0.05) so that logits and boxes vary (``backbone``:
    one to use instead of the preset's)."""
    cfg = load_config(name, ["model.backbone.weights=null", *overrides])
    torch.manual_seed(0)
    model = build_prvql(cfg.model, backbone).eval()
    for head in (m for m in model.modules() if isinstance(m, AnchorHead)):
        for conv in (head.cls_out, head.reg_out):
            nn.init.normal_(conv.weight, std=0.05)
    return cfg, model


def set_banded(model: nn.Module, banded: bool) -> nn.Module:
    for module in model.modules():
        if isinstance(module, MaskedSpatioTemporalAttention):
            module.banded = banded and 2 * module.window + 1 < module.num_frames
    return model


class Plain(nn.Module):
    """The model as the Predictor used it before: ``extract_features`` + ``forward_features`` only."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner = model

    def extract_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.inner.extract_features(images)

    def forward_features(self, frame_feats: torch.Tensor, query_feats: torch.Tensor) -> dict:
        return self.inner.forward_features(frame_feats, query_feats)


# ----------------------------------------------------------------------------------------------------------------
# sections


def bench_backbone(args: argparse.Namespace) -> dict:
    import timm

    from prvql.model.backbone import DINOv2Backbone

    size, depth = (112, 1) if args.quick else (448, None)
    torch.manual_seed(0)
    kwargs = {} if depth is None else {"depth": depth}
    plain = timm.create_model("vit_base_patch14_dinov2", pretrained=False, num_classes=0, img_size=size, **kwargs)
    plain, ours = plain.eval(), DINOv2Backbone("b", depth=depth).eval()
    images = torch.randn(args.images, 3, size, size)
    with torch.inference_mode():
        result = interleaved(
            {"timm_vit": lambda: plain.forward_features(images), "ours": lambda: ours(images)}, args.rounds
        )
    result["input_size"] = size
    result["ours_vs_timm_time"] = ratio(result["ours"], result["timm_vit"])
    result["seconds_per_image"] = {k: round(result[k]["median_s"] / args.images, 4) for k in ("timm_vit", "ours")}
    return result


def set_normaliser_probes(model: nn.Module, on: bool) -> nn.Module:
    for module in model.modules():
        if isinstance(module, MultiHeadAttention):
            module.normaliser_probe = on
    return model


def plain_vit(quick: bool) -> Callable[[], object]:
    """One plain timm DINOv2 ViT-B/14 ``forward_features`` on one image at 448 px (``quick``: 112 px, one block),
    the unit of the stages' share."""
    import timm

    size, kwargs = (112, {"depth": 1}) if quick else (448, {})
    torch.manual_seed(0)
    vit = timm.create_model("vit_base_patch14_dinov2", pretrained=False, num_classes=0, img_size=size, **kwargs)
    vit, image = vit.eval(), torch.randn(1, 3, size, size)
    return lambda: vit.forward_features(image)


STAGE_ROWS = {  # variant -> row of ms_per_frame (cumulative)
    "plain": "before",
    "banded": "+banded",
    "fused": "+fused_bn",
    "embedded": "+embedded_once_and_akg_boxes_only (stages per query)",
    "channels_last": "+channels_last_convs",
    "normaliser": "+probes_from_softmax_normaliser",
    "top": "+top_anchor_boxes_only (stages per query, after)",
}


def stages_of(name: str, rounds: int, overrides: list[str], vit: Callable[[], object]) -> dict:
    """The ``stages`` section for one preset; ``vit`` is timed in the same rounds."""
    cfg, model = paper_model(name, overrides)
    t, grid = cfg.model.num_frames, cfg.model.input_size // 14
    torch.manual_seed(1)
    frame_feats = torch.randn(1, t, 768, grid, grid)
    query_feats = torch.randn(1, 768, grid, grid)
    plain = set_normaliser_probes(set_banded(copy.deepcopy(model), False), False)
    banded = set_normaliser_probes(set_banded(copy.deepcopy(model), True), False)
    fused = set_banded(copy.deepcopy(model), True).fuse_for_inference()
    fused_nchw = set_normaliser_probes(copy.deepcopy(fused).to(memory_format=torch.contiguous_format), False)
    fused_padded = set_normaliser_probes(copy.deepcopy(fused), False)
    with torch.inference_mode():
        video = fused.reduction(frame_feats[0])[None]
        query = fused.reduction(query_feats)

        def run(variant: str, bf16: bool = False) -> dict:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                if variant in ("plain", "banded"):
                    return (plain if variant == "plain" else banded).forward_features(frame_feats, query_feats)
                if variant == "fused":
                    return fused_nchw.forward_features(frame_feats, query_feats)
                if variant == "reduction":
                    return fused.reduction(torch.cat([query_feats, frame_feats[0]]))
                if variant == "embedded":
                    return fused_nchw.forward_embedded(video, query)
                if variant == "channels_last":
                    return fused_padded.forward_embedded(video, query)
                return fused.forward_embedded(video, query, top=variant == "top")

        variants = [*STAGE_ROWS, "reduction"]
        timings = interleaved({**{v: (lambda v=v: run(v)) for v in variants}, "timm_vit": vit}, rounds)
        bf16 = interleaved(
            {"embedded_fp32": lambda: run("embedded"), "embedded_bf16": lambda: run("embedded", True)}, rounds
        )
        reference, optimised, approx = run("plain"), run("normaliser"), run("embedded", bf16=True)
        exact = max((optimised[k] - reference[k]).abs().max().item() for k in ("logits", "boxes"))
        top, best = run("top"), top_boxes(reference["logits"], reference["boxes"])
        exact_top = max(
            (top[k] - ref).abs().max().item() for k, ref in zip(("top_logits", "top_boxes"), best, strict=True)
        )
    after = timings["top"]["median_s"] + timings["reduction"]["median_s"]
    vit_s = timings["timm_vit"]["median_s"]
    share = {
        "before (plain)": round(timings["plain"]["median_s"] / t / vit_s, 4),
        "before (inference path: fused, embedded once, AKG-only boxes)": round(
            timings["embedded"]["median_s"] / t / vit_s, 4
        ),
        "after (+ channels-last convs, normaliser probes, top-anchor boxes)": round(
            timings["top"]["median_s"] / t / vit_s, 4
        ),
    }
    results = {
        **timings,
        "ms_per_frame": {
            **{row: round(1000 * timings[v]["median_s"] / t, 2) for v, row in STAGE_ROWS.items()},
            "reduction_per_frame (once per clip)": round(1000 * timings["reduction"]["median_s"] / t, 2),
        },
        "stages_per_frame_over_timm_vit_per_image": share,
        "after_vs_before_time (stages + one reduction vs plain)": round(after / timings["plain"]["median_s"], 3),
        "max_abs_diff_after_vs_before": exact,
        "max_abs_diff_top_anchor_vs_before": exact_top,
        "bf16_cpu": {
            **bf16,
            "speedup": round(bf16["embedded_fp32"]["median_s"] / bf16["embedded_bf16"]["median_s"], 2),
            "max_logit_abs_diff": (approx["logits"] - reference["logits"]).abs().max().item(),
            "max_box_abs_diff": (approx["boxes"] - reference["boxes"]).abs().max().item(),
            "logit_scale": reference["logits"].abs().max().item(),
        },
    }
    print(json.dumps({name: {**results["ms_per_frame"], "stage share (vs timm ViT per image)": share}}), flush=True)
    return results


def bench_stages(args: argparse.Namespace) -> dict:
    overrides = QUICK if args.quick else []
    vit = plain_vit(args.quick)
    out = {name: stages_of(name, args.rounds, overrides, vit) for name in ("prvql_vitb14", "vqloc_vitb14")}
    p, v = out["prvql_vitb14"], out["vqloc_vitb14"]
    out["prvql_after_vs_vqloc_before_time"] = round(
        (p["top"]["median_s"] + p["reduction"]["median_s"]) / v["plain"]["median_s"], 3
    )
    out["prvql_after_vs_vqloc_after_time"] = round(
        (p["top"]["median_s"] + p["reduction"]["median_s"]) / (v["top"]["median_s"] + v["reduction"]["median_s"]),
        3,
    )
    return out


def bench_queries(args: argparse.Namespace) -> dict:
    from prvql.infer.benchmark import random_clip
    from prvql.infer.predictor import ClipQuery, PredictorStats, build_predictor

    depth = 1 if args.quick else args.queries_depth
    overrides = [*(QUICK if args.quick else []), f"model.backbone.depth={depth}", "inference.windows_per_batch=1"]
    cfg, model = paper_model("prvql_vitb14", overrides)
    frame_size = QUICK_FRAME_SIZE if args.quick else E2E_FRAME_SIZE
    t, s = cfg.model.num_frames, cfg.model.input_size
    before = build_predictor(cfg, Plain(set_banded(copy.deepcopy(model), False)))
    after = build_predictor(cfg, set_banded(model, True).fuse_for_inference())
    generator = torch.Generator().manual_seed(1)
    images = [torch.randn(3, s, s, generator=generator) for _ in range(3)]
    calls: dict[str, list[dict]] = {}

    def run(name: str, predictor, q: int) -> None:
        predictor.stats = PredictorStats()
        start = time.perf_counter()
        predictor.predict_clip(random_clip(t, *frame_size), [ClipQuery(f"q{i}", images[i], t) for i in range(q)])
        wall, st = time.perf_counter() - start, predictor.stats
        per_query = st.stage_seconds / q
        calls.setdefault(name, []).append(
            {
                "wall": wall,
                "glue": wall - st.backbone_seconds - st.stage_seconds - st.decode_seconds,
                "bound": st.backbone_seconds + st.decode_seconds + q * per_query,
                "backbone": st.backbone_seconds,
                "stage_per_query": per_query,
            }
        )

    pairs = (("before", before), ("after", after))
    variants = {f"{n}_q{q}": (lambda n=n, p=p, q=q: run(f"{n}_q{q}", p, q)) for n, p in pairs for q in (1, 3)}
    calls.clear()
    timings = interleaved(variants, args.rounds, warm_all=False)
    out = {"backbone_depth": depth, "frames": t, **timings}
    for name, runs in calls.items():
        runs = runs[-args.rounds :]  # the timed calls (not the warm-up)

        def med(key: str, runs=runs) -> float:
            return round(statistics.median(r[key] for r in runs), 3)

        out[name]["per_call_medians"] = {
            "backbone_s": med("backbone"),
            "stages_s_per_query": med("stage_per_query"),
            "glue_s (end to end - backbone - stages - decode)": med("glue"),
        }
        if name.endswith("q3"):
            ratios = [r["wall"] / r["bound"] for r in runs]
            out[name]["vs_bound (backbone + decode + 3 x stage time per query, same call)"] = {
                "median": round(statistics.median(ratios), 3),
                "min": round(min(ratios), 3),
                "max": round(max(ratios), 3),
            }
    return out


def fresh_processes(child: str, modes: list[str], rounds: int, argv: list[str], env: dict | None = None) -> dict:
    """Run ``python -c child MODE *argv`` in a fresh process per mode and round, the order rotated each round, with
    glibc's malloc variables removed from the environment (plus ``env[mode]``); mode -> the stdout of each run."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    base["PYTHONPATH"] = str(ROOT)
    outputs: dict[str, list[str]] = {mode: [] for mode in modes}
    for r in range(rounds):
        for mode in modes[r % len(modes) :] + modes[: r % len(modes)]:
            start = time.perf_counter()
            cmd = [sys.executable, "-c", child, mode, *argv]
            done = subprocess.run(cmd, env={**base, **(env or {}).get(mode, {})}, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"benchmarks: {mode} (round {r + 1}) failed:\n{done.stderr[-4000:]}")
            outputs[mode].append(done.stdout)
            print(f"round {r + 1}/{rounds} {mode}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    return outputs


E2E_VARIANTS = ["reference", "prvql_cli", "prvql_default_malloc", "vqloc_cli"]
E2E_CHILD = """
import sys
from prvql.allocator import tune_allocator
tuned = sys.argv[1] != "reference" and tune_allocator()  # as prvql/cli.py does, before torch loads
from benchmarks.cpu_speed import e2e_window
e2e_window(sys.argv[1], int(sys.argv[2]), sys.argv[3] == "quick", tuned)
"""
E2E_THREADS = 2
E2E_TINY = QUICK  # the e2e processes' warm-up: one stage call of a toy model of the same preset


class TimmViT(nn.Module):
    """A plain timm DINOv2 ViT-B/14 (``forward_features``, built for the model input size) as a PRVQL backbone:
    ``[N, 3, S, S]`` -> ``[N, 768, S/14, S/14]``, the token reshaping any program that feeds a conv stage does."""

    stride = 14
    out_channels = 768

    def __init__(self, input_size: int, depth: int) -> None:
        import timm

        super().__init__()
        self.vit = timm.create_model(
            "vit_base_patch14_dinov2", pretrained=False, num_classes=0, img_size=input_size, depth=depth
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n, grid = images.shape[0], images.shape[-1] // self.stride
        tokens = self.vit.forward_features(images)[:, self.vit.num_prefix_tokens :]  # [N, grid^2, 768]
        return tokens.transpose(1, 2).reshape(n, -1, grid, grid)


def rusage_delta(before, after) -> dict:
    return {
        "minor_faults": after.ru_minflt - before.ru_minflt,
        "system_s": round(after.ru_stime - before.ru_stime, 2),
        "user_s": round(after.ru_utime - before.ru_utime, 2),
    }


def reference_window(
    preset: str, overrides: list[str], depth: int, frame_size: tuple[int, int]
) -> tuple[Callable, Callable]:
    """``reference``'s (warm_up, window): a plain timm ViT on query + frames in one call, then the preset's stage in
    its plain form (full masked temporal attention, batch norms, channel reduction inside ``forward_features``)."""
    from prvql.data.transforms import prepare_frames
    from prvql.infer.benchmark import random_clip
    from prvql.model.head import top_boxes

    cfg = load_config(preset, ["model.backbone.weights=null", *overrides])
    size, pad, released = cfg.model.input_size, cfg.data.pad_value, cfg.data.released_preprocessing
    model = set_banded(paper_model(preset, overrides, backbone=TimmViT(size, depth))[1], False)
    tiny = set_banded(paper_model(preset, E2E_TINY)[1], False)
    channels, tiny_grid = TimmViT.out_channels, tiny.grid_size

    def prepare(n: int) -> torch.Tensor:
        return prepare_frames(torch.from_numpy(np.stack(list(random_clip(n, *frame_size)))), size, pad, released)

    def warm_up(query: torch.Tensor) -> None:
        model.extract_features(query[None])
        tiny_feats = torch.zeros(1, tiny.num_frames + 1, channels, tiny_grid, tiny_grid)
        tiny.forward_features(tiny_feats[:, 1:], tiny_feats[:, 0])
        prepare(2)

    def window(query: torch.Tensor) -> dict:
        t0 = time.perf_counter()
        frames = prepare(cfg.model.num_frames)
        t1 = time.perf_counter()
        feats = model.extract_features(torch.cat([query[None], frames]))  # one call, as the released code
        t2 = time.perf_counter()
        out = model.forward_features(feats[1:][None], feats[:1])
        scores, _ = top_boxes(out["logits"], out["boxes"])
        torch.sigmoid(scores)
        return {"decode_s": t1 - t0, "backbone_s": t2 - t1, "stages_s": time.perf_counter() - t2}

    return warm_up, window


def cli_window(preset: str, overrides: list[str], frame_size: tuple[int, int]) -> tuple[Callable, Callable]:
    """``*_cli``'s (warm_up, window): the preset as ``prvql predict``/``locate`` run it, batch norms folded (as
    ``load_inference_model``) and the Predictor embedding once per clip."""
    from prvql.infer.benchmark import random_clip
    from prvql.infer.predictor import ClipQuery, PredictorStats, build_predictor

    cfg, model = paper_model(preset, overrides)
    predictor = build_predictor(cfg, model.fuse_for_inference())
    tiny_cfg, tiny = paper_model(preset, E2E_TINY + overrides[1:])
    tiny_predictor = build_predictor(tiny_cfg, tiny.fuse_for_inference())
    tiny_size, tiny_t = tiny_cfg.model.input_size, tiny_cfg.model.num_frames

    def warm_up(query: torch.Tensor) -> None:
        model.embed(query[None])
        tiny_query = ClipQuery("q", torch.zeros(3, tiny_size, tiny_size), tiny_t)
        tiny_predictor.predict_clip(random_clip(tiny_t, *frame_size), [tiny_query])

    def window(query: torch.Tensor) -> dict:
        t = cfg.model.num_frames
        predictor.stats = PredictorStats()
        predictor.predict_clip(random_clip(t, *frame_size), [ClipQuery("q", query, t)])
        st = predictor.stats
        return {"decode_s": st.decode_seconds, "backbone_s": st.backbone_seconds, "stages_s": st.stage_seconds}

    return warm_up, window


def e2e_window(variant: str, depth: int, quick: bool, tuned: bool) -> None:
    """One ``e2e`` process (``E2E_CHILD``): build, warm up, time one window end to end; prints one JSON line."""
    import resource

    torch.set_num_threads(E2E_THREADS)
    preset = "prvql_vitb14" if variant.startswith("prvql") else "vqloc_vitb14"
    overrides = [f"model.backbone.depth={depth}", "inference.windows_per_batch=1", *(QUICK[:2] if quick else [])]
    frame_size = QUICK_FRAME_SIZE if quick else E2E_FRAME_SIZE
    if variant == "reference":
        warm_up, window = reference_window(preset, overrides, depth, frame_size)
    else:
        warm_up, window = cli_window(preset, overrides, frame_size)
    size = load_config(preset, overrides).model.input_size
    query = torch.randn(3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        warm_up(query)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        parts = window(query)
        wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    row = {
        "wall_s": wall,
        **{k: round(v, 3) for k, v in parts.items()},
        **rusage_delta(before, after),
        "peak_rss_mb": round(after.ru_maxrss / 1024),
        "peak_rss_before_timed_call_mb": round(rss_before),
        "allocator_tuned": tuned,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(row))


def bench_e2e(args: argparse.Namespace) -> dict:
    depth = 1 if args.quick else args.e2e_depth
    m = load_config("prvql_vitb14", QUICK[:2] if args.quick else []).model
    h, w = QUICK_FRAME_SIZE if args.quick else E2E_FRAME_SIZE
    outputs = fresh_processes(
        E2E_CHILD,
        E2E_VARIANTS,
        args.rounds,
        [str(depth), "quick" if args.quick else "full"],
        env={"prvql_default_malloc": {"PRVQL_MALLOC": "default"}},
    )
    rows = {v: [json.loads(out.strip().splitlines()[-1]) for out in runs] for v, runs in outputs.items()}
    result: dict = {
        "window": f"{m.num_frames} frames of {h}x{w} + 1 query crop, {m.input_size} px, ViT-B/14 depth {depth}",
        "rounds": args.rounds,
    }
    reference = [r["wall_s"] for r in rows["reference"]]
    for v, runs in rows.items():
        walls = [r["wall_s"] for r in runs]
        paired = [ref / w for ref, w in zip(reference, walls, strict=True)]  # same round: drift cancels
        result[v] = {
            **summary(walls),
            "per_query_fps_vs_reference": round(statistics.median(reference) / statistics.median(walls), 3),
            "per_query_fps_vs_reference_by_round": [round(x, 3) for x in paired],
            **{k: round(statistics.median(r[k] for r in runs), 3) for k in ("decode_s", "backbone_s", "stages_s")},
            "minor_faults": int(statistics.median(r["minor_faults"] for r in runs)),
            "system_s": round(statistics.median(r["system_s"] for r in runs), 2),
            "peak_rss_mb": int(statistics.median(r["peak_rss_mb"] for r in runs)),
            "peak_rss_before_timed_call_mb": int(statistics.median(r["peak_rss_before_timed_call_mb"] for r in runs)),
            "allocator_tuned": [r["allocator_tuned"] for r in runs],
            "threads": runs[0]["threads"],
        }
    return result


def bench_decode(args: argparse.Namespace) -> dict:
    from prvql.data.transforms import prepare_frames
    from prvql.data.video import VideoReader, write_video
    from prvql.infer.locate import KEEP_FRAMES_MB, Query, locate, locate_video
    from prvql.infer.postprocess import build_postprocessor
    from prvql.infer.predictor import PredictorStats, build_predictor
    from prvql.infer.trained_model import load_inference_model

    tmp = Path(tempfile.mkdtemp())
    video = tmp / "1080p30.mp4"
    n = int(30 * args.video_seconds)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (1080 // 8, 1920 // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)

    def frames():
        for i in range(n):
            yield np.roll(base, 4 * i, axis=1)  # a panning textured scene

    start = time.perf_counter()
    write_video(video, frames(), 30.0, preset="ultrafast")
    encode = time.perf_counter() - start

    def decode(thread_type: str) -> int:
        with VideoReader(video) as reader:
            reader._stream.thread_type = thread_type
            return sum(1 for _ in reader.iter_resampled(5.0))

    timings = interleaved({t: (lambda t=t: decode(t)) for t in ("AUTO", "SLICE", "NONE")}, args.rounds)
    with VideoReader(video) as reader:
        sampled = np.stack([f for _, f in reader.iter_resampled(5.0)])
    cfg, model = load_inference_model(None, None)
    pre = interleaved({"preprocess": lambda: prepare_frames(sampled, cfg.model.input_size, cfg.data.pad_value)}, 2)
    predictor = build_predictor(cfg, model)
    postprocessor = build_postprocessor(cfg.inference)
    query = sampled[0][400:700, 800:1100]

    def run_locate() -> None:
        with VideoReader(video) as reader:
            stream = (f for _, f in reader.iter_resampled(cfg.inference.fps))
            locate(predictor, postprocessor, stream, query, num_frames=len(sampled))

    predictor.stats = PredictorStats()
    loc = interleaved({"locate": run_locate}, args.rounds)["locate"]
    stats = predictor.stats
    query_box = (800.0, 400.0, 1100.0, 700.0)

    def run_locate_video(keep_mb: float) -> None:  # search + track.json, scores.png, track.mp4
        query = Query(frame=n - 1, search="before", box=query_box)
        locate_video(
            cfg, model, torch.device("cpu"), video, query, tmp / "out", name=video.name, keep_frames_mb=keep_mb
        )

    with_video = interleaved(
        {"decode_once": lambda: run_locate_video(KEEP_FRAMES_MB), "decode_twice": lambda: run_locate_video(0)},
        args.rounds,
    )
    calls = args.rounds + 1
    searched = len(sampled)
    return {
        "video": f"1920x1080, 30 fps, {n} frames ({args.video_seconds} s), H.264 ultrafast; encoded in {encode:.1f} s",
        "sampled_frames_5fps": searched,
        "decode_at_5fps": {k: {**v, "source_fps": round(n / v["median_s"], 1)} for k, v in timings.items()},
        "preprocess_ms_per_frame": round(1000 * pre["preprocess"]["median_s"] / searched, 2),
        "locate_demo_model": {
            **loc,
            "searched_fps": round(searched / loc["median_s"], 2),
            "source_fps": round(n / loc["median_s"], 1),
            "decode_and_preprocess_share": round(stats.decode_seconds / (calls * loc["median_s"]), 3),
            "backbone_share": round(stats.backbone_seconds / (calls * loc["median_s"]), 3),
            "stages_share": round(stats.stage_seconds / (calls * loc["median_s"]), 3),
        },
        "locate_video_with_track_mp4": {
            **with_video,
            "decode_once_vs_twice_time": ratio(with_video["decode_once"], with_video["decode_twice"]),
            "kept_frames_mb": round(searched * 1080 * 1920 * 3 / 2**20),
        },
    }
