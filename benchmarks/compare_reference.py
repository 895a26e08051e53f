"""Cross-check the converted model against the authors' own code (a checkout you supply; nothing is copied here).

For each reference repository given, builds the authors' model (their ``ClipMatcher``) with random weights, saves
its checkpoint as their training script does (``{"epoch", "state_dict", ...}``), converts it with ``prvql convert``
and also passes the ``.pth`` to ``prvql.load_model`` directly, then feeds the SAME backbone features to both and
prints the largest absolute difference per stage of the logits and of the boxes (float32, CPU)::

    git clone https://github.com/hwjiang1510/VQLoC /tmp/refs/VQLoC
    git clone https://github.com/fb-reps/PRVQL /tmp/refs/PRVQL
    python benchmarks/compare_reference.py --vqloc-repo /tmp/refs/VQLoC [--prvql-repo /tmp/refs/PRVQL]

Offline: the reference's ``torch.hub`` DINOv2 is replaced by a timm DINOv2 with random weights saved in the official
hub layout (the comparison starts from backbone features, so only the layout matters), and the reference's
data-loading imports that this environment lacks (cv2, decord, kornia, ...) are stubbed; the model code itself is
the reference's, unmodified. The random weights are drawn with realistic scales (the released initialisation makes
the heads output ~0, which would hide any mapping error). Sizes are the released ones (ViT-B/14 width 768, 448 px,
30 frames) unless ``--frames`` is given.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.abc
import importlib.machinery
import sys
import tempfile
import time
import types
from pathlib import Path

import torch
import yaml
from torch import nn

STUBBED = ("cv2", "decord", "kornia", "wandb", "imageio", "torchkeras", "transformers", "easydict", "sklearn")


class _Anything:
    """Stands for any attribute of a stubbed third-party module (only used at import time by the reference)."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __call__(self, *args, **kwargs):
        return _Anything()

    def __getattr__(self, name: str):
        return _stub_attribute(name)

    def __mro_entries__(self, bases):
        return (object,)


def _stub_attribute(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    return _Anything()


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] in STUBBED and importlib.machinery.PathFinder.find_spec(fullname, path) is None:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.__getattr__ = _stub_attribute
        return module

    def exec_module(self, module) -> None:
        pass


class _CrossLayer(nn.Module):
    """Post-LN attention + GELU FFN returning ``(x, head-averaged attention weights, attention output)``: the
    parameter names of the PRVQL file's layer (``self_attn``, ``linear1/2``, ``norm1/2``) and the three outputs its
    caller unpacks. Used for the CAB in the ``cross`` layout and for every spatio-temporal layer."""

    def __init__(self, d_model, nhead, dim_feedforward, dropout=0.0, activation="gelu", batch_first=True) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.linear1, self.linear2 = nn.Linear(d_model, dim_feedforward), nn.Linear(dim_feedforward, d_model)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)

    def forward(self, x, memory=None, src_mask=None):
        memory = x if memory is None else memory
        out, weights = self.self_attn(x, memory, memory, attn_mask=src_mask, need_weights=True)
        x = self.norm1(x + out)
        return self.norm2(x + self.linear2(torch.nn.functional.gelu(self.linear1(x)))), weights, out


class _DecoderLayer(nn.Module):
    """VQLoC's ``nn.TransformerDecoderLayer`` (post-LN: self-attention, cross-attention, FFN) returning
    ``(x, head-averaged cross-attention weights, cross-attention output)``: the ``decoder`` CAB layout."""

    def __init__(self, d_model, nhead, dim_feedforward, dropout=0.0, activation="gelu", batch_first=True) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.linear1, self.linear2 = nn.Linear(d_model, dim_feedforward), nn.Linear(dim_feedforward, d_model)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)

    def forward(self, x, memory):
        x = self.norm1(x + self.self_attn(x, x, x, need_weights=False)[0])
        out, weights = self.multihead_attn(x, memory, memory, need_weights=True)
        x = self.norm2(x + out)
        return self.norm3(x + self.linear2(torch.nn.functional.gelu(self.linear1(x)))), weights, out


