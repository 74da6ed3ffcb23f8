"""Atomic file output and the JSON run record (config, versions, timings, memory) written beside outputs."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from calmix.errors import CalmixError


def versions() -> dict[str, str]:
    """Versions of Python, calmix and the main libraries, for run records."""
    import calmix

    out = {"python": platform.python_version(), "calmix": calmix.__version__, "platform": platform.platform()}
    for name in ("torch", "transformers", "numpy", "scipy", "gguf", "safetensors"):
        mod = sys.modules.get(name)
        if mod is None:
            with contextlib.suppress(Exception):
                mod = __import__(name)
        if mod is not None:
            out[name] = getattr(mod, "__version__", "?")
    return out


CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")  # what selects torch's bf16/fp32 kernels


def cpu_info(path: str = "/proc/cpuinfo") -> tuple[str | None, set[str], int | None]:
    """(model name, flags, physical cores) from /proc/cpuinfo; (None, empty, None) where there is none."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return None, set(), None
    model, flags, cores, phys = None, set(), set(), None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and model is None:
            model = value
        elif key == "flags" and not flags:
            flags = set(value.split())
        elif key == "physical id":
            phys = value
        elif key == "core id":
            cores.add((phys, value))
    return model, flags, len(cores) or None


def hardware() -> dict[str, Any]:
    """The machine a run's numbers come from: CPU model, flags and core counts, GPU, torch and transformers."""
    model, flags, cores = cpu_info()
    threads = os.cpu_count()
    cpu: dict[str, Any] = {"model": model or platform.processor() or platform.machine(),
                           "flags": {f: f in flags for f in CPU_FLAGS} if flags else None,
                           "cores": cores or threads, "threads": threads}
    with contextlib.suppress(AttributeError):
        cpu["usable_threads"] = len(os.sched_getaffinity(0))
    out: dict[str, Any] = {"cpu": cpu, "gpu": None, "machine": platform.machine(), "system": platform.platform()}
    v = versions()
    out.update({k: v.get(k) for k in ("torch", "transformers")})
    with contextlib.suppress(Exception):
        import torch

        cpu["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            props = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
            out["gpu"] = {"name": props[0].name, "count": len(props),
                          "memory_gib": round(props[0].total_memory / 2**30, 1), "cuda": torch.version.cuda}
    return out


def hardware_line(hw: dict[str, Any]) -> str:
    """One line naming the hardware of a `hardware()` record, for reports and README tables."""
    cpu = hw.get("cpu") or {}
    flags = cpu.get("flags")
    has = [f for f, on in flags.items() if on] if flags else []
    text = f"{cpu.get('model', '?')}, {cpu.get('cores', '?')} cores / {cpu.get('threads', '?')} threads"
    text += f" ({', '.join(has) if has else 'no ' + '/'.join(CPU_FLAGS)})" if flags is not None else ""
    gpu = hw.get("gpu")
    text += f"; GPU {gpu['count']} x {gpu['name']} ({gpu['memory_gib']} GiB, CUDA {gpu['cuda']})" if gpu else "; no GPU"
    return text + f"; torch {hw.get('torch', '?')}, transformers {hw.get('transformers', '?')}"


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20


def to_jsonable(obj: Any) -> Any:
    """Convert dataclasses, paths, tensors and numpy scalars into JSON-serialisable values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, float) and obj != obj:
        return None
    return obj


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write text to path via a temporary file and rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Write JSON (indented, one trailing newline) to path atomically."""
    return write_text_atomic(path, json.dumps(to_jsonable(data), indent=2, sort_keys=False) + "\n")


def args_dict(args: Any) -> dict[str, Any]:
    """The options of a parsed command line as a plain dict (the handler `func` left out), for run records."""
    return {k: v for k, v in vars(args).items() if k != "func"}


def check_writable_dir(path: str | os.PathLike) -> Path:
    """Fail early (CalmixError) if an output folder cannot be created under path's parent."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise CalmixError(f"output location {path} is inside {probe}, which is a file: choose another --out")
    if not os.access(probe, os.W_OK):
        raise CalmixError(f"output location {path} is not writable: choose another --out")
    if path.exists() and not path.is_dir():
        raise CalmixError(f"output {path} exists and is not a folder: choose another --out")
    return path


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces `final`, on error it is removed."""
    final = check_writable_dir(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            if not overwrite:
                raise CalmixError(f"output {final} already exists: remove it or pass --force")
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class Timer:
    """Collects named wall-clock timings: `with timer("prune"): ...`; `timer.times` is a dict of seconds."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t0


def run_record(command: str, config: Any, timings: dict[str, float] | None = None, **extra: Any) -> dict:
    """The standard JSON record of one run: command, config, versions, timings, peak memory, extras."""
    rec = {
        "command": command,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": to_jsonable(config),
        "versions": versions(),
        "hardware": hardware(),
        "timings_s": timings or {},
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    try:
        import torch

        if torch.cuda.is_available():
            rec["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    except Exception:  # pragma: no cover - torch always present in practice
        pass
    rec.update(to_jsonable(extra))
    return rec
