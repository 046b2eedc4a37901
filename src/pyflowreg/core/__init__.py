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
    "is_backend_available",
    "list_backends",
    "normalize",
    "prepare_reference",
    "reference_range",
    "resolve_min_level",
    "temporal_halo",
    "warp",
]


def list_backends() -> list[str]:
    """Names of the flow backends usable here (PyFlowReg's name; the registry is
    :func:`pyflowreg._runtime.get_runtime`, imported only when called)."""
    from .._runtime import get_runtime

    return get_runtime().list_flow_backends(available_only=True)


def is_backend_available(name: str) -> bool:
    """Whether flow backend ``name`` is registered and usable here."""
    from .._runtime import get_runtime

    return name in get_runtime().list_flow_backends(available_only=True)
