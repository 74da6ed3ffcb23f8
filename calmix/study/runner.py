"""Study runner: prepares the study folder, then computes every pending cell (local or Ray), one transaction each."""

from __future__ import annotations

import contextlib
import copy
import fcntl
import io
import os
import sys
import time
import tomllib
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator

from calmix.errors import CalmixError
from calmix.runrecord import check_writable_dir, run_record, write_json_atomic
from calmix.study.config import BACKENDS, StudyConfig, parse_config
from calmix.study.grid import Cell, build_grid, calib_key, cell_key, dense_key, prune_params
from calmix.study.store import Store, StoreError

CONFIG_FILE = "study.toml"
LOCK_FILE = ".lock"
# calibration-set "metrics" that describe the set's shape, not its information content
SHAPE_KEYS = ("nsamples", "seqlen", "vocab_size")


# ---------------------------------------------------------------------------------------------------------
# The three units of work. They run in this process (local backend) or in Ray workers (ray backend); each
# process keeps its dense model loaded once.
_MODELS: dict[tuple, Any] = {}


def dense_model(cfg: StudyConfig, device: str):
    """The dense model and tokenizer of a study, loaded once per process."""
    key = (cfg.model, cfg.dtype, str(device))
    if key not in _MODELS:
        from calmix.models import load_model

        _MODELS.clear()
        _MODELS[key] = load_model(cfg.model, device=device, dtype=cfg.dtype)
        _MODELS[key][0].eval()
    return _MODELS[key]


def calib_to_bytes(calib) -> bytes:
    """Serialise a CalibSet (ids, mask, card) for the store."""
    import torch

    buf = io.BytesIO()
    torch.save({"input_ids": calib.input_ids, "attention_mask": calib.attention_mask, "card": calib.card}, buf)
    return buf.getvalue()


def calib_from_bytes(data: bytes):
    """Inverse of calib_to_bytes."""
    import torch

    from calmix.calib.calibset import CalibSet

    obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return CalibSet(obj["input_ids"], obj["attention_mask"], obj["card"])


def compute_calib(cfg: StudyConfig, spec: str, seed: int, device: str) -> dict:
    """Build one calibration set and its information metrics."""
    from calmix.calib import build_calib
    from calmix.calib.metrics import set_metrics

    t0, c0 = time.perf_counter(), time.process_time()
    model, tok = dense_model(cfg, device)
    calib = build_calib(spec, tok, cfg.nsamples, cfg.seqlen, seed=seed, model=model, device=device)
    met = set_metrics(calib, model=model, tokenizer=tok, device=device)
    metrics = {k: v for k, v in met["set"].items() if k not in SHAPE_KEYS}
    card = {**calib.card, "study_build": {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}}
    return {"data": calib_to_bytes(calib), "card": card, "metrics": metrics, "seconds": time.perf_counter() - t0}


def compute_dense(cfg: StudyConfig, device: str) -> dict:
    """Evaluate the dense model once (the denominator of every retention)."""
    from calmix.evals import evaluate

    t0 = time.perf_counter()
    model, tok = dense_model(cfg, device)
    res = evaluate(model, tok, suite=cfg.suite, tasks=cfg.tasks, limit=cfg.limit, seed=cfg.eval_seed, device=device,
                   progress=False)
    _check_tasks(res, "dense evaluation")
    return {"result": res.to_dict(), "seconds": time.perf_counter() - t0}


def _check_tasks(res, what: str) -> None:
    """An evaluation whose tasks failed cannot give a retention: raise with the first task's error."""
    failed = res.failed() if hasattr(res, "failed") else {}
    if failed:
        name, err = next(iter(failed.items()))
        more = f" (and {len(failed) - 1} more: {', '.join(list(failed)[1:])})" if len(failed) > 1 else ""
        raise CalmixError(f"{what}: task {name} failed: {err}{more}")


def _retention(pruned, dense: dict) -> dict:
    from calmix.evals.retention import retention

    return retention(pruned, dense)


