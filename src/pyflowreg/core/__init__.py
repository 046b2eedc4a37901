"""The optical-flow engine: pure kernels on arrays (no files, no options objects, no globals)."""

# PyFlowReg's registry calls (the registry is pyflowreg._runtime, imported when they run)
from .backend_registry import get_backend, is_backend_available, list_backends, register_backend
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
    "get_backend",
    "get_displacement",
    "is_backend_available",
    "list_backends",
    "normalize",
    "prepare_reference",
    "reference_range",
    "register_backend",
    "resolve_min_level",
    "temporal_halo",
    "warp",
]
