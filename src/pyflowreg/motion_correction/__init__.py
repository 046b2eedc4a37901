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
from ._preflight import InsufficientSpaceError
from ._run_folder import OutputCheckError, OutputFolderInUseError
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
from .runs import IncompleteRunError, Run, RunVerificationError, load_run

__all__ = [
    "BatchMotionCorrector",
    "BatchResult",
    "ChannelNormalization",
    "ConstancyAssumption",
    "FlowRegLive",
    "IncompleteRunError",
    "InsufficientSpaceError",
    "InterpolationMethod",
    "OFOptions",
    "OutputCheckError",
    "OutputFolderInUseError",
    "OutputFormat",
    "QualitySetting",
    "RegistrationConfig",
    "RegistrationError",
    "RegistrationResult",
    "Run",
    "RunVerificationError",
    "compensate_arr",
    "compensate_recording",
    "load_run",
]
