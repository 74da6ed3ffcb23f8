"""File readers on temporary files of every supported format: records, text of records, chunks, versions."""

from __future__ import annotations

import gzip
import json

import pytest

from calmix.data import files
from calmix.errors import CalmixError

RECORDS = [{"question": "What is 1 plus 1?", "answer": "2"}, {"text": "a plain text record"}]
TEXTS = ["What is 1 plus 1?\n2", "a plain text record"]


def test_jsonl_json_and_gz(tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in RECORDS) + "\n")
    assert files.load_path(jsonl) == TEXTS
    gz = tmp_path / "a.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in RECORDS))
    assert files.load_path(gz) == TEXTS
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps(RECORDS))
    assert files.load_path(listed) == TEXTS
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"version": 1, "data": RECORDS}))
    assert files.load_path(wrapped) == TEXTS
    one_list = tmp_path / "one.json"
    one_list.write_text(json.dumps({"rows": RECORDS}))
    assert files.load_path(one_list) == TEXTS


def test_parquet_and_fields(tmp_path):
    pd = pytest.importorskip("pandas")
    path = tmp_path / "t.parquet"
    pd.DataFrame([{"q": "x", "sol": "y", "n": 3}, {"q": "z", "sol": "w", "n": 4}]).to_parquet(path)
    assert files.load_path(path, fields=("sol",)) == ["y", "w"]
    assert files.load_path(path) == ["x\ny", "z\nw"]  # every string field when no known layout matches


def test_text_files_are_chunked_at_blank_lines(tmp_path):
    text = "\n\n".join(f"paragraph {i} " + "word " * 400 for i in range(20))
    path = tmp_path / "big.txt"
    path.write_text(text)
    docs = files.load_path(path)
    assert len(docs) > 1 and all(len(d) <= files.TXT_CHUNK_CHARS for d in docs)
    assert "\n\n".join(docs) == text
    gz = tmp_path / "big.txt.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as fh:
        fh.write(text)
    assert files.load_path(gz) == docs


def test_folders_and_versions(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "b.txt").write_text("second")
    (tmp_path / "d" / "sub" / "a.jsonl").write_text('{"text": "first"}\n')
    (tmp_path / "d" / ".hidden.txt").write_text("never read")
    (tmp_path / "d" / "notes.md").write_text("not a data file")
    assert files.load_path(tmp_path / "d") == ["second", "first"]  # sorted paths: b.txt < sub/a.jsonl
    v1 = files.path_version(tmp_path / "d")
    (tmp_path / "d" / "b.txt").write_text("second, longer")
    assert files.path_version(tmp_path / "d") != v1
    (tmp_path / "empty").mkdir()
    with pytest.raises(CalmixError, match="holds no"):
        files.load_path(tmp_path / "empty")
    with pytest.raises(CalmixError, match="does not exist"):
        files.load_path(tmp_path / "missing.jsonl")


def test_read_rows_of_evaluation_files(tmp_path):
    jsonl = tmp_path / "e.jsonl"
    jsonl.write_text('{"v": 1}\n\n{"v": 2}\n')
    assert files.read_rows(jsonl) == [{"v": 1}, {"v": 2}]
    gz = tmp_path / "e.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as fh:
        fh.write('{"v": 3}\n')
    assert files.read_rows(gz) == [{"v": 3}]
    raw = tmp_path / "wiki.test.raw"
    raw.write_text(" = Title = \nline one\n")
    assert files.read_rows(raw) == [{"text": " = Title = "}, {"text": "line one"}]
