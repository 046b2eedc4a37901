"""Synthetic 2-photon data with ground-truth motion, for tests, demos and benchmarks.

>>> from pyflowreg.datasets import make_recording
>>> rec = make_recording(10, (64, 64), seed=0)
>>> rec.video.shape, rec.flow.shape
((10, 64, 64, 1), (10, 64, 64, 2))
"""

from pyflowreg.datasets._sessions import SyntheticSessions, make_sessions
from pyflowreg.datasets.synthetic import (
    SyntheticRecording,
    displace,
    make_pair,
    make_recording,
)

__all__ = [
    "SyntheticRecording",
    "SyntheticSessions",
    "displace",
    "make_pair",
    "make_recording",
    "make_sessions",
]
