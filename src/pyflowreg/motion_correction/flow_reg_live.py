"""PyFlowReg's module path of the online corrector.

>>> from pyflowreg.motion_correction.flow_reg_live import FlowRegLive

An import of :class:`pyflowreg.motion_correction.live.FlowRegLive`; nothing is defined here.
"""

from .live import FlowRegLive, causal_temporal_weights

__all__ = ["FlowRegLive", "causal_temporal_weights"]
