"""One resolver for every named dataset: the first usable place, local file before installed package before hub."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from calmix.errors import CalmixError

ORIGINS = ("local", "package", "hub")  # the order in which places are tried


class Unavailable(CalmixError, LookupError):
    """No place of a dataset is usable here; `reasons` says why, one entry per place tried."""

    def __init__(self, reasons: list[str]):
        super().__init__("; ".join(reasons) or "no origin defined")
        self.reasons = reasons


@dataclass(frozen=True)
class Place:
    """One place a dataset can come from: its origin, a cheap test of whether it is usable here, and its loader.

    check returns (True, where it is) or (False, why not). A loader that finds the data missing after all raises
    LookupError; the resolver then records `label: message` and moves on to the next place."""

    origin: str  # one of ORIGINS
    check: Callable[[], tuple[bool, str]]
    load: Callable[[], Any]
    label: str = ""

    def __post_init__(self):
        if self.origin not in ORIGINS:
            raise ValueError(f"unknown origin {self.origin!r}: use one of {', '.join(ORIGINS)}")


def ordered(places: Sequence[Place]) -> list[Place]:
    """Places in resolution order (local, package, hub); places of one origin keep their given order."""
    return sorted(places, key=lambda p: ORIGINS.index(p.origin))


def pick(places: Sequence[Place]) -> tuple[Place | None, str]:
    """The first usable place with where it is, or (None, why each place is not usable)."""
    why = []
    for place in ordered(places):
        ok, msg = place.check()
        if ok:
            return place, msg
        why.append(msg)
    return None, "; ".join(why) or "no origin defined"


def load(places: Sequence[Place]) -> tuple[Place, Any]:
    """(place, its data) from the first usable place whose loader succeeds; Unavailable lists every reason."""
    why = []
    for place in ordered(places):
        ok, msg = place.check()
        if not ok:
            why.append(msg)
            continue
        try:
            return place, place.load()
        except LookupError as err:
            why.append(f"{place.label or place.origin}: {err}")
    raise Unavailable(why)
