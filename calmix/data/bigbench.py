"""BIG-bench task files (task.json) read from the `bigbench==1.0.0` sdist (PyPI) without installing it."""

from __future__ import annotations

import importlib.util
import json
import os
import tarfile
from pathlib import Path
from typing import Iterable

from calmix.errors import CalmixError
from calmix.paths import cache_dir

SDIST = "bigbench-1.0.0.tar.gz"
FETCH = "pip download --no-deps --no-binary :all: bigbench==1.0.0 -d {cache}"


class BigBenchMissing(CalmixError, LookupError):
    """The BIG-bench sdist (or one task in it) is not available here."""


def sdist() -> Path | None:
    """The sdist in the calmix cache, or None."""
    path = cache_dir("bigbench") / SDIST
    return path if path.is_file() else None


def task_json(name: str, batch: Iterable[str] = ()) -> dict:
    """task.json of one BIG-bench task: from an installed bigbench, the extracted cache, or the cached sdist
    (extracting the tasks named in batch in the same pass over the archive)."""
    spec = importlib.util.find_spec("bigbench")
    if spec is not None and spec.submodule_search_locations:
        path = Path(spec.submodule_search_locations[0]) / "benchmark_tasks" / name / "task.json"
        if path.is_file():
            return json.loads(path.read_text())
    root = cache_dir("bigbench") / "tasks"
    target = root / name / "task.json"
    if not target.is_file():
        archive = sdist()
        if archive is None:
            raise BigBenchMissing(f"BIG-bench task {name} needs the bigbench sdist in the calmix cache: "
                                  + FETCH.format(cache=cache_dir("bigbench")))
        wanted = {f"bigbench-1.0.0/bigbench/benchmark_tasks/{n}/task.json": n for n in {name, *batch}
                  if not (root / n / "task.json").is_file()}
        with tarfile.open(archive) as tar:  # one pass over the 358 MB archive extracts the whole batch
            for member in tar:
                if member.name in wanted:
                    out = root / wanted.pop(member.name) / "task.json"
                    out.parent.mkdir(parents=True, exist_ok=True)
                    tmp = out.with_name(f".task.json.{os.getpid()}.tmp")
                    tmp.write_bytes(tar.extractfile(member).read())  # type: ignore[union-attr]
                    os.replace(tmp, out)
                    if not wanted:
                        break
        if not target.is_file():
            raise BigBenchMissing(f"BIG-bench task {name} is not in {archive}")
    return json.loads(target.read_text())
