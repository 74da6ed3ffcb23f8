"""The study's results store: one SQLite file, one transaction per cell, so a cell is fully recorded or absent."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator

from calmix.errors import CalmixError
from calmix.runrecord import to_jsonable

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS calib (
    key TEXT PRIMARY KEY, model TEXT, spec TEXT, seed INTEGER, nsamples INTEGER, seqlen INTEGER,
    data BLOB, card TEXT, metrics TEXT, seconds REAL, created_at TEXT);
CREATE TABLE IF NOT EXISTS dense (
    key TEXT PRIMARY KEY, model TEXT, suite TEXT, info TEXT, result TEXT, seconds REAL, created_at TEXT);
CREATE TABLE IF NOT EXISTS cells (
    key TEXT PRIMARY KEY, name TEXT, strategy TEXT, kind TEXT, spec TEXT, pruner TEXT, sparsity REAL,
    pattern TEXT, seed INTEGER, calib_key TEXT, dense_key TEXT,
    status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
    started_at TEXT, completed_at TEXT, seconds REAL, result TEXT, error TEXT, traceback TEXT);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, cell_key TEXT NOT NULL, status TEXT NOT NULL,
    started_at TEXT, finished_at TEXT, seconds REAL, host TEXT, pid INTEGER);
"""

CELL_COLUMNS = ("key", "name", "strategy", "kind", "spec", "pruner", "sparsity", "pattern", "seed", "calib_key",
                "dense_key", "status", "attempts", "started_at", "completed_at", "seconds", "result", "error",
                "traceback")


class StoreError(CalmixError):
    """The store could not be written or read (disk full, read-only, corrupt): the run stops, nothing is lost."""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _dumps(obj: Any) -> str:
    return json.dumps(to_jsonable(obj))


