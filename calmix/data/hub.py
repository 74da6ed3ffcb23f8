"""The Hugging Face hub: whether it is reachable, and datasets read through `datasets.load_dataset`."""

from __future__ import annotations

import importlib.util
import os
import socket
from functools import lru_cache
from pathlib import Path
from typing import Callable

from calmix.data.files import record_text
from calmix.errors import CalmixError


@lru_cache(maxsize=1)
def hub_reachable(timeout: float = 2.0) -> tuple[bool, str]:
    """Whether the Hugging Face hub can be reached (offline env vars, `datasets` installed, a TCP probe)."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "CALMIX_OFFLINE"):
        if os.environ.get(var, "").lower() in ("1", "true", "yes"):
            return False, f"hub disabled by {var}"
    try:
        import datasets  # noqa: F401
    except ImportError:
        return False, "hub needs the `datasets` package (pip install datasets)"
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False, f"hub unreachable (no network to {host})"
    return True, "hub"


HUB_MAX_DOCS = 50_000


def load_hub(dataset_id: str, config: str | None = None, split: str = "train", fields: tuple[str, ...] | None = None,
             template: Callable[[dict], str] | None = None, limit: int | None = HUB_MAX_DOCS,
             data_files: str | None = None) -> list[str]:
    """Documents of a hub dataset (streamed, first `limit` records) or of a local folder in the hub's layout,
    via `datasets.load_dataset`."""
    try:
        import datasets
    except ImportError:
        raise CalmixError("hub sources need the `datasets` package: pip install datasets") from None
    local = Path(dataset_id).expanduser()
    if not local.exists():
        ok, why = hub_reachable()
        if not ok:
            raise CalmixError(f"hub dataset {dataset_id} is unavailable: {why}; use a local copy (file:PATH or $CALMIX_DATA)")
    try:
        kwargs = {"data_files": data_files} if data_files else {}
        ds = datasets.load_dataset(str(local) if local.exists() else dataset_id, config, split=split or "train",
                                   streaming=not local.exists(), **kwargs)
    except Exception as err:  # noqa: BLE001 - datasets raises many types; all are user-facing here
        raise CalmixError(f"cannot load hub dataset {dataset_id} ({config or 'default'}, {split}): "
                          f"{str(err).splitlines()[0][:200]}") from None
    docs: list[str] = []
    for i, rec in enumerate(ds):
        text = template(rec) if template else record_text(rec, fields, f"{dataset_id}[{i}]")
        if text and text.strip():
            docs.append(text)
            if limit is not None and len(docs) >= limit:
                break
    return docs



def hub_rows(path: str, name: str | None, split: str) -> list[dict]:
    """Every record of one hub split (not streamed), as dicts; LookupError when `datasets` or the split is missing."""
    if importlib.util.find_spec("datasets") is None:
        raise LookupError("the `datasets` package is not installed (pip install datasets)")
    import datasets

    try:
        ds = datasets.load_dataset(path, name, split=split)
    except Exception as err:  # offline, unknown config, ...
        raise LookupError(f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}") from None
    return [dict(r) for r in ds]
