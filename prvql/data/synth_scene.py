"""Scene model and renderer of the synthetic episodes (see :mod:`prvql.data.synth`).

A scene is a photograph used as the world, objects cut from other photographs placed in it (each with its own
drift, perspective yaw, roll and size), an "ego" camera that holds on places and pans between them with zoom and
roll, and camera-attached "hands" (blobs textured with another background picture) that occlude. :func:`render`
draws one frame and, if asked, the boxes of the visible parts of the targets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from prvql.data.synth_imagery import (
    background_image,
    background_names,
    object_image,
    object_specs,
    recolour,
    same_picture,
)


@dataclass(frozen=True)
class SynthOptions:
    """What to generate. Sizes are pixels; frame counts are 5 fps clip frames."""

    frame_width: int = 320
    frame_height: int = 240
    num_frames: int = 120  # clip frames
    targets_per_clip: int = 3  # query sets per clip
    query_sets_per_annotation: int = 3
    distractors: int = 3  # recoloured target copies and other objects
    clip_fps: float = 5.0
    video_fps: float = 30.0
    lead_frames: int = 12  # canonical frames before and after each clip in its video
    split_imagery: bool = False  # True: train never uses the held-out pictures, val uses only them
    min_visible: float = 0.35  # fraction of the object's projected area that must show to count as visible
    min_pixels: int = 48  # and at least this many visible pixels


@dataclass
class Thing:
    """One object in the world, with its motion parameters (world pixels, radians, canonical frames)."""

    image: Image.Image
    title: str
    x: float
    y: float
    size: float  # long side in world pixels
    drift: tuple[float, float, float, float]  # amplitude x, amplitude y, angular frequency, phase
    yaw: tuple[float, float, float, float]  # base, amplitude, angular frequency, phase
    roll: tuple[float, float, float, float]
    area_fraction: float  # share of the image's rectangle covered by its alpha

    def homography(self, s: float) -> np.ndarray:
        """Object pixel (u, v) -> world, at scene time ``s``: 3x3."""
        ax, ay, w, p = self.drift
        cx, cy = self.x + ax * math.sin(w * s + p), self.y + ay * math.cos(w * s + p)
        yaw = self.yaw[0] + self.yaw[1] * math.sin(self.yaw[2] * s + self.yaw[3])
        roll = self.roll[0] + self.roll[1] * math.sin(self.roll[2] * s + self.roll[3])
        iw, ih = self.image.size
        scale = self.size / max(iw, ih)
        centre = np.array([[1, 0, -iw / 2], [0, 1, -ih / 2], [0, 0, 1]], dtype=np.float64)
        depth = max(iw, ih) * 2.0  # viewing distance of the perspective yaw, in object pixels
        persp = np.array([[depth * math.cos(yaw), 0, 0], [0, depth, 0], [-math.sin(yaw), 0, depth]])
        c, s_ = math.cos(roll), math.sin(roll)
        place = np.array([[scale * c, -scale * s_, cx], [scale * s_, scale * c, cy], [0, 0, 1]])
        return place @ persp @ centre


@dataclass
class Scene:
    """A rendered world and the camera path through it (holds, pans, roll, passing hands) of one episode."""

    width: int
    height: int
    background: Image.Image  # the world
    things: list[Thing]  # drawn in this order
    targets: list[int]  # indices into things
    holds: list[tuple[float, float, float, float, float]]  # (start, end, centre x, centre y, zoom) scene times
    roll: tuple[float, float]  # amplitude, angular frequency
    hands: list[tuple[float, float, Image.Image, tuple[float, float], tuple[float, float]]] = field(
        default_factory=list
    )  # (start, end, image, from xy, to xy) in frame pixels

    def camera(self, s: float) -> np.ndarray:
        """World -> frame affine (3x3) at scene time ``s``; eased pans between holds."""
        holds = self.holds
        k = next((i for i, h in enumerate(holds) if s < h[1]), len(holds) - 1)
        if s >= holds[k][0] or k == 0:
            _, _, cx, cy, zoom = holds[k]
        else:
            a, b = holds[k - 1], holds[k]
            t = (s - a[1]) / max(1e-6, b[0] - a[1])
            t = 0.5 - 0.5 * math.cos(math.pi * min(max(t, 0.0), 1.0))
            cx, cy, zoom = (a[i] + (b[i] - a[i]) * t for i in (2, 3, 4))
        roll = self.roll[0] * math.sin(self.roll[1] * s)
        c, s_ = math.cos(roll) * zoom, math.sin(roll) * zoom
        to_frame = np.array([[c, -s_, self.width / 2], [s_, c, self.height / 2], [0, 0, 1]])
        return to_frame @ np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]])


def _coeffs(inverse: np.ndarray) -> tuple[float, ...]:
    inverse = inverse / inverse[2, 2]
    return tuple(inverse.reshape(-1)[:8].tolist())


def _paste(frame: Image.Image, image: Image.Image, h: np.ndarray, keep_alpha: bool) -> np.ndarray | None:
    """Draw ``image`` through homography ``h`` (image -> frame) onto ``frame``; returns its alpha [H, W] if asked."""
    iw, ih = image.size
    corners = h @ np.array([[0, iw, iw, 0], [0, 0, ih, ih], [1, 1, 1, 1]], dtype=np.float64)
    if np.any(corners[2] <= 0):
        return np.zeros((frame.height, frame.width), np.uint8) if keep_alpha else None
    xs, ys = corners[0] / corners[2], corners[1] / corners[2]
    x0, y0 = max(0, math.floor(xs.min())), max(0, math.floor(ys.min()))
    x1, y1 = min(frame.width, math.ceil(xs.max())), min(frame.height, math.ceil(ys.max()))
    alpha = np.zeros((frame.height, frame.width), np.uint8) if keep_alpha else None
    if x1 <= x0 or y1 <= y0:
        return alpha
    shift = np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1]], dtype=np.float64)
    patch = image.transform(
        (x1 - x0, y1 - y0), Image.Transform.PERSPECTIVE, _coeffs(np.linalg.inv(h) @ shift), Image.Resampling.BILINEAR
    )
    frame.paste(patch, (x0, y0), patch)
    if alpha is not None:
        alpha[y0:y1, x0:x1] = np.asarray(patch.getchannel("A"))
    return alpha


def _projected_area(h: np.ndarray, image: Image.Image) -> float:
    iw, ih = image.size
    c = h @ np.array([[0, iw, iw, 0], [0, 0, ih, ih], [1, 1, 1, 1]], dtype=np.float64)
    x, y = c[0] / c[2], c[1] / c[2]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def render(scene: Scene, s: float, with_boxes: bool, opts: SynthOptions) -> tuple[np.ndarray, list]:
    """One frame at scene time ``s``: uint8 [H, W, 3] and, if asked, per target ``(x1, y1, x2, y2)`` or None."""
    cam = scene.camera(s)
    frame = scene.background.transform(
        (scene.width, scene.height), Image.Transform.AFFINE, _coeffs(np.linalg.inv(cam))[:6], Image.Resampling.BILINEAR
    )
    layers = []
    for thing in scene.things:
        h = cam @ thing.homography(s)
        alpha = _paste(frame, thing.image, h, with_boxes)
        layers.append((alpha, _projected_area(h, thing.image) * thing.area_fraction if with_boxes else 0.0))
    for start, end, hand, (fx, fy), (tx, ty) in scene.hands:
        if start <= s < end:
            t = math.sin(math.pi * (s - start) / (end - start))
            move = np.array([[1, 0, fx + (tx - fx) * t], [0, 1, fy + (ty - fy) * t], [0, 0, 1]])
            layers.append((_paste(frame, hand, move, with_boxes), 0.0))
    boxes: list = []
    if with_boxes:
        cover = np.zeros((scene.height, scene.width), bool)
        visible = {}
        for i in range(len(layers) - 1, -1, -1):
            alpha, area = layers[i]
            mask = alpha > 127
            if i in scene.targets:
                seen = mask & ~cover
                count = int(seen.sum())
                if count >= opts.min_pixels and count >= opts.min_visible * area:
                    ys, xs = np.nonzero(seen)
                    visible[i] = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
            cover |= mask
        boxes = [visible.get(i) for i in scene.targets]
    return np.asarray(frame), boxes


def make_scene(rng: np.random.Generator, opts: SynthOptions, pool: str | None, duration: float) -> Scene:
    """Random world, objects, camera holds and hands for ``duration`` canonical frames of scene time."""
    w, h = opts.frame_width, opts.frame_height
    world_w, world_h = round(w * 2.6), round(h * 2.2)
    specs = list(object_specs(pool))
    picks = rng.permutation(len(specs))
    targets = [specs[i] for i in picks[: opts.targets_per_clip]]
    others = [specs[i] for i in picks[opts.targets_per_clip :]]
    used = {name for s in targets + others[: opts.distractors] for name in (s.source, s.texture) if name}
    backgrounds = [b for b in background_names(pool) if not any(same_picture(b, u) for u in used)]
    world_name = backgrounds[int(rng.integers(len(backgrounds)))]
    world = background_image(world_name, world_w, world_h)

    margin = 0.18 * h
    positions: list[tuple[float, float]] = []
    count = len(targets) + opts.distractors
    for _ in range(count):
        best = None
        for _ in range(64):
            p = (float(rng.uniform(margin, world_w - margin)), float(rng.uniform(margin, world_h - margin)))
            d = min((math.dist(p, q) for q in positions), default=float("inf"))
            if best is None or d > best[0]:
                best = (d, p)
        positions.append(best[1])

    def thing(image: Image.Image, title: str, pos: tuple[float, float], lively: float) -> Thing:
        size = float(rng.uniform(0.16, 0.42) * h)
        alpha = np.asarray(image.getchannel("A"))
        return Thing(
            image=image,
            title=title,
            x=pos[0],
            y=pos[1],
            size=size,
            drift=(
                lively * rng.uniform(0, 0.12) * w,
                lively * rng.uniform(0, 0.08) * h,
                rng.uniform(0.01, 0.05),
                rng.uniform(0, 2 * math.pi),
            ),
            yaw=(
                rng.uniform(-0.3, 0.3),
                lively * rng.uniform(0.2, 0.9),
                rng.uniform(0.01, 0.04),
                rng.uniform(0, 2 * math.pi),
            ),
            roll=(
                rng.uniform(-0.4, 0.4),
                lively * rng.uniform(0.1, 0.5),
                rng.uniform(0.01, 0.04),
                rng.uniform(0, 2 * math.pi),
            ),
            area_fraction=float((alpha > 127).mean()),
        )

    long_side = round(0.42 * h * 1.8)
    things = [thing(object_image(t, long_side), t.title, positions[i], 1.0) for i, t in enumerate(targets)]
    for j in range(opts.distractors):
        pos = positions[len(targets) + j]
        if j % 2 == 0 or not others:
            base = targets[j % len(targets)]
            tint = rng.uniform(0.3, 1.0, size=3)
            image = recolour(object_image(base, long_side), int(rng.integers(64, 192)), tuple(tint / tint.max()))
            if rng.random() < 0.5:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            things.append(thing(image, f"{base.title} (other colour)", pos, 0.5))
        else:
            other = others[j % len(others)]
            things.append(thing(object_image(other, long_side), other.title, pos, 0.5))
    order = rng.permutation(len(things))
    things = [things[i] for i in order]
    target_idx = [int(np.nonzero(order == i)[0][0]) for i in range(len(targets))]

    # Camera: every target is fixated at least twice, in random order, with random zoom and offset.
    visits = [i for i in range(len(targets)) for _ in range(2)]
    slots = max(len(visits) + 2, round(duration / (3.0 * opts.video_fps)))
    visits += [-1] * (slots - len(visits))
    visits = [visits[i] for i in rng.permutation(len(visits))]
    holds = []
    slot = duration / slots
    for k, v in enumerate(visits):
        zoom = float(rng.uniform(0.8, 1.6))
        if v >= 0:
            t = things[target_idx[v]]
            cx = t.x + rng.uniform(-0.25, 0.25) * w / zoom
            cy = t.y + rng.uniform(-0.25, 0.25) * h / zoom
        else:
            cx, cy = rng.uniform(0, world_w), rng.uniform(0, world_h)
        cx = float(np.clip(cx, w / zoom / 2, world_w - w / zoom / 2))
        cy = float(np.clip(cy, h / zoom / 2, world_h - h / zoom / 2))
        start = k * slot + (0.0 if k == 0 else rng.uniform(0.2, 0.35) * slot)
        holds.append((start - (opts.lead_frames if k == 0 else 0), (k + 1) * slot, cx, cy, zoom))
    last = holds[-1]
    holds[-1] = (last[0], last[1] + opts.lead_frames + 1, *last[2:])

    # Hands: blobs textured with another background picture (never a target's look), sliding in from a side.
    hands = []
    textures = [b for b in background_names(pool) if b != world_name] or [world_name]
    for start, end, *_ in holds:
        if rng.random() < 0.4:
            side_px = round(rng.uniform(0.35, 0.6) * h)
            texture = textures[int(rng.integers(len(textures)))]
            hand = background_image(texture, round(side_px * rng.uniform(0.7, 1.3)), side_px).convert("RGBA")
            ellipse = Image.new("L", hand.size, 0)
            ImageDraw.Draw(ellipse).ellipse((0, 0, hand.width - 1, hand.height - 1), fill=255)
            hand.putalpha(ellipse)
            side = rng.choice([-1.0, 1.0])
            from_xy = (w / 2 + side * w * 0.75 - hand.width / 2, rng.uniform(0, h - hand.height))
            to_xy = (w / 2 + side * w * 0.1 - hand.width / 2, rng.uniform(0, h - hand.height))
            a = rng.uniform(start, end)
            hands.append((a, a + rng.uniform(0.4, 0.8) * (end - start), hand, from_xy, to_xy))
    return Scene(w, h, world, things, target_idx, holds, (float(rng.uniform(0.0, 0.08)), 0.02), hands)
