"""The optical-flow engine: pure kernels on arrays (no files, no options objects, no globals)."""

from .flow import PreparedReference, estimate, get_displacement, prepare_reference
from .params import QUALITY_PRESETS, FlowParameters, resolve_min_level
from .preprocess import gaussian_filter_video, normalize, reference_range, temporal_halo
from .warp import warp

__all__ = [
    "QUALITY_PRESETS",
    "FlowParameters",
    "PreparedReference",
    "estimate",
    "gaussian_filter_video",
    "get_displacement",
    "normalize",
    "prepare_reference",
    "reference_range",
    "resolve_min_level",
    "temporal_halo",
    "warp",
]