def _install_prvql_shims(cab: str) -> None:
    """``easydict`` (not installed) and ``updatequery.transformer`` (the stored file returns one tensor where the
    PRVQL model unpacks three; docs/MODEL.md), as modules the reference imports."""

    class EasyDict(dict):
        __getattr__ = dict.__getitem__

    easydict = types.ModuleType("easydict")
    easydict.EasyDict = EasyDict
    transformer = types.ModuleType("updatequery.transformer")
    transformer.TransformerEncoderLayer = _CrossLayer
    transformer.TransformerDecoderLayer = _DecoderLayer if cab == "decoder" else _CrossLayer
    sys.modules["easydict"] = easydict
    sys.modules["updatequery.transformer"] = transformer


class AttrDict(dict):
    """The reference's YAML config with attribute access."""

    def __getattr__(self, name: str):
        try:
            value = self[name]
        except KeyError as exc:
            raise AttributeError(name) from exc
        return AttrDict(value) if isinstance(value, dict) else value


class HubDINOv2(nn.Module):
    """What ``torch.hub.load('facebookresearch/dinov2', 'dinov2_vitb14')`` returns, as far as the reference's
    constructor and state dict see it: a timm DINOv2 ViT-B/14 whose state dict is in the official layout."""

    def __init__(self) -> None:
        super().__init__()
        import timm

        vit = timm.create_model("vit_base_patch14_dinov2", pretrained=False, num_classes=0)
        for name, module in vit.named_children():
            self.add_module(name, module)
        self.cls_token, self.pos_embed = vit.cls_token, vit.pos_embed
        self.mask_token = nn.Parameter(torch.zeros(1, vit.embed_dim))
        for name in ("head", "fc_norm", "head_drop", "norm_pre", "patch_drop", "pos_drop"):
            if hasattr(self, name):
                delattr(self, name)


