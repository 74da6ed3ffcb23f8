"""Calibration data: named sources, spec strings, set building and mixing, provenance cards."""

from calmix.calib.build import build_calib
from calmix.calib.calibset import CalibSet
from calmix.calib.sources import SOURCES, Source, get_source
from calmix.calib.spec import parse_spec

__all__ = ["CalibSet", "build_calib", "parse_spec", "get_source", "SOURCES", "Source"]
