"""The study folder: its lock, its saved config (study.toml) and the status of its grid in the store."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tomllib
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

from calmix.errors import CalmixError
from calmix.runrecord import check_writable_dir, hardware, write_json_atomic, write_text_atomic
from calmix.study.config import StudyConfig, parse_config
from calmix.study.grid import build_grid, cell_key
from calmix.study.store import Store

CONFIG_FILE = "study.toml"
LOCK_FILE = ".lock"


@contextlib.contextmanager
def study_lock(out: Path) -> Iterator[None]:
    """Exclusive lock on a study folder (released by the OS if the process dies)."""
    fh = open(out / LOCK_FILE, "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CalmixError(f"another `calmix study run` is using {out}: wait for it or use another --out") from None
        yield
    finally:
        fh.close()


def is_locked(out: str | os.PathLike) -> bool:
    """Whether a run currently holds the study folder's lock."""
    path = Path(out) / LOCK_FILE
    if not path.exists():
        return False
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


def load_study_config(out: str | os.PathLike) -> StudyConfig:
    """The config saved in a study folder."""
    path = Path(out) / CONFIG_FILE
    if not path.is_file():
        raise CalmixError(f"{out} holds no study ({CONFIG_FILE} missing): run `calmix study run CONFIG --out {out}`")
    try:
        return parse_config(tomllib.loads(path.read_text()), str(path))
    except tomllib.TOMLDecodeError as err:
        raise CalmixError(f"{path} is not valid TOML: {err}") from None


def prepare_folder(cfg: StudyConfig, text: str, out: Path, force: bool) -> Store:
    """Create or reopen a study folder; refuse one that holds a different study unless force."""
    check_writable_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    existing = out / CONFIG_FILE
    store = Store(out)
    old_fp = store.get_meta("fingerprint")
    if old_fp is None and existing.is_file():
        with contextlib.suppress(CalmixError):
            old_fp = load_study_config(out).fingerprint()
    new_fp = cfg.fingerprint()
    if old_fp is not None and old_fp != new_fp and not force:
        store.close()
        raise CalmixError(f"{out} holds a different study (fingerprint {old_fp}, this config {new_fp}): "
                          "use another --out, or pass --force to switch it to this config (finished cells "
                          "stay in the store; the report shows only this config's cells)")
    if old_fp != new_fp or not existing.is_file():
        write_text_atomic(existing, text)
        store.set_meta("fingerprint", new_fp)
        store.set_meta("config", asdict(cfg))
        write_json_atomic(out / "fingerprint.json", {"fingerprint": new_fp, "name": cfg.name})
    record_hardware(store)
    return store


HARDWARE_META = "hardware"


def record_hardware(store: Store) -> list[dict]:
    """Add this machine to the store's list of machines that computed its cells (once per distinct machine)."""
    seen = list(store.get_meta(HARDWARE_META) or [])
    here = hardware()
    if here not in seen:
        seen.append(here)
        store.set_meta(HARDWARE_META, seen)
    return seen


def grid_status(cfg: StudyConfig, store: Store, running_alive: bool = False) -> dict[str, list]:
    """Cells of the config grouped by status: done, failed, pending (never started or interrupted), running."""
    statuses = store.statuses()
    out: dict[str, list] = {"done": [], "failed": [], "pending": [], "running": []}
    for cell in build_grid(cfg):
        st = statuses.get(cell_key(cfg, cell), "pending")
        if st == "running" and not running_alive:
            st = "pending"  # the run that started it died: it is redone
        out[st].append(cell)
    return out


def study_status(out: str | os.PathLike) -> dict:
    """Done / pending / failed / running cells of a study folder, with the errors of failed cells."""
    out = Path(out)
    cfg = load_study_config(out)
    alive = is_locked(out)
    with Store(out) as store:
        st = grid_status(cfg, store, running_alive=alive)
        rows = {r["key"]: r for r in store.cells()}
        runs = store.run_counts()
        failed = [{"cell": c.name, "error": rows[cell_key(cfg, c)]["error"],
                   "attempts": rows[cell_key(cfg, c)]["attempts"]} for c in st["failed"]]
        done_rows = [rows[cell_key(cfg, c)] for c in st["done"]]
        secs = [r["seconds"] for r in done_rows if r["seconds"]]
    return {"name": cfg.name, "total": sum(len(v) for v in st.values()),
            "counts": {k: len(v) for k, v in st.items()}, "failed": failed, "running_now": alive,
            "mean_cell_seconds": sum(secs) / len(secs) if secs else None,
            "runs_per_cell": {k: v for k, v in runs.items()}}