def randomise(model: nn.Module, seed: int) -> None:
    """Realistic random weights for every non-backbone tensor (weights ~ N(0, 1/fan_in), norms ~ 1, BN stats)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("backbone."):
                continue
            if p.ndim >= 2 and "pe_3d" not in name:
                p.copy_(torch.randn(p.shape, generator=g) / (p[0].numel() ** 0.5))
            elif p.ndim == 1 and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))


def build_reference(repo: Path, frames: int | None):
    """The reference ``ClipMatcher`` from ``repo`` with its eval config, random weights, eval mode."""
    sys.path.insert(0, str(repo))
    packages = ("model", "utils", "dataset", "config", "bert_model", "updatequery", "updateclipfeature")
    for name in [m for m in sys.modules if m.split(".")[0] in packages and m != "updatequery.transformer"]:
        del sys.modules[name]  # a second repository has modules of the same names
    config_file = repo / "config" / "eval.yaml"
    cfg = AttrDict(yaml.safe_load(config_file.read_text()))
    cfg.setdefault("train", {}).setdefault("use_query_roi", False)
    cfg["train"].setdefault("use_hnm", False)
    if frames is not None:
        cfg["dataset"]["clip_num_frames"] = frames
    original = torch.hub.load
    torch.hub.load = lambda *args, **kwargs: HubDINOv2()
    try:
        module = importlib.import_module("model.corr_clip_spatial_transformer2_anchor_2heads_hnm")
        model = module.ClipMatcher(cfg)
    finally:
        torch.hub.load = original
        sys.path.remove(str(repo))
    randomise(model, seed=0)
    with torch.no_grad():  # confident frames, so that AKG's RoIAlign runs (slots below tau are zeros)
        for name, p in model.named_parameters():
            if name.endswith("classification_head.bias"):
                p.add_(1.0)
    return model.eval(), cfg


def reference_stages(model: nn.Module, frame_feats: torch.Tensor, query_feats: torch.Tensor) -> list[dict]:
    """Per-stage ``{"logits", "boxes" (normalised xyxy)}`` of the reference, from backbone features."""
    model.extract_feature = lambda x, return_h_w=False: x  # the features ARE the input
    with torch.no_grad():
        out = model(frame_feats, query_feats)
    stages = out[1] if isinstance(out, tuple) else [out]
    return [{"logits": s["prob"], "boxes": s["bbox"][..., [1, 0, 3, 2]]} for s in stages]  # (y1,x1,y2,x2) -> xyxy


def compare(name: str, repo: Path, frames: int | None, workdir: Path) -> None:
    import prvql
    from prvql.cli import main as prvql_main

    reference, cfg = build_reference(repo, frames)
    t = cfg.dataset.clip_num_frames
    tag = name.split()[0] + ("_" + name.split("(")[1].split()[0] if "(" in name else "")
    checkpoint = workdir / f"{tag}_random.pth.tar"
    torch.save({"epoch": 0, "state_dict": reference.state_dict(), "optimizer": {}, "best_prob": 0.0}, checkpoint)
    converted = workdir / f"{tag}_random.safetensors"
    started = time.perf_counter()
    status = prvql_main(["convert", "--checkpoint", str(checkpoint), "--output", str(converted)])
    if status != 0:
        raise SystemExit(f"{name}: prvql convert failed ({status})")
    print(f"{name}: converted in {time.perf_counter() - started:.1f} s")
    g = torch.Generator().manual_seed(1)
    grid = cfg.dataset.clip_size_coarse // 14
    frame_feats = torch.randn(1, t, 768, grid, grid, generator=g)
    query_feats = torch.randn(1, 768, grid, grid, generator=g)
    expected = reference_stages(reference, frame_feats, query_feats)
    for source in (converted, checkpoint):
        _, model = prvql.load_model(source)
        with torch.no_grad():
            ours = model.forward_features(frame_feats, query_feats)["stages"]
        for k, (a, b) in enumerate(zip(ours, expected, strict=True)):
            dl = (a["logits"] - b["logits"]).abs().max().item()
            db = (a["boxes"] - b["boxes"]).abs().max().item()
            print(
                f"{name} stage {k + 1} ({source.suffix}): max |logit diff| {dl:.2e} "
                f"(logit std {b['logits'].std():.2f}), max |box diff| {db:.2e}"
            )
    if len(expected) > 1:
        contrast_default_akg(name, checkpoint, frame_feats, query_feats, expected)


def contrast_default_akg(name: str, checkpoint: Path, frame_feats, query_feats, expected: list[dict]) -> None:
    """How many AKG slots were active, and the same comparison with OUR default AKG boxes (clamped, sorted, x/y
    order): shows that the parity switch is what makes stages 2-3 agree."""
    from prvql.model.released_weights import load_released

    converted = load_released(checkpoint, overrides=["model.akg.clamp_boxes=true", "model.akg.swap_roi_axes=false"])
    with torch.no_grad():
        ours = converted.model.forward_features(frame_feats, query_feats)["stages"]
        _, _, keep = converted.model.akg.select(ours[0]["logits"], ours[0]["boxes"])
    print(f"{name}: AKG slots above tau after stage 1: {int(keep.sum())} of {keep.numel()}")
    for k, (a, b) in enumerate(zip(ours, expected, strict=True)):
        dl = (a["logits"] - b["logits"]).abs().max().item()
        db = (a["boxes"] - b["boxes"]).abs().max().item()
        print(
            f"{name} stage {k + 1}, our default AKG boxes instead: max |logit diff| {dl:.2e}, max |box diff| {db:.2e}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vqloc-repo", type=Path, required=True, help="checkout of hwjiang1510/VQLoC")
    parser.add_argument("--prvql-repo", type=Path, help="checkout of fb-reps/PRVQL")
    parser.add_argument("--frames", type=int, help="frames per window (default: the released 30)")
    args = parser.parse_args()
    sys.meta_path.append(_StubFinder())
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"torch {torch.__version__}, float32, CPU", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        compare("VQLoC", args.vqloc_repo, args.frames, Path(tmp))
        if args.prvql_repo is not None:
            for cab in ("cross", "decoder"):
                _install_prvql_shims(cab)
                compare(f"PRVQL ({cab} CAB)", args.prvql_repo, args.frames, Path(tmp))


if __name__ == "__main__":
    main()
