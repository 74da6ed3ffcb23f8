"""Readers that turn files, hub datasets and package-embedded data into lists of text documents."""

from __future__ import annotations

import ast
import gzip
import json
import os
import socket
import sysconfig
from functools import lru_cache
from pathlib import Path
from random import Random
from typing import Any, Callable, Iterable, Iterator

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


# ----------------------------------------------------------------------------------------------- hub

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


# ------------------------------------------------------------------------------------ package data

def _stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files() -> list[Path]:
    """Python files of the standard library, without test folders or site-packages, in sorted order."""
    root = _stdlib_root()
    skip = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "lib2to3"}
    files = []
    for p in root.rglob("*.py"):
        parts = p.relative_to(root).parts
        if any(part in skip or part.startswith("test_") for part in parts):
            continue
        files.append(p)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def stdlib_code() -> list[str]:
    """Source code of the Python standard library, one document per file (large files chunked)."""
    docs: list[str] = []
    for p in stdlib_files():
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        docs.extend(chunk_text(text))
    return docs


def stdlib_docstrings() -> list[str]:
    """Docstrings (module, class, function) of the standard library, one document per module."""
    docs: list[str] = []
    for p in stdlib_files():
        try:
            tree = ast.parse(p.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError, ValueError):
            continue
        parts = []
        for node in [tree, *ast.walk(tree)]:
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 40:
                    parts.append(doc)
        text = "\n\n".join(dict.fromkeys(parts))
        if text.strip():
            docs.extend(chunk_text(text))
    return docs


def pydoc_topics() -> list[str]:
    """The Python language reference prose shipped with the interpreter (pydoc_data.topics)."""
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics) if topics[k].strip()]


def licence_texts() -> list[str]:
    """Licence and notice texts shipped in installed distributions (legal prose), deduplicated, sorted."""
    from importlib import metadata

    seen: dict[str, str] = {}
    for dist in metadata.distributions():
        for f in dist.files or ():
            name = f.name.upper()
            if name.startswith(("LICENSE", "LICENCE", "COPYING", "NOTICE")) and not name.endswith((".PY", ".PYC")):
                try:
                    text = Path(dist.locate_file(f)).read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError):
                    continue
                if len(text) > 200:
                    seen.setdefault(" ".join(text.split())[:2000], text)
    return sorted(seen.values())


def licence_version() -> str:
    """Version key of licence_texts: names and versions of installed distributions."""
    from importlib import metadata
    import hashlib

    names = sorted(f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions())
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


def gsm_symbolic_eval_templates() -> tuple[int, ...]:
    """Template ids of reasoning-gym gsm_symbolic that evaluation reserves (calmix.evals.tasks owns the list)."""
    from calmix.evals.tasks import GSM_SYMBOLIC_EVAL_TEMPLATES

    return tuple(GSM_SYMBOLIC_EVAL_TEMPLATES)


def gsm_symbolic_calib_templates() -> list[int]:
    """Template ids of gsm_symbolic used for calibration: every working template not reserved for evaluation."""
    from reasoning_gym.arithmetic.gsm_symbolic.gsm_symbolic import tasks_ok

    held = set(gsm_symbolic_eval_templates())
    return [t for t in tasks_ok if t not in held]


def gsm_symbolic_docs(per_template: int = 35, seed: int = 1234) -> list[str]:
    """Question + chain-of-thought for `per_template` instances of every calibration template."""
    from reasoning_gym.arithmetic.gsm_symbolic.gsm_symbolic import GSMSymbolicDataset, GSMSymbolicDatasetConfig

    ds = GSMSymbolicDataset(GSMSymbolicDatasetConfig(seed=seed, size=1))
    gens = ds.generators
    docs = []
    for tid in gsm_symbolic_calib_templates():
        for k in range(per_template):
            ex = gens[tid](Random(seed * 1_000_003 + tid * 10_007 + k), 1.0)
            cot = ex.get("metadata", {}).get("answer_cot") or ex["answer"]
            docs.append(f"Question: {ex['question']}\nAnswer: {cot}")
    return docs


def reasoning_gym_docs(tasks: Iterable[str], size: int = 400, seed: int = 1234) -> list[str]:
    """Question + answer text of procedurally generated reasoning-gym tasks (interleaved, deterministic)."""
    import reasoning_gym

    per_task = []
    for name in tasks:
        ds = reasoning_gym.create_dataset(name, size=size, seed=seed)
        per_task.append([f"Question: {ex['question']}\nAnswer: {ex['answer']}" for ex in ds])
    return [doc for group in zip(*per_task) for doc in group]


def package_version(name: str) -> str:
    """Installed version of a distribution, or 'absent'."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


# ------------------------------------------------------------------------------------------ BIG-bench

from calmix.bigbench import CALIB_TASKS as BIGBENCH_CALIB_TASKS  # noqa: E402,F401  (re-exported)


def bigbench_sdist() -> Path | None:
    """The BIG-bench sdist in the calmix cache, or None."""
    from calmix import bigbench

    return bigbench.sdist()


def bigbench_task_json(name: str) -> dict:
    """task.json of a BIG-bench task (see calmix.bigbench)."""
    from calmix import bigbench

    return bigbench.task_json(name)


def bigbench_docs(name: str, template: Callable[[dict], str]) -> list[str]:
    """Documents of one BIG-bench task's examples through a per-task template."""
    return [t for t in (template(ex) for ex in bigbench_task_json(name)["examples"]) if t and t.strip()]
