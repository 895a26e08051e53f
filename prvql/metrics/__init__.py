"""The official Ego4D VQ2D metrics, the response-track structure they use, and evaluation against annotations."""

from prvql.metrics.structures import ResponseTrack
from prvql.metrics.vq2d import (
    SCALE_RANGES,
    VQ2DMetrics,
    compute_scale_metrics,
    compute_vq2d_metrics,
    query_scale,
)

__all__ = [
    "ResponseTrack",
    "SCALE_RANGES",
    "VQ2DMetrics",
    "compute_scale_metrics",
    "compute_vq2d_metrics",
    "query_scale",
]
