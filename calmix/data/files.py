"""File readers: text, JSON lines, JSON, parquet (optionally gzipped) -> records -> text, and text chunking."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

from calmix.errors import CalmixError

TEXT_EXTS = (".txt", ".jsonl", ".json", ".parquet", ".jsonl.gz", ".txt.gz")

# Known record layouts, tried in order when no field is given and there is no "text" key:
# each is a tuple of keys whose values are joined (question + worked answer style).
QA_KEYS: tuple[tuple[str, ...], ...] = (
    ("instruction", "input", "output"),
    ("instruction", "input", "response"),
    ("query", "response"),
    ("question", "answer"),
    ("problem", "solution"),
    ("prompt", "completion"),
    ("context", "continuation"),
    ("input", "target"),
    ("content",),
    ("document",),
    ("passage",),
)

TXT_CHUNK_CHARS = 16_000


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for ext in sorted(TEXT_EXTS, key=len, reverse=True):
        if name.endswith(ext):
            return ext
    return path.suffix.lower()


def _open_text(path: Path):
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def chunk_text(text: str, max_chars: int = TXT_CHUNK_CHARS) -> list[str]:
    """Split plain text into documents of at most ~max_chars, at blank lines where possible."""
    text = text.replace("\r\n", "\n")
    out: list[str] = []
    cur: list[str] = []
    size = 0
    for para in text.split("\n\n"):
        if size and size + len(para) > max_chars:
            out.append("\n\n".join(cur))
            cur, size = [], 0
        while len(para) > max_chars:  # a single huge paragraph: cut at a newline or hard
            cut = para.rfind("\n", 0, max_chars)
            cut = cut if cut > 0 else max_chars
            out.append(para[:cut])
            para = para[cut:].lstrip("\n")
        cur.append(para)
        size += len(para) + 2
    if cur and any(p.strip() for p in cur):
        out.append("\n\n".join(cur))
    return [d for d in out if d.strip()]


def iter_records(path: Path) -> Iterator[tuple[Any, str]]:
    """Yield (record, 'file:line') from a .jsonl/.json/.parquet file; .txt yields text chunks."""
    ext = _suffix(path)
    try:
        if ext in (".jsonl", ".jsonl.gz"):
            with _open_text(path) as fh:
                for i, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        yield json.loads(line), f"{path}:{i}"
                    except json.JSONDecodeError as err:
                        raise CalmixError(f"malformed JSON in {path} line {i}: {err.msg}; fix or remove that line") from None
        elif ext == ".json":
            with _open_text(path) as fh:
                try:
                    obj = json.load(fh)
                except json.JSONDecodeError as err:
                    raise CalmixError(f"malformed JSON in {path} line {err.lineno}: {err.msg}") from None
            if isinstance(obj, dict):
                lists = [v for v in obj.values() if isinstance(v, list)]
                if "data" in obj and isinstance(obj["data"], list):
                    obj = obj["data"]
                elif len(lists) == 1:
                    obj = lists[0]
                else:
                    obj = [obj]
            if not isinstance(obj, list):
                raise CalmixError(f"{path} must hold a JSON list of records or strings")
            for i, rec in enumerate(obj):
                yield rec, f"{path}[{i}]"
        elif ext == ".parquet":
            import pandas as pd

            try:
                frame = pd.read_parquet(path)
            except Exception as err:  # noqa: BLE001 - report any parquet failure as user error
                raise CalmixError(f"cannot read parquet file {path}: {str(err).splitlines()[0][:160]}") from None
            for i, rec in enumerate(frame.to_dict(orient="records")):
                yield rec, f"{path} row {i}"
        else:  # .txt and any other file named explicitly: plain UTF-8 text
            with _open_text(path) as fh:
                text = fh.read()
            if "\x00" in text:
                raise CalmixError(f"{path} looks binary: give .txt, .jsonl, .json or .parquet text data")
            for i, chunk in enumerate(chunk_text(text)):
                yield chunk, f"{path} chunk {i}"
    except UnicodeDecodeError as err:
        raise CalmixError(f"{path} is not UTF-8 text (byte {err.start}): convert it to UTF-8") from None
    except OSError as err:
        raise CalmixError(f"cannot read {path}: {err.strerror or err}") from None


def _flatten(value: Any) -> str:
    """Text of a field value: strings as is, lists/dicts of strings joined by newlines."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "\n".join(_flatten(v) for v in value.values() if _flatten(v))
    if isinstance(value, (list, tuple)):
        return "\n".join(t for t in (_flatten(v) for v in value) if t)
    if hasattr(value, "tolist"):  # numpy arrays from parquet
        return _flatten(value.tolist())
    return ""


def record_text(rec: Any, fields: tuple[str, ...] | None = None, where: str = "") -> str:
    """Text of one record: the given fields joined by newlines, else `text`, else known QA keys, else all strings."""
    if isinstance(rec, str):
        return rec
    if not isinstance(rec, dict):
        raise CalmixError(f"record at {where} is neither a string nor an object: give text records")
    if fields:
        missing = [f for f in fields if f not in rec]
        if missing:
            raise CalmixError(f"record at {where} has no field {missing[0]!r}; its fields are {sorted(rec)}")
        return "\n".join(t for t in (_flatten(rec[f]) for f in fields) if t)
    if isinstance(rec.get("text"), str):
        return rec["text"]
    for keys in QA_KEYS:
        if keys[0] in rec and any(isinstance(rec.get(k), str) for k in keys):
            return "\n".join(rec[k] for k in keys if isinstance(rec.get(k), str) and rec[k].strip())
    return "\n".join(v for v in rec.values() if isinstance(v, str) and v.strip())


def list_data_files(path: Path) -> list[Path]:
    """The data files of a file or folder (recursive, sorted), or a CalmixError naming the problem."""
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and _suffix(p) in TEXT_EXTS and not p.name.startswith("."))
        if not files:
            raise CalmixError(f"folder {path} holds no .txt/.jsonl/.json/.parquet files")
        return files
    raise CalmixError(f"data path {path} does not exist")


def load_path(path: str | os.PathLike, fields: tuple[str, ...] | None = None,
              template: Callable[[dict], str] | None = None, limit: int | None = None) -> list[str]:
    """Documents of a file or folder: one per record (or per text chunk), in file order."""
    docs: list[str] = []
    for f in list_data_files(Path(path)):
        for rec, where in iter_records(f):
            text = template(rec) if (template and isinstance(rec, dict)) else record_text(rec, fields, where)
            if text and text.strip():
                docs.append(text)
                if limit is not None and len(docs) >= limit:
                    return docs
    return docs


def path_version(path: str | os.PathLike) -> str:
    """A string that changes when the file(s) change: count, total size and latest mtime."""
    files = list_data_files(Path(path))
    size = sum(f.stat().st_size for f in files)
    mtime = max(int(f.stat().st_mtime) for f in files)
    return f"files={len(files)},bytes={size},mtime={mtime}"



def read_rows(path: Path) -> list[dict]:
    """Rows of an evaluation file: JSON objects of a .jsonl (or .gz) file, else one {"text": line} per line."""
    if path.suffix in (".jsonl", ".gz"):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
    return [{"text": line} for line in path.read_text(encoding="utf-8").splitlines()]
