"""The one resolver: local file before installed package before hub, for calibration sources and eval splits alike.
The hub is a local folder in the hub's layout (datasets.load_dataset reads it), never a mock."""

from __future__ import annotations

import json

import pytest

from calmix.calib.sources import HubRef, Source
from calmix.data import resolve
from calmix.errors import CalmixError
from calmix.evals.records import Hub
from calmix.evals.records import Source as EvalSource
from calmix.evals.records import load_source


@pytest.fixture()
def hub_folder(tmp_path):
    """A dataset folder in the hub's layout: data/train-*.jsonl and data/test-*.jsonl."""
    pytest.importorskip("datasets")
    root = tmp_path / "org_data"
    (root / "data").mkdir(parents=True)
    for split in ("train", "test"):
        (root / "data" / f"{split}-00000-of-00001.jsonl").write_text(
            "".join(json.dumps({"text": f"hub {split} {i}", "v": i}) + "\n" for i in range(3)))
    return root


def test_places_are_tried_local_then_package_then_hub():
    calls = []

    def place(origin, ok, data=None, missing=False):
        def load():
            calls.append(origin)
            if missing:
                raise LookupError(f"{origin} data missing")
            return data
        return resolve.Place(origin, lambda: (ok, f"{origin} {'here' if ok else 'absent'}"), load)

    places = [place("hub", True, "h"), place("package", True, "p"), place("local", True, "l")]
    assert resolve.pick(places)[0].origin == "local" and resolve.load(places)[1] == "l"
    places = [place("hub", True, "h"), place("package", True, missing=True), place("local", False)]
    assert resolve.pick(places) == (places[1], "package here")
    assert resolve.load(places) == (places[0], "h") and calls[-2:] == ["package", "hub"]
    with pytest.raises(resolve.Unavailable) as err:
        resolve.load([place("local", False), place("package", True, missing=True)])
    assert err.value.reasons == ["local absent", "package: package data missing"]
    assert resolve.pick([]) == (None, "no origin defined")
    with pytest.raises(ValueError, match="unknown origin"):
        resolve.Place("web", lambda: (True, ""), lambda: None)


def test_calibration_source_order(tmp_path, hub_folder, monkeypatch):
    monkeypatch.setenv("CALMIX_OFFLINE", "1")
    (tmp_path / "root" / "calib").mkdir(parents=True)
    local = tmp_path / "root" / "calib" / "docs.jsonl"
    local.write_text('{"text": "local document"}\n')
    package_here = [True]
    src = Source("t", "General", "test source", local=("calib/docs.jsonl",), root=tmp_path / "root",
                 package="calmix-test", reader=lambda: ["package document"],
                 package_check=lambda: (package_here[0], "test package" if package_here[0] else "test package absent"),
                 package_version_fn=lambda: "1", hub=HubRef(str(hub_folder), None, "train", ("text",)))
    assert src.origins() == ["local", "package", "hub"]
    assert (src.origin(), src.available()) == ("local", (True, "local calib/docs.jsonl"))
    assert src.documents() == ["local document"]
    local.unlink()
    monkeypatch.setenv("CALMIX_CACHE", str(tmp_path / "cache"))
    assert src.origin() == "package" and src.documents() == ["package document"]
    package_here[0] = False
    assert src.available() == (True, f"hub-format folder {hub_folder}")
    assert src.documents() == ["hub train 0", "hub train 1", "hub train 2"]
    gone = Source("g", "General", "nothing here", local=("calib/docs.jsonl",), root=tmp_path / "root",
                  hub=HubRef("org/absent"))
    ok, why = gone.available()
    assert not ok and why.startswith("calib/docs.jsonl missing under data root; hub disabled by CALMIX_OFFLINE")
    with pytest.raises(CalmixError, match="source g is not available here: calib/docs.jsonl missing"):
        gone.documents()


def test_user_files_need_no_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("CALMIX_DATA", str(tmp_path / "absent"))
    f = tmp_path / "mine.txt"
    f.write_text("my own calibration text")
    src = Source("file:mine", "User", "user data", local=(str(f),))
    assert src.available() == (True, f"local {f}")
    assert src.documents() == ["my own calibration text"]


def test_eval_split_order(tmp_path, hub_folder, monkeypatch):
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "t.jsonl").write_text('{"v": 7}\n')
    monkeypatch.setenv("CALMIX_DATA", str(tmp_path))
    package_rows = [{"v": "package"}]

    def package():
        if not package_rows:
            raise LookupError("test package not installed")
        return package_rows

    src = EvalSource(local="eval/t.jsonl", local_parse=lambda r: {"v": r["v"] * 2}, package=package,
                     hub=Hub(str(hub_folder), None, "test"), hub_parse=lambda r: {"v": r["text"]})
    assert load_source("t", "test", src) == [{"v": 14}]
    (tmp_path / "eval" / "t.jsonl").unlink()
    assert load_source("t", "test", src) == [{"v": "package"}]
    package_rows.clear()
    assert load_source("t", "test", src) == [{"v": "hub test 0"}, {"v": "hub test 1"}, {"v": "hub test 2"}]
    missing = EvalSource(local="eval/t.jsonl", package=package)
    with pytest.raises(CalmixError, match=r"no data for task 't' split 'test': looked at file .*eval/t.jsonl \(not found\); "
                                          r"package: test package not installed"):
        load_source("t", "test", missing)
