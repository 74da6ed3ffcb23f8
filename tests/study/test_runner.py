"""Runner on the tiny model: a run killed with SIGKILL mid-grid resumes with every cell done exactly once;
failed cells are recorded and retried; a folder holding another study is refused; backends come from a registry."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from calmix.cli import main
from calmix.errors import CalmixError
from calmix.study.config import load_config
from calmix.study.folder import study_status
from calmix.study.grid import build_grid, cell_key
from calmix.study.runner import BACKENDS, run_study
from calmix.study.store import Store

ROOT = Path(__file__).resolve().parents[2]


def _counts(db: Path) -> dict[str, int]:
    con = sqlite3.connect(db)
    try:
        return dict(con.execute("SELECT status, COUNT(*) FROM cells GROUP BY status").fetchall())
    finally:
        con.close()


def test_killed_run_resumes_with_every_cell_done_once(tmp_path, tiny_dir, write_tiny_config):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    cfg_path = write_tiny_config(tmp_path / "tiny.toml", tiny_dir, ["stdlib", f"file:{empty}"])
    cfg, _ = load_config(cfg_path)
    out = tmp_path / "study"
    db = out / "study.db"
    proc = subprocess.Popen([sys.executable, "-m", "calmix.cli", "study", "run", str(cfg_path), "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # kill -9 once one cell is finished and the next one has started
    killed_with = None
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                c = _counts(db)
            except sqlite3.OperationalError:
                c = {}
            if c.get("done", 0) + c.get("failed", 0) >= 1 and c.get("running", 0) == 1:
                os.kill(proc.pid, signal.SIGKILL)
                killed_with = c
                break
        time.sleep(0.05)
    proc.wait()
    assert killed_with is not None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    with Store(out) as st:
        before = {r["key"]: r for r in st.cells()}
    finished_before = {k: r["completed_at"] for k, r in before.items() if r["status"] in ("done", "failed")}
    interrupted = [k for k, r in before.items() if r["status"] == "running"]
    assert len(interrupted) == 1 and finished_before
    total = len(build_grid(cfg))
    assert len(finished_before) < total
    st = study_status(out)
    # the interrupted cell counts as pending once its run is dead
    assert st["counts"]["running"] == 0 and st["counts"]["pending"] == total - len(finished_before)

    # resume (same config): nothing finished is recomputed, nothing is lost
    summary = run_study(cfg, cfg_path.read_text(), out, progress=False)
    assert summary["status"]["pending"] == 0 and summary["status"]["running"] == 0
    with Store(out) as store:
        after = {r["key"]: r for r in store.cells()}
        runs = store.run_counts()
    keys = [cell_key(cfg, c) for c in build_grid(cfg)]
    assert set(after) == set(keys)
    for k in keys:
        if before.get(k, {}).get("status") == "done":
            assert after[k]["completed_at"] == finished_before[k] and after[k]["attempts"] == 1
    good = [c for c in build_grid(cfg) if not c.spec.startswith("file:")]
    bad = [c for c in build_grid(cfg) if c.spec.startswith("file:")]
    for c in good:
        k = cell_key(cfg, c)
        assert after[k]["status"] == "done", after[k]["error"]
        assert runs[k] == {"done": 1}  # computed exactly once
        assert after[k]["result"]["retention"]["Code"] is not None
        assert after[k]["result"]["prune"]["sparsity"] == pytest.approx(0.5, abs=0.02)
    assert after[interrupted[0]]["attempts"] == 2
    # the crashing cells are recorded with their error and did not stop the others
    for c in bad:
        row = after[cell_key(cfg, c)]
        assert row["status"] == "failed" and row["error"] and "Traceback" in row["traceback"]
        assert runs[cell_key(cfg, c)].get("done", 0) == 0

    # a rerun retries only the failed cells
    summary = run_study(cfg, cfg_path.read_text(), out, progress=False)
    assert summary["ran"] == len(bad)
    with Store(out) as store:
        runs2 = store.run_counts()
        attempts = {r["key"]: r["attempts"] for r in store.cells()}
    for c in good:
        assert runs2[cell_key(cfg, c)] == {"done": 1}
    for c in bad:
        assert runs2[cell_key(cfg, c)]["failed"] == runs[cell_key(cfg, c)]["failed"] + 1
        assert attempts[cell_key(cfg, c)] >= 2
    # calibration sets and the dense evaluation were computed once: one row per (spec, seed) and one dense row
    con = sqlite3.connect(out / "study.db")
    assert con.execute("SELECT COUNT(*) FROM dense").fetchone()[0] == 1
    assert con.execute("SELECT COUNT(*) FROM calib").fetchone()[0] == len(cfg.seeds)  # the empty file has none
    con.close()
    assert (out / "study.toml").read_text() == cfg_path.read_text()
    assert list((out / "runs").glob("run-*.json"))

    # report from the real (tiny) study
    assert main(["study", "report", str(out)]) == 0
    assert "Headline" in (out / "report.md").read_text()

    # a different study in the same folder is refused, then accepted with --force
    other = write_tiny_config(tmp_path / "other.toml", tiny_dir, ["stdlib"])
    with pytest.raises(CalmixError, match="holds a different study"):
        run_study(load_config(other)[0], other.read_text(), out, progress=False)
    assert main(["study", "run", str(other), "--out", str(out), "--quiet"]) == 2
    assert (out / "study.toml").read_text() == cfg_path.read_text()
    # --force: the stdlib cells of the new config are already in the store (same definition): nothing recomputed
    ocfg = load_config(other)[0]
    summary = run_study(ocfg, other.read_text(), out, force=True, progress=False)
    assert summary["ran"] == 0 and summary["status"]["done"] == 2
    assert (out / "study.toml").read_text() == other.read_text()


def test_backends_are_a_registry():
    assert BACKENDS.names() == ["local", "ray"]
    assert BACKENDS.get("ray").options == ("num_cpus", "address", "threads") and BACKENDS.get("local").options == ()
    with pytest.raises(CalmixError, match="unknown backend 'lcoal'.*did you mean 'local'"):
        run_study(None, "", "unused", backend="lcoal")


def test_code_tasks_are_refused_before_any_cell_without_isolation(tmp_path, grid_config, monkeypatch):
    """A study whose tasks run model-written code stops at once where the sandbox has no kernel isolation,
    unless the config opts in; the opt-in does not change the cells' keys."""
    from calmix.evals.sandbox import host
    from calmix.study.config import parse_config

    monkeypatch.setattr(host, "isolation", lambda: {"available": False, "reason": "user namespaces disabled",
                                                    "fix": "enable them"})
    code = {**grid_config, "eval": {"suite": "small", "tasks": ["humaneval"], "limit": 1}}
    cfg = parse_config(code)
    out = tmp_path / "study"
    with pytest.raises(CalmixError, match="user namespaces disabled"):
        run_study(cfg, "", out, progress=False)
    assert not (out / "study.db").exists()
    opted = parse_config({**code, "eval": {**code["eval"], "allow_unsafe_exec": True}})
    assert opted.allow_unsafe_exec and opted.fingerprint() == cfg.fingerprint()
    assert [cell_key(opted, c) for c in build_grid(opted)] == [cell_key(cfg, c) for c in build_grid(cfg)]
    with pytest.raises(CalmixError, match="`eval.allow_unsafe_exec` must be true or false"):
        parse_config({**code, "eval": {**code["eval"], "allow_unsafe_exec": "yes"}})