def compute_cell(cfg: StudyConfig, cell: Cell, calib_data: bytes, calib_metrics: dict, dense: dict,
                 device: str) -> dict:
    """Prune a copy of the dense model with the cell's calibration set, evaluate it, compare to dense."""
    from calmix.evals import evaluate
    from calmix.prune.engine import PruneConfig, prune_model

    times: dict[str, float] = {}
    model, tok = dense_model(cfg, device)
    t0, c0 = time.perf_counter(), time.process_time()
    work = copy.deepcopy(model)
    calib = calib_from_bytes(calib_data)
    report = prune_model(work, calib, PruneConfig(**prune_params(cfg, cell)), device=device, progress=False)
    times["prune"] = time.perf_counter() - t0
    times["prune_cpu"] = time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    res = evaluate(work, tok, suite=cfg.suite, tasks=cfg.tasks, limit=cfg.limit, seed=cfg.eval_seed, device=device,
                   progress=False)
    times["eval"] = time.perf_counter() - t0
    times["eval_cpu"] = time.process_time() - c0
    _check_tasks(res, "evaluation of the pruned model")
    del work
    errs = [r.rel_error for r in report.layers if r.rel_error is not None]
    prune = {"sparsity": report.sparsity, "timings": dict(report.timings), "config": asdict(report.config),
             "linears": len(report.layers), "mean_rel_error": sum(errs) / len(errs) if errs else None}
    return {"retention": _retention(res, dense), "scores": res.to_dict(), "calib_metrics": calib_metrics,
            "prune": prune, "timings": times}


# ---------------------------------------------------------------------------------------------------------
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


def is_locked(out: Path) -> bool:
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


def load_study_config(out: Path) -> StudyConfig:
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
        tmp = existing.with_name(f".{CONFIG_FILE}.tmp")
        tmp.write_text(text)
        os.replace(tmp, existing)
        store.set_meta("fingerprint", new_fp)
        store.set_meta("config", asdict(cfg))
        write_json_atomic(out / "fingerprint.json", {"fingerprint": new_fp, "name": cfg.name})
    return store


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


def _order(cells: list[Cell], cfg: StudyConfig) -> list[Cell]:
    """Cells sharing a calibration set run next to each other."""
    first = {}
    for i, c in enumerate(cells):
        first.setdefault(calib_key(cfg, c.spec, c.seed), i)
    return sorted(cells, key=lambda c: first[calib_key(cfg, c.spec, c.seed)])


class Progress:
    """One progress bar for the study plus a line per finished cell with the ETA (visible in logs too)."""

    def __init__(self, total: int, enabled: bool = True):
        from tqdm import tqdm

        self.total, self.done, self.t0 = total, 0, time.perf_counter()
        self.bar = tqdm(total=total, desc="study", unit="cell", disable=None if enabled else True,
                        dynamic_ncols=True)
        self.enabled = enabled

    def step(self, cell: Cell, status: str, seconds: float, detail: str = "") -> None:
        from tqdm import tqdm

        self.done += 1
        self.bar.update(1)
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / self.done * (self.total - self.done)
        if self.enabled:
            tqdm.write(f"[{self.done}/{self.total}] {cell.name}: {status} in {seconds:.0f}s{detail}"
                       f" | elapsed {elapsed / 60:.1f} min, ETA {eta / 60:.1f} min", file=sys.stderr)

    def note(self, text: str) -> None:
        """A status line (what runs now), shown as the bar's postfix and printed."""
        from tqdm import tqdm

        self.bar.set_postfix_str(text[:60])
        if self.enabled:
            tqdm.write(f"  {text}", file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


def _total_line(result: dict) -> str:
    tot = (result.get("retention") or {}).get("Total")
    return f", total retention {tot:.1f}%" if isinstance(tot, (int, float)) else ""


def _error_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}"[:500]


def ensure_dense(cfg: StudyConfig, store: Store, device: str, compute: Callable[[], dict] | None = None,
                 progress: Progress | None = None) -> dict:
    """The dense evaluation from the store, computed and stored first if absent."""
    key = dense_key(cfg)
    row = store.get_dense(key)
    if row is None:
        if progress is not None and compute is None:
            progress.note(f"evaluating the dense model on suite {cfg.suite} (once; reused by every cell)")
        got = compute() if compute else compute_dense(cfg, device)
        store.put_dense(key, {"model": cfg.model, "suite": cfg.suite, "tasks": cfg.tasks, "limit": cfg.limit,
                              "seed": cfg.eval_seed, "dtype": cfg.dtype}, got["result"], got["seconds"])
        row = store.get_dense(key)
    return row["result"]


def _put_calib(cfg: StudyConfig, store: Store, spec: str, seed: int, got: dict) -> None:
    store.put_calib(calib_key(cfg, spec, seed), {"model": cfg.model, "spec": spec, "seed": seed,
                                                 "nsamples": cfg.nsamples, "seqlen": cfg.seqlen},
                    got["data"], got["card"], got["metrics"], got["seconds"])


def _cell_dict(cell: Cell) -> dict:
    return {**cell.to_dict(), "name": cell.name}


