"""Store: a cell is fully recorded or absent, finished cells are never restarted, disk full loses nothing."""

from __future__ import annotations

import sqlite3

import pytest

from calmix.errors import CalmixError
from calmix.study.store import Store, StoreError

CELL = {"name": "c", "strategy": "s", "kind": "source", "spec": "s", "pruner": "sparsegpt", "sparsity": 0.5,
        "pattern": "unstructured", "seed": 0}


def test_cell_lifecycle_and_run_log(tmp_path):
    with Store(tmp_path) as st:
        st.start_cell("k1", CELL, "ck", "dk")
        assert st.statuses() == {"k1": "running"}
        st.fail_cell("k1", "ValueError: x", "tb", 1.0)
        st.start_cell("k1", CELL, "ck", "dk")  # a failed cell is retried
        st.finish_cell("k1", {"retention": {"Total": 50.0}}, 2.0)
        row = st.cells(["k1"])[0]
        assert row["status"] == "done" and row["attempts"] == 2 and row["result"]["retention"]["Total"] == 50.0
        assert row["error"] is None
        assert st.run_counts() == {"k1": {"failed": 1, "done": 1}}
        with pytest.raises(CalmixError, match="already done"):
            st.start_cell("k1", CELL, "ck", "dk")
        assert st.cells(["k1"])[0]["attempts"] == 2
    # reopened: everything is still there
    with Store(tmp_path / "study.db") as st:
        assert st.statuses() == {"k1": "done"}


def test_transaction_is_all_or_nothing(tmp_path):
    with Store(tmp_path) as st:
        st.start_cell("k1", CELL, "ck", "dk")
        with pytest.raises(RuntimeError):
            with st.transaction("test") as c:
                c.execute("UPDATE cells SET status='done', result='{}' WHERE key='k1'")
                c.execute("INSERT INTO runs(cell_key, status) VALUES ('k1', 'done')")
                raise RuntimeError("crash between the two writes")
        assert st.statuses() == {"k1": "running"} and st.run_counts() == {}


def test_calib_and_dense_round_trip(tmp_path):
    with Store(tmp_path) as st:
        st.put_calib("ck", {"model": "m", "spec": "stdlib", "seed": 0, "nsamples": 2, "seqlen": 4}, b"\x00\x01",
                     {"source": "stdlib"}, {"ppl": 12.5, "agg4": float("nan")}, 0.5)
        got = st.get_calib("ck")
        assert got["data"] == b"\x00\x01" and got["card"] == {"source": "stdlib"}
        assert got["metrics"] == {"ppl": 12.5, "agg4": None}
        assert st.get_calib("nope") is None
        st.put_dense("dk", {"model": "m", "suite": "small"}, {"dimensions": {"Math": 0.3}}, 3.0)
        assert st.get_dense("dk")["result"] == {"dimensions": {"Math": 0.3}}


def test_disk_full_is_a_clear_error_and_loses_nothing(tmp_path):
    with Store(tmp_path) as st:
        st.start_cell("k1", CELL, "ck", "dk")
        st.finish_cell("k1", {"retention": {"Total": 1.0}}, 1.0)
        pages = st.conn.execute("PRAGMA page_count").fetchone()[0]
        st.conn.execute(f"PRAGMA max_page_count={pages}")  # the database cannot grow: SQLITE_FULL
        with pytest.raises(StoreError, match="disk full"):
            st.put_calib("big", {"spec": "x"}, b"\x00" * 200_000, {}, {}, 1.0)
        assert st.get_calib("big") is None
        assert st.statuses() == {"k1": "done"}
    with Store(tmp_path) as st:
        assert st.cells(["k1"])[0]["result"]["retention"]["Total"] == 1.0


def test_unreadable_store_is_a_clear_error(tmp_path):
    (tmp_path / "study.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="unreadable"):
        Store(tmp_path)
    assert isinstance(sqlite3.DatabaseError("x"), Exception)
