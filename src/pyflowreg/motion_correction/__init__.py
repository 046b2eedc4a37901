"""The motion-correction pipeline: options, file-to-file and in-memory registration.

>>> from pyflowreg.motion_correction import OFOptions, compensate_recording
>>> from pyflowreg.motion_correction.compensate_recording import RegistrationConfig
>>> options = OFOptions(input_file="rec.h5", output_path="results", quality_setting="fast")
>>> compensate_recording(options, config=RegistrationConfig(n_jobs=4))  # doctest: +SKIP
"""

from ._compat import (
    ChannelNormalization,
    ConstancyAssumption,
    InterpolationMethod,
    OutputFormat,
    QualitySetting,
)
from .compensate_arr import compensate_arr
from .compensate_recording import (
    BatchMotionCorrector,
    BatchResult,
    RegistrationConfig,
    RegistrationError,
    RegistrationResult,
    compensate_recording,
)
from .live import FlowRegLive
from .options import OFOptions

__all__ = [
    "BatchMotionCorrector",
    "BatchResult",
    "ChannelNormalization",
    "ConstancyAssumption",
    "FlowRegLive",
    "InterpolationMethod",
    "OFOptions",
    "OutputFormat",
    "QualitySetting",
    "RegistrationConfig",
    "RegistrationError",
    "RegistrationResult",
    "compensate_arr",
    "compensate_recording",
]