def run_local(cfg: StudyConfig, store: Store, cells: list[Cell], device: str, progress: Progress) -> None:
    """Compute cells one by one in this process; calibration sets and dense evaluation reused from the store."""
    dense = ensure_dense(cfg, store, device, progress=progress)
    for cell in cells:
        key, ck = cell_key(cfg, cell), calib_key(cfg, cell.spec, cell.seed)
        store.start_cell(key, _cell_dict(cell), ck, dense_key(cfg))
        t0 = time.perf_counter()
        try:
            row = store.get_calib(ck)
            if row is None:
                progress.note(f"building calibration set {cell.spec} seed {cell.seed} and its metrics")
                _put_calib(cfg, store, cell.spec, cell.seed, compute_calib(cfg, cell.spec, cell.seed, device))
                row = store.get_calib(ck)
            progress.note(f"pruning and evaluating {cell.name}")
            result = compute_cell(cfg, cell, row["data"], row["metrics"], dense, device)
        except (StoreError, KeyboardInterrupt):
            raise
        except Exception as err:  # noqa: BLE001 - a crashing cell is recorded and the others go on
            secs = time.perf_counter() - t0
            store.fail_cell(key, _error_line(err), traceback.format_exc(), secs)
            progress.step(cell, "FAILED", secs, f" ({_error_line(err)[:120]})")
            continue
        secs = time.perf_counter() - t0
        store.finish_cell(key, result, secs)
        progress.step(cell, "done", secs, _total_line(result))


# Ray ------------------------------------------------------------------------------------------------------
def _ray_threads(n: int) -> None:
    import torch

    torch.set_num_threads(max(1, int(n)))


def _ray_calib(cfg_dict: dict, spec: str, seed: int, device: str, threads: int) -> dict:
    _ray_threads(threads)
    return compute_calib(StudyConfig(**cfg_dict), spec, seed, device)


def _ray_dense(cfg_dict: dict, device: str, threads: int) -> dict:
    _ray_threads(threads)
    return compute_dense(StudyConfig(**cfg_dict), device)


def _ray_cell(cfg_dict: dict, cell_dict: dict, calib_data: bytes, calib_metrics: dict, dense: dict,
              device: str, threads: int) -> dict:
    _ray_threads(threads)
    t0 = time.perf_counter()
    try:
        result = compute_cell(StudyConfig(**cfg_dict), Cell(**cell_dict), calib_data, calib_metrics, dense, device)
        return {"ok": True, "result": result, "seconds": time.perf_counter() - t0}
    except Exception as err:  # noqa: BLE001 - reported to the driver, which records the failed cell
        return {"ok": False, "error": _error_line(err), "traceback": traceback.format_exc(),
                "seconds": time.perf_counter() - t0}


