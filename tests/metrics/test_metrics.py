"""The official VQ2D metrics on hand-built tracks, with every expected value worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from prvql.metrics import ResponseTrack, compute_scale_metrics, compute_vq2d_metrics, query_scale
from prvql.metrics.ap import detection_ap, interpolated_ap, rank_predictions
from prvql.metrics.overlap import frame_ious, spatio_temporal_iou, temporal_iou

BOX = (0.0, 0.0, 10.0, 10.0)  # area 100


def track(first: int, last: int, box=BOX, score: float = 1.0) -> ResponseTrack:
    """Frames first..last (inclusive), the same box on each."""
    frames = np.arange(first, last + 1)
    return ResponseTrack(frames, np.tile(np.asarray(box, dtype=float), (len(frames), 1)), score)


def test_response_track_sorts_and_requires_contiguous_frames():
    t = ResponseTrack(np.array([5, 3, 4]), np.array([[5, 5, 6, 6], [3, 3, 4, 4], [4, 4, 5, 5]]), 0.5)
    assert t.frames.tolist() == [3, 4, 5]
    assert t.boxes[:, 0].tolist() == [3, 4, 5]  # boxes follow their frames
    assert t.extent == (3, 5) and len(t) == 3
    with pytest.raises(ValueError, match="not contiguous"):
        ResponseTrack(np.array([0, 2]), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="not contiguous"):
        ResponseTrack(np.array([1, 1]), np.zeros((2, 4)))
    assert ResponseTrack.empty().extent == (0, -1)


def test_temporal_iou_counts_inclusive_frames():
    # [2, 5] vs [4, 9]: frames 4-5 shared (2), union 4 + 6 - 2 = 8
    assert temporal_iou(track(2, 5), track(4, 9)) == pytest.approx(0.25)
    assert temporal_iou(track(3, 3), track(3, 3)) == 1.0
    assert temporal_iou(ResponseTrack.empty(), track(0, 4)) == 0.0


def test_spatio_temporal_iou_uses_whole_track_volumes():
    gt = track(0, 1)  # volume 200
    pred = track(1, 2, box=(5.0, 0.0, 15.0, 10.0))  # volume 200; frame 1 overlaps by 5 x 10 = 50
    assert spatio_temporal_iou(pred, gt) == pytest.approx(50 / 350)
    assert spatio_temporal_iou(ResponseTrack.empty(), gt) == 0.0


def test_frame_ious_zero_where_the_prediction_has_no_box():
    gt = track(0, 1)
    pred = track(1, 2, box=(5.0, 0.0, 15.0, 10.0))
    np.testing.assert_allclose(frame_ious(pred, gt), [0.0, 50 / 150])


def test_interpolated_ap_voc_2011():
    # precision 1, 0.5, 2/3 at recall 1/3, 1/3, 2/3: envelope 1, 2/3, 2/3 -> 1/3 * 1 + 1/3 * 2/3 + 1/3 * 0
    assert interpolated_ap(np.array([1.0, 0.5, 2 / 3]), np.array([1 / 3, 1 / 3, 2 / 3])) == pytest.approx(5 / 9)


def test_equal_scores_rank_in_reverse_annotation_order():
    assert rank_predictions(np.ones(5)).tolist() == [4, 3, 2, 1, 0]
    assert rank_predictions(np.array([0.1, 0.9, 0.5])).tolist() == [1, 2, 0]
    # overlaps 1.0, 0.6, 0.0 in annotation order; tied scores rank them 0.0, 0.6, 1.0:
    # TP 0, 1, 1 -> precision 0, 1/2, 2/3 at recall 0, 1/3, 2/3 -> AP 2/3 * 1/3 + 2/3 * 1/3 = 4/9
    overlaps = np.array([1.0, 0.6, 0.0])
    assert detection_ap(overlaps, np.ones(3), [0.25])[0] == pytest.approx(4 / 9)
    # ranked by real scores in annotation order: TP 1, 1, 0 -> AP 2/3
    assert detection_ap(overlaps, np.array([0.9, 0.8, 0.7]), [0.25])[0] == pytest.approx(2 / 3)
    assert detection_ap(np.zeros(0), np.zeros(0), [0.25, 0.5]).tolist() == [0.0, 0.0]


def _three_queries(scores):
    """GTs [0, 9], [0, 9], [0, 19]; predictions with tIoU = stIoU = 1.0, 0.6, 0.0 (same boxes where they overlap)."""
    gts = [track(0, 9), track(0, 9), track(0, 19)]
    preds = [track(0, 9, score=scores[0]), track(0, 5, score=scores[1]), track(30, 32, score=scores[2])]
    return preds, gts


def test_all_metrics_with_tied_scores():
    m = compute_vq2d_metrics(*_three_queries([1.0, 1.0, 1.0]))
    # ranked (reverse order) 0.0, 0.6, 1.0. AP@0.25 = AP@0.5 = 4/9 (see above);
    # AP@0.75 = AP@0.95: TP 0, 0, 1 -> precision 1/3 at recall 1/3 -> 1/9
    assert m.tap25 == pytest.approx(4 / 9)
    assert m.tap == pytest.approx((4 / 9 + 4 / 9 + 1 / 9 + 1 / 9) / 4)
    assert m.stap25 == pytest.approx(4 / 9)
    assert m.stap == pytest.approx(m.tap)
    assert m.success == pytest.approx(200 / 3)  # stIoU >= 0.05 for 2 of 3
    # recovered frames 10 + 6 + 0 of 10 + 10 + 20 GT frames (the per-query mean would be 53.33)
    assert m.recovery == pytest.approx(40.0)
    assert m.num_queries == 3


def test_all_metrics_with_ranked_scores():
    m = compute_vq2d_metrics(*_three_queries([0.9, 0.8, 0.7]))
    # ranked 1.0, 0.6, 0.0: AP@0.25 = AP@0.5 = 2/3, AP@0.75 = AP@0.95 = 1/3
    assert m.tap25 == pytest.approx(2 / 3)
    assert m.tap == pytest.approx(0.5)
    assert m.stap25 == pytest.approx(2 / 3)
    assert (m.success, m.recovery) == (pytest.approx(200 / 3), pytest.approx(40.0))


def test_spatial_thresholds_of_success_and_recovery():
    gt = track(0, 3)  # 4 frames of 10 x 10
    shifted = (0.0, 0.0, 10.0, 6.0)  # IoU 0.6 with the GT box, area 60
    pred = ResponseTrack(np.arange(0, 4), np.array([BOX, BOX, shifted, (20.0, 20.0, 30.0, 30.0)]), 1.0)
    m = compute_vq2d_metrics([pred], [gt])
    assert m.recovery == pytest.approx(75.0)  # IoU 1, 1, 0.6, 0
    # stIoU = (100 + 100 + 60 + 0) / (360 + 400 - 260) = 0.52; one query: AP 1 at 0.25 and 0.5, 0 above
    assert m.stap25 == 1.0 and m.stap == pytest.approx(0.5)
    assert m.tap == 1.0 and m.success == 100.0
    # success needs stIoU >= 0.05: a long prediction around a thin 1-frame GT box falls below it
    far = compute_vq2d_metrics([track(0, 24, box=(0.0, 0.0, 10.0, 10.0))], [track(0, 0, box=(0.0, 0.0, 10.0, 1.0))])
    assert far.success == 0.0  # stIoU = 10 / (2500 + 10 - 10) = 0.004


def test_metrics_reject_mismatched_inputs():
    with pytest.raises(ValueError, match="2 predictions for 1"):
        compute_vq2d_metrics([track(0, 1), track(0, 1)], [track(0, 1)])
    with pytest.raises(ValueError, match="no queries"):
        compute_vq2d_metrics([], [])


@pytest.mark.parametrize(
    "box, scale",
    [
        ((0, 0, 63, 64), "small"),
        ((0, 0, 64, 64), "medium"),  # half-open: 64^2 starts medium
        ((10, 10, 201.9, 201.9), "medium"),
        ((0, 0, 192, 192), "large"),
    ],
)
def test_query_scale_boundaries(box, scale):
    assert query_scale(track(0, 0, box=box)) == scale


def test_query_scale_uses_the_largest_box():
    t = ResponseTrack(np.array([0, 1]), np.array([[0, 0, 10, 10], [0, 0, 200, 200]]))
    assert query_scale(t) == "large"


def test_scale_metrics_split_queries_and_rank_within_each():
    small = (0.0, 0.0, 10.0, 10.0)
    large = (0.0, 0.0, 300.0, 300.0)
    preds = [track(0, 9, small), track(0, 9, large), track(0, 5, small), track(50, 52, large)]
    gts = [track(0, 9, small), track(0, 9, large), track(0, 9, small), track(0, 9, large)]
    scales = compute_scale_metrics(preds, gts)
    assert scales["medium"] is None
    assert scales["small"].num_queries == 2 and scales["large"].num_queries == 2
    # small: tIoU 1.0, 0.6 -> both TP at 0.25 whatever the order
    assert scales["small"].tap25 == 1.0
    # large: tIoU 1.0, 0.0 tied -> ranked 0.0 then 1.0: precision 0, 1/2 at recall 0, 1/2 -> AP 1/4
    assert scales["large"].tap25 == pytest.approx(0.25)
    assert scales["large"].recovery == pytest.approx(50.0)


def test_to_dict_uses_official_short_names():
    m = compute_vq2d_metrics(*_three_queries([1.0, 1.0, 1.0]))
    assert list(m.to_dict()) == ["tAP", "tAP25", "stAP", "stAP25", "success", "recovery", "num_queries"]
