"""Stable fingerprints for cache keys: one canonical JSON encoding, one hash."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys: equal objects give equal text."""
    return json.dumps(obj, sort_keys=True)


def digest(obj: Any, length: int = 20) -> str:
    """Hex sha256 of obj's canonical JSON (a str is hashed as it is), truncated to length characters."""
    text = obj if isinstance(obj, str) else canonical_json(obj)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def digest_bytes(chunks: Iterable[bytes], length: int = 16) -> str:
    """Hex sha256 of the concatenated byte chunks (e.g. weight samples), truncated to length characters."""
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()[:length]


def seed_from(*parts: Any) -> int:
    """A 63-bit integer seed derived from parts (joined with '|'), stable across runs and machines."""
    text = "|".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)


def file_stamp(path: str | Path, length: int = 12) -> str:
    """Cheap identity of a file: its resolved path, size and mtime (not its bytes)."""
    p = Path(path)
    st = p.stat()
    return digest(f"{p.resolve()}:{st.st_size}:{int(st.st_mtime)}", length)