def import_ray():
    """The ray module, or a CalmixError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise CalmixError("--backend ray needs Ray: pip install 'calmix[ray]' (or pip install ray), "
                          "or use --backend local") from None
    return ray


def run_ray(cfg: StudyConfig, store: Store, cells: list[Cell], device: str, progress: Progress,
            num_cpus: int | None = None, address: str | None = None, threads: int = 1) -> None:
    """Compute cells as Ray tasks (one GPU each when the device is CUDA); this driver writes the store.
    `threads` = torch threads per task (CPU): tasks with equal thread counts give bit-equal results."""
    ray = import_ray()
    gpu = str(device).startswith("cuda")
    started_here = False
    if not ray.is_initialized():
        kw: dict[str, Any] = {"ignore_reinit_error": True, "include_dashboard": False, "log_to_driver": False}
        if address:
            kw["address"] = address
        elif num_cpus:
            kw["num_cpus"] = num_cpus
        ray.init(**kw)
        started_here = True
    try:
        opts = {"num_gpus": 1, "num_cpus": 1} if gpu else {"num_cpus": min(threads, num_cpus or threads)}
        dev = "cuda" if gpu else device  # Ray sets CUDA_VISIBLE_DEVICES: a task sees its GPU as cuda:0
        cfg_dict = asdict(cfg)
        r_dense = ray.remote(**opts)(_ray_dense)
        r_calib = ray.remote(**opts)(_ray_calib)
        r_cell = ray.remote(max_retries=0, **opts)(_ray_cell)
        # phase 1: dense evaluation and missing calibration sets, in parallel
        pending: dict[Any, tuple] = {}
        if store.get_dense(dense_key(cfg)) is None:
            pending[r_dense.remote(cfg_dict, dev, threads)] = ("dense",)
        calib_err: dict[str, tuple[str, str]] = {}
        for spec, seed in dict.fromkeys((c.spec, c.seed) for c in cells):
            if store.get_calib(calib_key(cfg, spec, seed)) is None:
                pending[r_calib.remote(cfg_dict, spec, seed, dev, threads)] = ("calib", spec, seed)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            what = pending.pop(ready[0])
            try:
                got = ray.get(ready[0])
            except Exception as err:  # noqa: BLE001 - a failed task fails the cells that need it
                if what[0] == "dense":
                    raise CalmixError(f"dense evaluation failed: {_error_line(err)}") from None
                calib_err[calib_key(cfg, what[1], what[2])] = (_error_line(err), traceback.format_exc())
                continue
            if what[0] == "dense":
                ensure_dense(cfg, store, dev, compute=lambda: got)
            else:
                _put_calib(cfg, store, what[1], what[2], got)
        dense = store.get_dense(dense_key(cfg))["result"]
        # phase 2: cells
        refs: dict[Any, Cell] = {}
        data_refs: dict[str, Any] = {}
        for cell in cells:
            key, ck = cell_key(cfg, cell), calib_key(cfg, cell.spec, cell.seed)
            store.start_cell(key, _cell_dict(cell), ck, dense_key(cfg))
            if ck in calib_err:
                store.fail_cell(key, "calibration failed: " + calib_err[ck][0], calib_err[ck][1], 0.0)
                progress.step(cell, "FAILED", 0.0, f" (calibration: {calib_err[ck][0][:120]})")
                continue
            row = store.get_calib(ck)
            if ck not in data_refs:
                data_refs[ck] = ray.put(row["data"])
            refs[r_cell.remote(cfg_dict, cell.to_dict(), data_refs[ck], row["metrics"], dense, dev,
                              threads)] = cell
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            cell = refs.pop(ready[0])
            key = cell_key(cfg, cell)
            try:
                got = ray.get(ready[0])
            except Exception as err:  # noqa: BLE001 - worker died: record and go on
                got = {"ok": False, "error": _error_line(err), "traceback": traceback.format_exc(), "seconds": 0.0}
            if got["ok"]:
                store.finish_cell(key, got["result"], got["seconds"])
                progress.step(cell, "done", got["seconds"], _total_line(got["result"]))
            else:
                store.fail_cell(key, got["error"], got["traceback"], got["seconds"])
                progress.step(cell, "FAILED", got["seconds"], f" ({got['error'][:120]})")
    finally:
        if started_here:
            ray.shutdown()


BACKEND_RUNNERS: dict[str, Callable] = {"local": run_local, "ray": run_ray}


def run_study(cfg: StudyConfig, text: str, out: str | os.PathLike, backend: str = "local", force: bool = False,
              device: str | None = None, progress: bool = True, **backend_kw: Any) -> dict:
    """Run every pending cell of a study into `out` (resumable); returns a summary with the status counts."""
    if backend not in BACKENDS:
        raise CalmixError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if backend == "ray":
        import_ray()
    out = Path(out)
    device = device or cfg.device
    t0, c0 = time.perf_counter(), time.process_time()
    check_writable_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    with study_lock(out):
        store = prepare_folder(cfg, text, out, force)
        try:
            before = grid_status(cfg, store)
            todo = _order(before["pending"] + before["failed"], cfg)
            bar = Progress(len(todo), enabled=progress)
            if progress:
                print(f"study {cfg.name}: {len(before['done'])} cells done, {len(todo)} to run "
                      f"({len(before['failed'])} failed before, retried) on backend {backend}, device {device}",
                      file=sys.stderr)
            try:
                if todo:
                    BACKEND_RUNNERS[backend](cfg, store, todo, device, bar, **backend_kw)
            finally:
                bar.close()
            after = grid_status(cfg, store)
            counts = {k: len(v) for k, v in after.items()}
            rec = run_record(f"calmix study run --backend {backend}", asdict(cfg),
                             {"total": time.perf_counter() - t0, "cpu": time.process_time() - c0,
                              "cpu_children": _children_cpu()}, out=str(out), backend=backend, device=device,
                             fingerprint=cfg.fingerprint(), cells_run=len(todo), status=counts)
            (out / "runs").mkdir(exist_ok=True)
            write_json_atomic(out / "runs" / time.strftime("run-%Y%m%d-%H%M%S.json"), rec)
            return {"status": counts, "ran": len(todo), "seconds": time.perf_counter() - t0,
                    "failed": [(c.name, next((r["error"] for r in store.cells([cell_key(cfg, c)])), ""))
                               for c in after["failed"]]}
        finally:
            store.close()


def _children_cpu() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


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