class Store:
    """SQLite store of a study folder: calibration sets, dense evaluations, cells and a log of every attempt."""

    FILENAME = "study.db"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if self.path.is_dir():
            self.path = self.path / self.FILENAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._guard("open"):
            self.conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self.conn.row_factory = sqlite3.Row
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.executescript(_SCHEMA)
            if self.get_meta("schema_version") is None:
                self.set_meta("schema_version", SCHEMA_VERSION)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Turn SQLite I/O failures (disk full, read-only, corrupt) into one-line CalmixErrors."""
        try:
            yield
        except sqlite3.OperationalError as err:
            msg = str(err)
            if "full" in msg:
                raise StoreError(f"disk full while writing {self.path} ({what}): free space and rerun; "
                                  "finished cells are kept and the run resumes") from None
            raise StoreError(f"cannot write the study store {self.path} ({what}): {msg}") from None
        except sqlite3.DatabaseError as err:
            raise StoreError(f"the study store {self.path} is unreadable ({err}): use another --out") from None

    @contextlib.contextmanager
    def transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """One atomic write: everything inside is committed together or not at all."""
        with self._guard(what):
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self.conn.execute("ROLLBACK")
                raise

    # meta -------------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else json.loads(row["value"])

    def set_meta(self, key: str, value: Any) -> None:
        with self.transaction(f"meta {key}") as c:
            c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, _dumps(value)))

    # calibration sets -------------------------------------------------------------------------------
    def get_calib(self, key: str) -> dict | None:
        """A stored calibration set: {'data': bytes, 'card': dict, 'metrics': dict, ...} or None."""
        row = self.conn.execute("SELECT * FROM calib WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        out = dict(row)
        out["card"] = json.loads(out["card"] or "{}")
        out["metrics"] = json.loads(out["metrics"] or "{}")
        return out

    def put_calib(self, key: str, info: dict, data: bytes, card: dict, metrics: dict, seconds: float) -> None:
        with self.transaction(f"calibration set {info.get('spec')}") as c:
            c.execute("INSERT OR REPLACE INTO calib(key, model, spec, seed, nsamples, seqlen, data, card, metrics, "
                      "seconds, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                      (key, info.get("model"), info.get("spec"), info.get("seed"), info.get("nsamples"),
                       info.get("seqlen"), sqlite3.Binary(data), _dumps(card), _dumps(metrics), seconds, _now()))

    def calib_metrics(self) -> dict[str, dict]:
        """Set-level metrics of every stored calibration set, by key."""
        rows = self.conn.execute("SELECT key, metrics FROM calib").fetchall()
        return {r["key"]: json.loads(r["metrics"] or "{}") for r in rows}

    # dense evaluations ------------------------------------------------------------------------------
    def get_dense(self, key: str) -> dict | None:
        row = self.conn.execute("SELECT * FROM dense WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        out = dict(row)
        out["result"] = json.loads(out["result"])
        out["info"] = json.loads(out["info"] or "{}")
        return out

    def put_dense(self, key: str, info: dict, result: dict, seconds: float) -> None:
        with self.transaction("dense evaluation") as c:
            c.execute("INSERT OR REPLACE INTO dense(key, model, suite, info, result, seconds, created_at) "
                      "VALUES (?,?,?,?,?,?,?)",
                      (key, info.get("model"), info.get("suite"), _dumps(info), _dumps(result), seconds, _now()))

    # cells ------------------------------------------------------------------------------------------
    def start_cell(self, key: str, cell: dict, calib_key: str, dense_key: str) -> None:
        """Record that an attempt of a cell begins (attempts + 1); a finished cell is never restarted."""
        with self.transaction(f"start {cell.get('name')}") as c:
            c.execute("INSERT OR IGNORE INTO cells(key, name, strategy, kind, spec, pruner, sparsity, pattern, seed, "
                      "calib_key, dense_key) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                      (key, cell["name"], cell["strategy"], cell["kind"], cell["spec"], cell["pruner"],
                       cell["sparsity"], cell["pattern"], cell["seed"], calib_key, dense_key))
            cur = c.execute("UPDATE cells SET status='running', attempts=attempts+1, started_at=? "
                            "WHERE key=? AND status!='done'", (_now(), key))
            if cur.rowcount == 0:
                raise CalmixError(f"cell {cell.get('name')} is already done: it is not recomputed")

    def finish_cell(self, key: str, result: dict, seconds: float) -> None:
        """Store a cell's full result and log the run, in one transaction."""
        with self.transaction("finish cell") as c:
            c.execute("UPDATE cells SET status='done', completed_at=?, seconds=?, result=?, error=NULL, "
                      "traceback=NULL WHERE key=?", (_now(), seconds, _dumps(result), key))
            self._log(c, key, "done", seconds)

    def fail_cell(self, key: str, error: str, traceback: str, seconds: float) -> None:
        """Store a cell's failure (one line + traceback) and log the run, in one transaction."""
        with self.transaction("record failed cell") as c:
            c.execute("UPDATE cells SET status='failed', completed_at=?, seconds=?, error=?, traceback=? "
                      "WHERE key=?", (_now(), seconds, error, traceback, key))
            self._log(c, key, "failed", seconds)

    def _log(self, c: sqlite3.Connection, key: str, status: str, seconds: float) -> None:
        row = c.execute("SELECT started_at FROM cells WHERE key=?", (key,)).fetchone()
        c.execute("INSERT INTO runs(cell_key, status, started_at, finished_at, seconds, host, pid) "
                  "VALUES (?,?,?,?,?,?,?)", (key, status, row["started_at"] if row else None, _now(), seconds,
                                            socket.gethostname(), os.getpid()))

    def put_cell(self, key: str, cell: dict, calib_key: str, dense_key: str, result: dict, seconds: float) -> None:
        """Start and finish a cell at once (fixtures, imports of results computed elsewhere)."""
        self.start_cell(key, cell, calib_key, dense_key)
        self.finish_cell(key, result, seconds)

    def cells(self, keys: list[str] | None = None) -> list[dict]:
        """Rows of the cells table (result parsed), optionally only those with the given keys."""
        rows = [dict(r) for r in self.conn.execute("SELECT * FROM cells").fetchall()]
        if keys is not None:
            wanted = set(keys)
            rows = [r for r in rows if r["key"] in wanted]
        for r in rows:
            r["result"] = json.loads(r["result"]) if r["result"] else None
        return rows

    def statuses(self) -> dict[str, str]:
        """Status of every recorded cell, by key."""
        return {r[0]: r[1] for r in self.conn.execute("SELECT key, status FROM cells").fetchall()}

    def run_counts(self) -> dict[str, dict[str, int]]:
        """Finished attempts per cell and status, from the run log: {key: {'done': n, 'failed': m}}."""
        out: dict[str, dict[str, int]] = {}
        for key, status, n in self.conn.execute("SELECT cell_key, status, COUNT(*) FROM runs GROUP BY 1, 2"):
            out.setdefault(key, {})[status] = n
        return out
