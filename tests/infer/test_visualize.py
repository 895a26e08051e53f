"""`visualize_query`: one query of a predictions file drawn on its clip with the one result-video renderer."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from prvql.data.annotations import load_annotations
from prvql.data.video import VideoReader, write_video
from prvql.errors import PRVQLError
from prvql.infer import outputs
from prvql.infer.predictions import write_predictions
from prvql.infer.score_cache import FrameScores, ScoreCache
from prvql.infer.visualize import visualize_query
from prvql.metrics.structures import ResponseTrack

FRAMES, H, W = 12, 64, 96  # the decoded clip
ORIG_H, ORIG_W = 128, 192  # the annotation's pixels: every box is halved on the clip
QUERY_FRAME, CROP_FRAME = 10, 9
TRUTH = (3, 5)
TRUTH_BOX = (40.0, 30.0, 90.0, 70.0)  # annotation pixels; (20, 15, 45, 35) on the clip
PREDICTED = (6, 7)
PREDICTED_BOX = (100.0, 40.0, 160.0, 100.0)  # (50, 20, 80, 50) on the clip
KEY = "a1_1"


@pytest.fixture
def query(tmp_path: Path) -> dict[str, Path]:
    """A 12-frame clip of flat grey, its annotation (truth frames 3-5), a prediction (frames 6-7) and its cached
    score curve (10 frames, the best box of every frame at the annotation's (0, 0, 40, 40))."""
    clips = tmp_path / "clips"
    clips.mkdir()
    write_video(clips / "clip1.mp4", np.full((FRAMES, H, W, 3), 128, np.uint8), fps=5.0)

    def box(frame: int, xyxy: tuple[float, ...]) -> dict:
        x1, y1, x2, y2 = xyxy
        size = {"original_width": ORIG_W, "original_height": ORIG_H}
        return {"frame_number": frame, "x": x1, "y": y1, "width": x2 - x1, "height": y2 - y1, **size}

    query_set = {
        "is_valid": True,
        "query_frame": QUERY_FRAME,
        "object_title": "mug",
        "visual_crop": box(CROP_FRAME, TRUTH_BOX),
        "response_track": [box(f, TRUTH_BOX) for f in range(TRUTH[0], TRUTH[1] + 1)],
    }
    clip = {"clip_uid": "clip1", "annotations": [{"annotation_uid": "a1", "query_sets": {"1": query_set}}]}
    annotations = tmp_path / "vq_val.json"
    annotations.write_text(json.dumps({"version": "1.0.5", "videos": [{"video_uid": "v1", "clips": [clip]}]}))
    predicted = ResponseTrack(np.arange(PREDICTED[0], PREDICTED[1] + 1), [PREDICTED_BOX] * 2, 0.9)
    predictions = tmp_path / "pred.json"
    write_predictions(predictions, load_annotations(annotations), {KEY: predicted})
    scores = np.linspace(0.1, 0.9, QUERY_FRAME).astype(np.float32)
    ScoreCache(tmp_path / "pred.json.cache").save(KEY, FrameScores(scores, np.tile([0, 0, 40, 40], (10, 1))))
    return {"annotations": annotations, "predictions": predictions, "clips": clips, "root": tmp_path}


@pytest.fixture
def drawn_with(monkeypatch) -> list[dict]:
    """Every call of ``prvql.infer.outputs.overlay_frames`` (arguments as keywords), passed on to the real one."""
    calls: list[dict] = []
    real = outputs.overlay_frames

    def recorded(frames, inset, track, **kwargs):
        calls.append({"inset": inset, "track": track, **kwargs})
        return real(frames, inset, track, **kwargs)

    monkeypatch.setattr(outputs, "overlay_frames", recorded)
    return calls


def visualize(query: dict[str, Path], **kwargs):
    out = query["root"] / "a1_1.mp4"
    return visualize_query(query["annotations"], query["predictions"], query["clips"], KEY, out, **kwargs)


def test_visualize_draws_with_the_result_video_renderer(query: dict, drawn_with: list[dict]) -> None:
    drawn = visualize(query)
    assert drawn.video == query["root"] / "a1_1.mp4" and drawn.plot == query["root"] / "a1_1.scores.png"
    assert (drawn.first_frame, drawn.last_frame, drawn.frames) == (0, QUERY_FRAME, QUERY_FRAME + 1)
    assert (drawn.predicted, drawn.ground_truth) == (PREDICTED, TRUTH)
    assert drawn.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with VideoReader(drawn.video) as reader:
        assert reader.num_frames == QUERY_FRAME + 1 and (reader.height, reader.width) == (H, W)
        frames = reader.read(range(QUERY_FRAME + 1)).astype(int)

    (call,) = drawn_with
    assert call["first_frame"] == 0 and call["outlined_frame"] == QUERY_FRAME
    assert call["track"].frames.tolist() == [6, 7]
    np.testing.assert_allclose(call["track"].boxes, [[50, 20, 80, 50]] * 2)  # in the clip's pixels
    assert call["ground_truth"].frames.tolist() == [3, 4, 5]
    np.testing.assert_allclose(call["ground_truth"].boxes, [[20, 15, 45, 35]] * 3)
    np.testing.assert_allclose(call["boxes"], np.tile([0, 0, 20, 20], (QUERY_FRAME, 1)))
    assert call["scores"].shape == (QUERY_FRAME,) and call["inset"].shape[:2] == (20, 25)  # the crop, 20 x 25 pixels

    red, green = frames[..., 0] - frames[..., 1], frames[..., 1] - frames[..., 0]
    truth_edge, track_edge = np.s_[21:33, 20], np.s_[22:48, 50]  # left edges, off the corners and the inset
    assert red[4][truth_edge].mean() > 60 and red[7][truth_edge].mean() < 20  # the truth on its frames only
    assert green[6][track_edge].mean() > 60 and green[4][track_edge].mean() < 20  # the prediction on its frames
    assert frames[QUERY_FRAME][24:56, 2:4].mean() > 200 and frames[QUERY_FRAME - 1][24:56, 2:4].mean() < 160  # outline


def test_visualize_margin_and_no_cache(query: dict, drawn_with: list[dict]) -> None:
    drawn = visualize(query, margin=1)  # the tracks span 3-7: frames 2-8
    assert (drawn.first_frame, drawn.last_frame, drawn.frames) == (2, 8, 7)
    assert drawn_with[-1]["first_frame"] == 2
    with VideoReader(drawn.video) as reader:
        assert reader.num_frames == 7
    drawn.plot.unlink()
    drawn = visualize(query, cache_dir=query["root"] / "no_cache")
    assert drawn.plot is None and not (query["root"] / "a1_1.scores.png").exists()
    assert drawn_with[-1]["boxes"] is None and drawn_with[-1]["scores"] is None  # no grey candidates


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        ({"margin": -1}, "margin", "margin: must be >= 0 (got -1)"),
        ({"key": "zz_9"}, None, "no query set with key 'zz_9'"),
        ({"clips": "nowhere"}, "clips_dir", "folder of <clip_uid>.mp4 not found"),
        ({"output": "folder"}, "output", "is a folder, expected a file name"),
    ],
)
def test_visualize_bad_input_names_the_field_and_writes_nothing(
    query: dict, kwargs: dict, field: str | None, message: str
) -> None:
    root = query["root"]
    (root / "folder").mkdir()
    args = {
        "annotations": query["annotations"],
        "predictions": query["predictions"],
        "clips_dir": root / kwargs.pop("clips", "clips"),
        "key": kwargs.pop("key", KEY),
        "output": root / kwargs.pop("output", "a1_1.mp4"),
    }
    before = sorted(root.rglob("*"))
    with pytest.raises(PRVQLError, match=re.escape(message)) as error:
        visualize_query(**args, **kwargs)
    assert error.value.field == field and "--" not in str(error.value)  # a library error names no flag
    assert sorted(root.rglob("*")) == before
