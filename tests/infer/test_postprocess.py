"""Post-processing of score curves into response-track windows, worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from prvql.config import InferenceConfig
from prvql.errors import ConfigError
from prvql.infer.postprocess import PostProcessor, build_postprocessor, find_track_window, smooth_scores


def window(scores, **kwargs) -> tuple[int, int, int]:
    w = find_track_window(np.asarray(scores, dtype=float), **kwargs)
    return w.start, w.end, w.peak


@pytest.mark.parametrize("reach_ends", [False, True])
def test_one_peak_grows_while_above_the_track_threshold(reach_ends):
    # peak 0.9 at 3; track threshold 0.585 * 0.9 = 0.5265: frame 4 (0.6) joins, frames 2 and 5 (0.5) do not
    assert window([0.1, 0.2, 0.5, 0.9, 0.6, 0.5, 0.1, 0.1], reach_ends=reach_ends) == (3, 4, 3)


def test_window_details_for_plotting():
    w = find_track_window(np.array([0.1, 0.2, 0.5, 0.9, 0.6, 0.5, 0.1, 0.1]))
    assert w.peak_score == pytest.approx(0.9)
    assert w.peak_threshold == pytest.approx(0.79 * 0.9)
    assert w.track_threshold == pytest.approx(0.585 * 0.9)
    assert w.peaks.tolist() == [3]
    assert w.smoothed.shape == (8,)


def test_plateau_peak_is_its_middle_and_the_window_covers_it():
    assert window([0.1, 0.8, 0.8, 0.8, 0.1]) == (1, 3, 2)
    assert window([0.1, 0.8, 0.8, 0.1]) == (1, 2, 1)  # even plateau: find_peaks rounds the middle down


def test_most_recent_surviving_peak_wins_over_an_older_higher_one():
    # peaks 1.0 (frame 1), 0.85 (3), 0.5 (5); survivors > 0.79: frames 1 and 3; the most recent is 3
    w = find_track_window(np.array([0.1, 1.0, 0.1, 0.85, 0.1, 0.5, 0.1]))
    assert (w.start, w.end, w.peak) == (3, 3, 3)
    assert w.peaks.tolist() == [1, 3, 5]


def test_peak_filter_is_strict():
    # 0.79 * 1.0 = 0.79 exactly: a later peak of exactly 0.79 does not survive (the released code uses >)
    assert window([0.1, 1.0, 0.1, 0.79, 0.1])[2] == 1


def test_no_peak_fallback_as_released():
    # increasing: no interior peak -> the last frame (s[0] < s[-1]); threshold 0.234 takes frame 2, not frame 1
    assert window([0.1, 0.2, 0.3, 0.4], reach_ends=False) == (2, 3, 3)
    # decreasing: frame 0 (s[0] > s[-1]); grows forward onto frame 1
    assert window([0.4, 0.3, 0.2, 0.1], reach_ends=False) == (0, 1, 0)
    # constant: s[0] == s[-1] -> last frame; the released backward growth stops at frame 1
    assert window([0.5] * 5, reach_ends=False) == (1, 4, 4)


def test_no_interior_peak_with_reach_ends():
    assert window([0.1, 0.2, 0.3, 0.4]) == (2, 3, 3)
    assert window([0.4, 0.3, 0.2, 0.1]) == (0, 1, 0)
    assert window([0.5] * 5) == (0, 4, 2)  # one plateau peak in the middle, window over everything


def test_maxima_at_frame_zero_and_the_last_frame():
    # released: only the interior peak 0.3 at frame 3 exists; its window cannot grow onto the last frame
    assert window([0.9, 0.5, 0.1, 0.3, 0.2], reach_ends=False) == (3, 3, 3)
    # reach_ends: frame 0 (0.9) is a peak, the highest; 0.3 < 0.79 * 0.9 is dropped
    assert window([0.9, 0.5, 0.1, 0.3, 0.2], reach_ends=True) == (0, 0, 0)
    # released: peak 0.5 at frame 1; reach_ends: the rising end (0.9 at the last frame) is the most recent peak
    assert window([0.1, 0.5, 0.2, 0.6, 0.9], reach_ends=False) == (1, 1, 1)
    assert window([0.1, 0.5, 0.2, 0.6, 0.9], reach_ends=True) == (3, 4, 4)


def test_growth_reaches_both_ends_only_with_reach_ends():
    scores = [0.8, 0.9, 1.0, 0.9, 0.8]
    assert window(scores, reach_ends=False) == (1, 3, 2)
    assert window(scores, reach_ends=True) == (0, 4, 2)


def test_all_zero_scores_still_give_a_window():
    # the only peak scores 0, not above 0.79 * 0: it is kept anyway
    assert window([0.0, 0.0, 0.0], reach_ends=False) == (1, 2, 2)  # fallback last frame, growth stops at frame 1
    assert window([0.0, 0.0, 0.0], reach_ends=True) == (0, 2, 1)


def test_median_filter_removes_a_one_frame_spike():
    smoothed = smooth_scores(np.array([0.1, 0.9, 0.1, 0.5, 0.6, 0.5, 0.1]), 3)
    np.testing.assert_allclose(smoothed, [0.1, 0.1, 0.5, 0.5, 0.5, 0.5, 0.1])
    assert window([0.1, 0.9, 0.1, 0.5, 0.6, 0.5, 0.1], median_kernel=3) == (2, 5, 3)
    np.testing.assert_array_equal(smooth_scores(np.array([0.3, 0.1]), 1), [0.3, 0.1])
    with pytest.raises(ValueError, match="odd"):
        smooth_scores(np.zeros(3), 2)


def test_median_filter_longer_than_the_curve_zero_pads_without_a_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        smoothed = smooth_scores(np.array([0.2, 0.8, 0.6]), 5)
    # zero-padded to [0, 0, 0.2, 0.8, 0.6, 0, 0]: medians of 5 around each of the three frames
    np.testing.assert_allclose(smoothed, [0.2, 0.2, 0.2])


def test_postprocessor_builds_the_track_from_frame_boxes():
    scores = np.array([0.1, 0.2, 0.5, 0.9, 0.6, 0.5, 0.1, 0.1])
    boxes = np.arange(32, dtype=float).reshape(8, 4)
    boxes[:, 2:] += 10
    track, w = PostProcessor()(scores, boxes)
    assert track.frames.tolist() == [3, 4]
    np.testing.assert_array_equal(track.boxes, boxes[3:5])
    assert track.score == 1.0
    peak_track, _ = PostProcessor(score_mode="peak")(scores, boxes)
    assert peak_track.score == pytest.approx(0.9)
    with pytest.raises(ValueError, match="do not match"):
        PostProcessor()(scores, boxes[:5])


def test_build_postprocessor_reads_the_inference_config():
    p = build_postprocessor(InferenceConfig(median_kernel=3, peak_ratio=0.8, track_ratio=0.7, reach_ends=False))
    assert (p.median_kernel, p.peak_ratio, p.track_ratio, p.reach_ends) == (3, 0.8, 0.7, False)
    with pytest.raises(ConfigError, match="inference: median kernel"):
        build_postprocessor(InferenceConfig(median_kernel=4))
    with pytest.raises(ConfigError, match="score mode"):
        build_postprocessor(InferenceConfig(score="best"))
    with pytest.raises(ConfigError, match=r"inference: peak_ratio must be in \[0, 1\] \(got -1"):
        build_postprocessor(InferenceConfig(peak_ratio=-1.0))
    with pytest.raises(ConfigError, match="track_ratio"):
        build_postprocessor(InferenceConfig(track_ratio=1.5))


def test_rejects_an_empty_curve():
    with pytest.raises(ValueError, match="non-empty 1-D"):
        find_track_window(np.zeros(0), median_kernel=3)
    assert window([0.7]) == (0, 0, 0)
    assert window([0.7], reach_ends=False) == (0, 0, 0)


def test_first_frame_searches_only_the_frames_after_it():
    # the highest peak (frame 2, the visual crop's sighting) hides the later, weaker one (frame 8) from peak_ratio 0.5
    scores = [0.1, 0.8, 1.0, 0.8, 0.1, 0.1, 0.1, 0.35, 0.4, 0.35, 0.1]
    assert window(scores, peak_ratio=0.5, track_ratio=0.8) == (1, 3, 2)
    w = find_track_window(np.asarray(scores), peak_ratio=0.5, track_ratio=0.8, first_frame=4)
    assert (w.start, w.end, w.peak) == (7, 9, 8) and w.peak_score == 0.4
    assert np.array_equal(w.smoothed, scores) and w.peaks.tolist() == [8] and w.peak_threshold == pytest.approx(0.2)
    # right after the crop frame the falling side of its sighting (frame 3, 0.8) is no peak: frame 8 still wins
    assert window(scores, peak_ratio=0.5, track_ratio=0.8, first_frame=3) == (7, 9, 8)
    # frames before first_frame never join the window, however high they score
    w = find_track_window(np.asarray([0.9, 0.9, 0.8, 0.9, 0.2]), track_ratio=0.5, first_frame=2)
    assert (w.start, w.end, w.peak) == (2, 3, 3)
    # no peak from first_frame on (a falling tail): its highest frame is the peak; threshold 0.72 keeps frame 3 only
    assert window([0.2, 1.0, 0.9, 0.8, 0.7], track_ratio=0.8, first_frame=2) == (2, 3, 2)
    for bad in (-1, 11):
        with pytest.raises(ValueError, match="first_frame"):
            find_track_window(np.asarray(scores), first_frame=bad)


def test_after_visual_crop_uses_the_crop_frame_only_when_switched_on():
    scores = np.array([0.1, 0.8, 1.0, 0.8, 0.1, 0.1, 0.1, 0.35, 0.4, 0.35, 0.1])
    boxes = np.tile(np.float32([1, 2, 3, 4]), (11, 1))
    plain = PostProcessor(peak_ratio=0.5, track_ratio=0.8)
    rule = PostProcessor(peak_ratio=0.5, track_ratio=0.8, after_visual_crop=True)
    assert plain(scores, boxes, visual_crop_frame=2)[1].peak == 2  # off: the crop frame changes nothing
    track, w = rule(scores, boxes, visual_crop_frame=2)
    assert (w.start, w.end, w.peak) == (7, 9, 8) and track.frames.tolist() == [7, 8, 9]
    assert rule(scores, boxes)[1].peak == 2  # no crop frame given (locate on one's own video)
    assert [rule.first_frame(11, c) for c in (None, -1, 0, 2, 9, 10, 11, 40)] == [0, 0, 1, 3, 10, 0, 0, 0]
    assert build_postprocessor(InferenceConfig(after_visual_crop=True)).after_visual_crop
    assert not build_postprocessor(InferenceConfig()).after_visual_crop
