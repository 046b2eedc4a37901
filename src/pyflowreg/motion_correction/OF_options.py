"""PyFlowReg's module path of the options: ``OFOptions`` and its enums.

>>> from pyflowreg.motion_correction.OF_options import OFOptions, OutputFormat, QualitySetting
>>> opts = OFOptions(output_format=OutputFormat.TIFF, quality_setting=QualitySetting.FAST)
>>> opts.output_format == "TIFF", opts.effective_min_level
(True, 6)

The names are imports of :mod:`pyflowreg.motion_correction.options` and
:mod:`pyflowreg.motion_correction._compat`; nothing is defined here.
"""

from ._compat import (
    ChannelNormalization,
    ConstancyAssumption,
    InterpolationMethod,
    OutputFormat,
    QualitySetting,
)
from .options import OFOptions

__all__ = [
    "ChannelNormalization",
    "ConstancyAssumption",
    "InterpolationMethod",
    "OFOptions",
    "OutputFormat",
    "QualitySetting",
]
