"""The sigma engine, one optimiser of per-unit noise scales for pixels, words and points.

This facade is the public API; the modules behind it are ``engine`` (:func:`optimize_sigma`),
``presets`` (:class:`SigmaConfig`, :func:`config`, the named presets), ``adapters`` (units x feature
sources) and ``result`` (:class:`SigmaResult`, the read-out).
"""
from .adapters import AxisUnits, CallableFeatures, GridUnits, ModuleFeatures, StagedFeatures  # noqa: F401
from .presets import HALF_LOG_2PIE, PRESETS, READOUTS, SigmaConfig, config  # noqa: F401
from .result import SigmaResult  # noqa: F401
from .engine import optimize_sigma  # noqa: F401

__all__ = ["SigmaConfig", "config", "PRESETS", "optimize_sigma", "SigmaResult", "GridUnits", "AxisUnits",
           "ModuleFeatures", "StagedFeatures", "CallableFeatures", "HALF_LOG_2PIE", "READOUTS"]
