"""Model parameters of the variational optical-flow solver (see ALGORITHM.md)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal

import numpy as np

#: Finest pyramid level solved for each named quality preset.
QUALITY_PRESETS: dict[str, int] = {"quality": 0, "balanced": 4, "fast": 6}

ConstancyAssumption = Literal["gc", "gray"]


def resolve_min_level(quality_setting: str, min_level: int | None = None) -> int:
    """Finest level to solve for a preset name, or ``min_level`` for ``"custom"``.

    Parameters
    ----------
    quality_setting : {"quality", "balanced", "fast", "custom"}
    min_level : int, optional
        Required with ``"custom"``; ignored otherwise.
    """
    if quality_setting == "custom":
        if min_level is None:
            raise ValueError('quality_setting "custom" needs min_level, got None')
        return int(min_level)
    try:
        return QUALITY_PRESETS[quality_setting]
    except KeyError:
        valid = [*QUALITY_PRESETS, "custom"]
        raise ValueError(
            f"quality_setting must be one of {valid}, got {quality_setting!r}"
        ) from None


@dataclass(frozen=True)
class FlowParameters:
    """Parameters of one optical-flow solve (picklable, hashable, validated).

    Attributes
    ----------
    alpha : (float, float)
        Smoothness weights ``(alpha_x, alpha_y)``; a scalar means both.
    levels : int
        Maximum number of pyramid levels.
    min_level : int
        Finest level solved (0 = full resolution); the flow is upsampled above it.
    eta : float
        Downsampling factor between levels, in (0, 1).
    iterations : int
        Solver sweeps per level.
    update_lag : int
        Sweeps between refreshes of the robust (lagged) weights.
    a_data, a_smooth : float
        Exponents of the generalised Charbonnier penalties, in (0, 1].
    constancy_assumption : {"gc", "gray"}
        Gradient constancy (default) or gray-value constancy data term.
    """

    alpha: tuple[float, float] = (1.5, 1.5)
    levels: int = 100
    min_level: int = 0
    eta: float = 0.8
    iterations: int = 50
    update_lag: int = 5
    a_data: float = 0.45
    a_smooth: float = 1.0
    constancy_assumption: ConstancyAssumption = "gc"
    omega: float = field(default=1.95, repr=False)

    def __post_init__(self) -> None:
        alpha = self.alpha
        if np.isscalar(alpha):
            alpha = (float(alpha), float(alpha))  # type: ignore[arg-type]
        alpha = tuple(float(a) for a in alpha)  # type: ignore[union-attr]
        if len(alpha) != 2:
            raise ValueError(f"alpha must be a scalar or a pair (alpha_x, alpha_y), got {alpha}")
        if not all(np.isfinite(a) and a > 0 for a in alpha):
            raise ValueError(f"alpha must be > 0 and finite, got {alpha}")
        object.__setattr__(self, "alpha", alpha)
        _check_int("levels", self.levels, 1)
        _check_int("min_level", self.min_level, 0)
        _check_int("iterations", self.iterations, 1)
        _check_int("update_lag", self.update_lag, 1)
        if not (0.0 < float(self.eta) < 1.0):
            raise ValueError(f"eta must be in (0, 1), got {self.eta}")
        for name in ("a_data", "a_smooth"):
            value = float(getattr(self, name))
            if not (0.0 < value <= 1.0):
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        if self.constancy_assumption not in ("gc", "gray"):
            raise ValueError(
                "constancy_assumption must be one of ['gc', 'gray'], "
                f"got {self.constancy_assumption!r}"
            )
        if not (0.0 < float(self.omega) < 2.0):
            raise ValueError(f"omega must be in (0, 2), got {self.omega}")

    def solver_keywords(self) -> dict:
        """The solver parameters as the keyword arguments of
        :func:`pyflowreg.core.flow.get_displacement` (every field but ``omega``)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "omega"}

    @classmethod
    def from_quality(cls, quality_setting: str = "quality", **overrides) -> FlowParameters:
        """Parameters for a preset name, with keyword overrides."""
        min_level = resolve_min_level(quality_setting, overrides.pop("min_level", None))
        return cls(min_level=min_level, **overrides)


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
