"""All the speed measurements this machine can run, as ratios measured interleaved in one run (prints JSON).

Sections (``--sections``, all by default), each timing its variants in alternating rounds and reporting the
median and range of each, so that a machine whose speed drifts still gives fair ratios:

- ``backbone``: a plain timm DINOv2 ViT-B/14 (``forward_features``) against prvql's backbone, 448 px, random
  weights, ``--images`` images per call.
- ``stages``: everything after the backbone for one paper-size window (30 frames, 32x32 ViT-B features) of
  ``prvql_vitb14`` and ``vqloc_vitb14``, before and after each exact speed-up, cumulatively: the plain path
  (full masked temporal attention, batch norms, ``forward_features`` reducing channels inside and decoding every
  stage's boxes), + banded temporal attention, + batch norm folded into the convs, + embeddings reduced once
  outside the stages with intermediate boxes decoded for AKG's frames only (``embed`` + ``forward_embedded``, the
  Predictor's path). Also the bf16-autocast approximation on the CPU (speed and the largest output difference).
- ``queries``: the Predictor end to end on one 30-frame window with Q = 1 and Q = 3 queries, before (the plain
  model through ``forward_features``) and after, against the bound ``backbone + Q x stages``; the backbone is cut
  to ``--e2e-depth`` blocks so that it fits a CPU run. The full-depth end to end per query is then composed from
  the parts measured in this run (backbone per image, stages, and the glue measured here).
- ``allocator``: one backbone call (ViT-B/14 at 448 px cut to ``--alloc-depth`` blocks, ``--alloc-images``
  images: buffers of 25-100 MB, above glibc's 32 MB dynamic mmap limit, as in a 30-frame window) in fresh
  processes alternating glibc's default malloc and prvql's settings (prvql/allocator.py): wall time, minor page
  faults, system time, peak RSS.
- ``decode``: a generated 1080p 30 fps H.264 video of ``--video-seconds``: decoding at 5 fps (PyAV threading
  AUTO / SLICE / off), preprocessing, and ``locate`` end to end with the shipped demo model.

    PYTHONPATH=. python benchmarks/run_all.py --output benchmarks/results/cpu.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
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
from prvql.model.head import AnchorHead
from prvql.model.temporal import MaskedSpatioTemporalAttention

SECTIONS = ("backbone", "stages", "queries", "allocator", "decode")


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


def paper_model(name: str, overrides: list[str] = ()) -> tuple:
    """A preset with random weights, head outputs redrawn (std 0.05) so that logits and boxes vary."""
    cfg = load_config(name, ["model.backbone.weights=null", *overrides])
    torch.manual_seed(0)
    model = build_prvql(cfg.model).eval()
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

    torch.manual_seed(0)
    plain = timm.create_model("vit_base_patch14_dinov2", pretrained=False, num_classes=0, img_size=448).eval()
    ours = DINOv2Backbone("b").eval()
    images = torch.randn(args.images, 3, 448, 448)
    with torch.inference_mode():
        result = interleaved({"timm_vit": lambda: plain.forward_features(images), "ours": lambda: ours(images)}, 3)
    result["ours_vs_timm_time"] = ratio(result["ours"], result["timm_vit"])
    result["seconds_per_image"] = {k: round(result[k]["median_s"] / args.images, 4) for k in ("timm_vit", "ours")}
    return result


def stages_of(name: str, rounds: int) -> dict:
    """The ``stages`` section for one preset."""
    cfg, model = paper_model(name)
    t, grid = cfg.model.num_frames, cfg.model.input_size // 14
    torch.manual_seed(1)
    frame_feats = torch.randn(1, t, 768, grid, grid)
    query_feats = torch.randn(1, 768, grid, grid)
    plain = set_banded(copy.deepcopy(model), False)
    banded = set_banded(copy.deepcopy(model), True)
    fused = set_banded(copy.deepcopy(model), True).fuse_for_inference()
    with torch.inference_mode():
        video = fused.reduction(frame_feats[0])[None]
        query = fused.reduction(query_feats)

        def run(variant: str, bf16: bool = False) -> dict:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                if variant == "plain":
                    return plain.forward_features(frame_feats, query_feats)
                if variant == "banded":
                    return banded.forward_features(frame_feats, query_feats)
                if variant == "fused":
                    return fused.forward_features(frame_feats, query_feats)
                if variant == "reduction":
                    return fused.reduction(torch.cat([query_feats, frame_feats[0]]))
                return fused.forward_embedded(video, query)

        variants = ["plain", "banded", "fused", "reduction", "embedded"]
        timings = interleaved({v: (lambda v=v: run(v)) for v in variants}, rounds)
        bf16 = interleaved(
            {"embedded_fp32": lambda: run("embedded"), "embedded_bf16": lambda: run("embedded", True)}, 2
        )
        reference, optimised, approx = run("plain"), run("embedded"), run("embedded", bf16=True)
        exact = max((optimised[k] - reference[k]).abs().max().item() for k in ("logits", "boxes"))
    after = timings["embedded"]["median_s"] + timings["reduction"]["median_s"]
    results = {
        **timings,
        "ms_per_frame": {
            "before": round(1000 * timings["plain"]["median_s"] / t, 2),
            "+banded": round(1000 * timings["banded"]["median_s"] / t, 2),
            "+fused_bn": round(1000 * timings["fused"]["median_s"] / t, 2),
            "+embedded_once_and_akg_boxes_only (stages + one reduction)": round(1000 * after / t, 2),
            "stages_only_after (per query)": round(1000 * timings["embedded"]["median_s"] / t, 2),
            "reduction_per_frame (once per clip)": round(1000 * timings["reduction"]["median_s"] / t, 2),
        },
        "after_vs_before_time": round(after / timings["plain"]["median_s"], 3),
        "max_abs_diff_after_vs_before": exact,
        "bf16_cpu": {
            **bf16,
            "speedup": round(bf16["embedded_fp32"]["median_s"] / bf16["embedded_bf16"]["median_s"], 2),
            "max_logit_abs_diff": (approx["logits"] - reference["logits"]).abs().max().item(),
            "max_box_abs_diff": (approx["boxes"] - reference["boxes"]).abs().max().item(),
            "logit_scale": reference["logits"].abs().max().item(),
        },
    }
    print(json.dumps({name: results["ms_per_frame"]}), flush=True)
    return results


def bench_stages(args: argparse.Namespace) -> dict:
    out = {name: stages_of(name, args.rounds) for name in ("prvql_vitb14", "vqloc_vitb14")}
    p, v = out["prvql_vitb14"], out["vqloc_vitb14"]
    out["prvql_after_vs_vqloc_before_time"] = round(
        (p["embedded"]["median_s"] + p["reduction"]["median_s"]) / v["plain"]["median_s"], 3
    )
    out["prvql_after_vs_vqloc_after_time"] = round(
        (p["embedded"]["median_s"] + p["reduction"]["median_s"])
        / (v["embedded"]["median_s"] + v["reduction"]["median_s"]),
        3,
    )
    return out


def bench_queries(args: argparse.Namespace) -> dict:
    from prvql.commands.bench import _clip
    from prvql.engine.inference import ClipQuery, PredictorStats, build_predictor

    cfg, model = paper_model(
        "prvql_vitb14", [f"model.backbone.depth={args.e2e_depth}", "inference.windows_per_batch=1"]
    )
    t, s = cfg.model.num_frames, cfg.model.input_size
    before = build_predictor(cfg, Plain(set_banded(copy.deepcopy(model), False)))
    after = build_predictor(cfg, set_banded(model, True).fuse_for_inference())
    generator = torch.Generator().manual_seed(1)
    images = [torch.randn(3, s, s, generator=generator) for _ in range(3)]
    calls: dict[str, list[dict]] = {}

    def run(name: str, predictor, q: int) -> None:
        predictor.stats = PredictorStats()
        start = time.perf_counter()
        predictor.predict_clip(_clip(t, 540, 720), [ClipQuery(f"q{i}", images[i], t) for i in range(q)])
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
    timings = interleaved(variants, args.e2e_rounds, warm_all=False)
    out = {"backbone_depth": args.e2e_depth, "frames": t, **timings}
    for name, runs in calls.items():
        runs = runs[-args.e2e_rounds :]  # the timed calls (not the warm-up)

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


ALLOCATOR_CHILD = """
import resource, sys, time, torch
from prvql.allocator import tune_allocator
if sys.argv[1] == "tuned": assert tune_allocator()
from prvql.model.backbone import DINOv2Backbone
torch.manual_seed(0)
model = DINOv2Backbone("b", depth=int(sys.argv[3])).eval()
images = torch.randn(int(sys.argv[2]), 3, 448, 448)
with torch.inference_mode():
    model(images[:1])
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    model(images)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
print(wall, after.ru_minflt - before.ru_minflt, after.ru_stime - before.ru_stime, after.ru_maxrss / 1024)
"""


def bench_allocator(args: argparse.Namespace) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    rows: dict[str, list] = {"default": [], "tuned": []}
    for r in range(2):
        for mode in ("default", "tuned") if r % 2 == 0 else ("tuned", "default"):
            cmd = [sys.executable, "-c", ALLOCATOR_CHILD, mode, str(args.alloc_images), str(args.alloc_depth)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout.split()
            rows[mode].append([float(x) for x in out])
    result = {}
    for mode, values in rows.items():
        walls, faults, system, rss = zip(*values, strict=True)
        result[mode] = {
            **summary(list(walls)),
            "minor_faults": int(statistics.median(faults)),
            "system_s": round(statistics.median(system), 2),
            "peak_rss_mb": round(statistics.median(rss)),
        }
    result["tuned_vs_default_time"] = ratio(result["tuned"], result["default"])
    result["memory_cost_mb"] = result["tuned"]["peak_rss_mb"] - result["default"]["peak_rss_mb"]
    return result


def bench_decode(args: argparse.Namespace) -> dict:
    from prvql.data.transforms import prepare_frames
    from prvql.data.video import VideoReader, write_video
    from prvql.engine.inference import build_predictor
    from prvql.engine.locate import locate
    from prvql.engine.postprocess import build_postprocessor
    from prvql.engine.trained_model import load_inference_model

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

    predictor.stats.__init__()
    loc = interleaved({"locate": run_locate}, args.rounds)["locate"]
    stats = predictor.stats
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
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per variant")
    parser.add_argument("--images", type=int, default=2, help="images per backbone call (backbone, allocator)")
    parser.add_argument("--alloc-images", type=int, default=8, help="images per call in the `allocator` section")
    parser.add_argument("--alloc-depth", type=int, default=3, help="ViT-B blocks in the `allocator` section")
    parser.add_argument("--e2e-depth", type=int, default=1, help="backbone blocks in the `queries` section")
    parser.add_argument("--e2e-rounds", type=int, default=2, help="rounds of the `queries` section")
    parser.add_argument("--video-seconds", type=float, default=6.0, help="length of the generated 1080p video")
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    sections = [s for s in args.sections.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"--sections: unknown {sorted(unknown)} (known: {', '.join(SECTIONS)})")
    result = {
        "machine": platform.processor() or platform.machine(),
        "cpu": next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), ""),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg(),
    }
    started = time.perf_counter()
    for name in sections:
        section_start = time.perf_counter()
        result[name] = globals()[f"bench_{name}"](args)
        result[name]["section_wall_s"] = round(time.perf_counter() - section_start, 1)
        print(json.dumps({name: result[name]}, indent=1), flush=True)
    if {"backbone", "stages", "queries"} <= set(sections):  # with "allocator" too, the CLI's malloc settings count
        result["composed_end_to_end"] = compose(result)
    result["load_average_at_end"] = os.getloadavg()
    result["wall_s"] = round(time.perf_counter() - started, 1)
    text = json.dumps(result, indent=1)
    print(text)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")


def compose(result: dict) -> dict:
    """Full-depth end to end per query (one 30-frame window + the query crop), from parts measured in this run:
    31 x backbone seconds per image + stages (+ the once-per-clip reduction) + the glue measured end to end."""
    per_image = result["backbone"]["seconds_per_image"]
    stages = result["stages"]
    key = "glue_s (end to end - backbone - stages - decode)"
    glue = result["queries"]["after_q1"]["per_call_medians"][key]
    glue_before = result["queries"]["before_q1"]["per_call_medians"][key]

    def after(name: str) -> float:
        return stages[name]["embedded"]["median_s"] + stages[name]["reduction"]["median_s"]

    images = 31
    # the prvql CLI runs with prvql/allocator.py's malloc settings; a plain timm program with glibc's defaults
    tuned = result.get("allocator", {}).get("tuned_vs_default_time", 1.0)
    e2e = {
        "prvql_vitb14 after, as the CLI runs it (allocator tuned)": images * per_image["ours"] * tuned
        + after("prvql_vitb14")
        + glue,
        "prvql_vitb14 after": images * per_image["ours"] + after("prvql_vitb14") + glue,
        "prvql_vitb14 before": images * per_image["ours"] + stages["prvql_vitb14"]["plain"]["median_s"] + glue_before,
        "vqloc_vitb14 after": images * per_image["ours"] + after("vqloc_vitb14") + glue,
        "vqloc, plain timm backbone, plain stage": images * per_image["timm_vit"]
        + stages["vqloc_vitb14"]["plain"]["median_s"]
        + glue_before,
    }
    reference = e2e["vqloc, plain timm backbone, plain stage"]
    return {
        "seconds_per_window": {k: round(v, 2) for k, v in e2e.items()},
        "per_query_fps_vs_plain_timm_vqloc": {k: round(reference / v, 3) for k, v in e2e.items()},
        "per_query_fps_vs_our_vqloc_vitb14": {k: round(e2e["vqloc_vitb14 after"] / v, 3) for k, v in e2e.items()},
        "note": "backbone at 448 px with 2 torch threads; composed, not one measured run (see module docstring)",
    }


if __name__ == "__main__":
    main()
