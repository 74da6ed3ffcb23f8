"""Calibration data: named sources, set building and mixing, provenance cards."""

from calmix.calib.calibset import CalibSet
from calmix.calib.sources import SOURCES, Source, get_source


def build_calib(*args, **kwargs):
    """Build (or load from cache) a calibration set from a spec string; see calmix.calib.build."""
    from calmix.calib.build import build_calib as _build

    return _build(*args, **kwargs)


def parse_spec(spec: str):
    """Validate a calibration spec string early (CalmixError on bad input); see calmix.calib.build."""
    from calmix.calib.build import parse_spec as _parse

    return _parse(spec)


__all__ = ["CalibSet", "build_calib", "parse_spec", "get_source", "SOURCES", "Source"]
