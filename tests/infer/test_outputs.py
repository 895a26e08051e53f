"""`overlay_frames`, the one renderer of result videos (`track.mp4` of locate and demo, `prvql visualize`)."""

from __future__ import annotations

import numpy as np

from prvql.infer.outputs import overlay_frames
from prvql.metrics.structures import ResponseTrack

H, W = 64, 96
TRACK_BOX, TRUTH_BOX, BEST_BOX = (50.0, 20.0, 80.0, 50.0), (40.0, 30.0, 60.0, 60.0), (60.0, 36.0, 90.0, 60.0)


def _green(frame: np.ndarray, x: int, rows: slice) -> float:
    return float((frame[rows, x, 1].astype(int) - frame[rows, x, 0]).mean())


def _red(frame: np.ndarray, x: int, rows: slice) -> float:
    return float((frame[rows, x, 0].astype(int) - frame[rows, x, 1]).mean())


def test_overlay_frames_numbers_frames_from_first_frame_and_stops_at_num_frames() -> None:
    read = []

    def stream():
        for k in range(10):
            read.append(k)
            yield np.full((H, W, 3), 128, np.uint8)

    track = ResponseTrack(np.array([5, 6]), [TRACK_BOX] * 2)
    truth = ResponseTrack(np.array([6]), [TRUTH_BOX])
    scores = np.linspace(0, 1, 10)
    boxes = np.tile(BEST_BOX, (10, 1))
    inset = np.zeros((8, 8, 3), np.uint8)
    drawn = list(
        overlay_frames(
            stream(),
            inset,
            track,
            scores=scores,
            boxes=boxes,
            ground_truth=truth,
            first_frame=4,
            num_frames=4,
            outlined_frame=7,
            query=(np.full((H, W, 3), 128, np.uint8), (10.0, 10.0, 30.0, 30.0)),
        )
    )
    assert read == [0, 1, 2, 3] and len(drawn) == 4 + 1  # frames 4-7, then the query image
    assert all(frame.shape == (H, W, 3) for frame in drawn)
    on_track = [_green(frame, 50, np.s_[24:46]) > 200 for frame in drawn[:4]]
    assert on_track == [False, True, True, False]  # frames 5 and 6
    assert [_red(frame, 40, np.s_[34:56]) > 200 for frame in drawn[:4]] == [False, False, True, False]
    grey_best = [tuple(frame[45, 90]) == (0x88, 0x99, 0xAA) for frame in drawn[:4]]  # the best box's right edge
    assert grey_best == [True, False, False, True]  # off the track only
    assert drawn[3][30, 2].min() == 255 and drawn[2][30, 2].max() == 128  # frame 7 outlined white
    assert _red(drawn[4], 10, np.s_[14:26]) > 200  # the query box on the query image
    assert (drawn[1][:8, :8] == 0).all()  # the inset in the corner

    without_candidates = list(overlay_frames(iter([np.full((H, W, 3), 128, np.uint8)]), inset, track, first_frame=4))
    assert (without_candidates[0][10:, 10:] == 128).all()  # frame 4 is off the track: nothing drawn without boxes
