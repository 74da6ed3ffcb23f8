"""Calibration data: named sources, set building and mixing, provenance cards."""

from calmix.calib.calibset import CalibSet
from calmix.calib.sources import SOURCES, Source, get_source


def build_calib(*args, **kwargs):
    """Build (or load from cache) a calibration set from a spec string; see calmix.calib.build."""
    from calmix.calib.build import build_calib as _build

    return _build(*args, **kwargs)


__all__ = ["CalibSet", "build_calib", "get_source", "SOURCES", "Source"]
