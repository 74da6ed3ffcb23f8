"""Where calmix finds shared data and keeps its caches."""

from __future__ import annotations

import os
from pathlib import Path


def shared_data() -> Path | None:
    """Root of the real offline datasets: $CALMIX_DATA, else ../shared/data beside the checkout, else None.

    A CALMIX_DATA that names a missing folder means "no data root" (it never falls back to ../shared)."""
    env = os.environ.get("CALMIX_DATA")
    if env:
        p = Path(env).expanduser()
        return p if p.is_dir() else None
    here = Path(__file__).resolve().parent.parent
    for cand in (here.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if cand.is_dir():
            return cand
    return None


def cache_dir(*parts: str) -> Path:
    """A calmix cache folder ($CALMIX_CACHE or ~/.cache/calmix), created on demand."""
    root = Path(os.environ.get("CALMIX_CACHE", Path.home() / ".cache" / "calmix")).expanduser()
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
