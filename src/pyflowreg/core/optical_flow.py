"""PyFlowReg's ``pyflowreg.core.optical_flow``: its per-pair entry point with its documented
signature, positional order and defaults, on this package's engine
(:func:`pyflowreg.core.flow.get_displacement`).
"""

from __future__ import annotations

import inspect

import numpy as np

from .flow import get_displacement as _get_displacement
from .params import FlowParameters

__all__ = ["flow_parameters", "get_displacement"]

#: PyFlowReg's names of the constancy assumptions, and the engine's.
_CONSTANCY = {"gc": "gc", "gradient": "gc", "gray": "gray", "brightness": "gray"}


def flow_parameters(
    alpha=(2, 2),
    update_lag=5,
    iterations=50,
    min_level=0,
    levels=50,
    eta=0.8,
    a_smooth=1.0,
    a_data=0.45,
    const_assumption="gc",
) -> FlowParameters:
    """The engine's :class:`~pyflowreg.core.params.FlowParameters` from PyFlowReg's solver
    keywords and defaults (``const_assumption``: ``"gc"``/``"gradient"`` or
    ``"gray"``/``"brightness"``; census, ``"cs"``, is not implemented)."""
    key = str(const_assumption).lower()
    if key not in _CONSTANCY:
        raise ValueError(
            f"const_assumption must be one of {sorted(_CONSTANCY)}, got {const_assumption!r}"
        )
    return FlowParameters(
        alpha=alpha,
        levels=int(levels),
        min_level=int(min_level),
        eta=float(eta),
        iterations=int(iterations),
        update_lag=int(update_lag),
        a_data=float(a_data),
        a_smooth=float(a_smooth),
        constancy_assumption=_CONSTANCY[key],
    )


#: The keywords :func:`flow_parameters` takes.
PARAMETER_NAMES = tuple(inspect.signature(flow_parameters).parameters)


def get_displacement(
    fixed,
    moving,
    alpha=(2, 2),
    update_lag=5,
    iterations=50,
    min_level=0,
    levels=50,
    eta=0.8,
    a_smooth=1.0,
    a_data=0.45,
    const_assumption="gc",
    uv=None,
    weight=None,
    level_solver_backend=None,
) -> np.ndarray:
    """Displacement field ``w`` (H, W, 2), float64, that aligns ``moving`` to ``fixed``
    (``w[..., 0]`` = u along x, ``w[..., 1]`` = v along y).

    PyFlowReg's signature and defaults (``alpha=(2, 2)``, ``levels=50``, float64 result; see
    :func:`flow_parameters`); the solve is :func:`pyflowreg.core.flow.get_displacement`'s (in
    float32). ``level_solver_backend`` must be None: other level solvers are chosen here with
    ``OFOptions(flow_backend=...)``.
    """
    if level_solver_backend is not None:
        raise ValueError(
            "level_solver_backend is not supported; choose a solver with "
            "OFOptions(flow_backend='flowreg' | 'flowreg_torch' | 'flowreg_cuda')"
        )
    p = flow_parameters(
        alpha, update_lag, iterations, min_level, levels, eta, a_smooth, a_data, const_assumption
    )
    w = _get_displacement(fixed, moving, weight=weight, uv=uv, **p.solver_keywords())
    return np.asarray(w, dtype=np.float64)
