"""Study runner: prepares the study folder, then computes every pending cell on a backend, one transaction each."""

from __future__ import annotations

import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from calmix.registry import Registry
from calmix.runrecord import check_writable_dir, run_record, write_json_atomic
from calmix.study.compute import (compute_calib, compute_cell, ensure_dense, error_line, sandbox_protections,
                                  store_calib)
from calmix.study.config import StudyConfig
from calmix.study.folder import grid_status, prepare_folder, study_lock
from calmix.study.grid import Cell, calib_key, cell_key, dense_key
from calmix.study.progress import Progress
from calmix.study.ray_backend import import_ray, run_ray
from calmix.study.store import Store, StoreError


def run_local(cfg: StudyConfig, store: Store, cells: list[Cell], device: str, progress: Progress) -> None:
    """Compute cells one by one in this process; calibration sets and dense evaluation reused from the store."""
    dense = ensure_dense(cfg, store, device, progress=progress)
    for cell in cells:
        key, ck = cell_key(cfg, cell), calib_key(cfg, cell.spec, cell.seed)
        store.start_cell(key, cell.row(), ck, dense_key(cfg))
        t0 = time.perf_counter()
        try:
            row = store.get_calib(ck)
            if row is None:
                progress.note(f"building calibration set {cell.spec} seed {cell.seed} and its metrics")
                store_calib(cfg, store, cell.spec, cell.seed, compute_calib(cfg, cell.spec, cell.seed, device))
                row = store.get_calib(ck)
            progress.note(f"pruning and evaluating {cell.name}")
            result = compute_cell(cfg, cell, row["data"], row["metrics"], dense, device)
        except (StoreError, KeyboardInterrupt):
            raise
        except Exception as err:  # noqa: BLE001 - a crashing cell is recorded and the others go on
            secs = time.perf_counter() - t0
            store.fail_cell(key, error_line(err), traceback.format_exc(), secs)
            progress.cell_failed(cell, error_line(err), secs)
            continue
        secs = time.perf_counter() - t0
        store.finish_cell(key, result, secs)
        progress.cell_done(cell, result, secs)


@dataclass(frozen=True)
class Backend:
    """Where cells run: `run(cfg, store, cells, device, progress, **options)`; `check()` fails early when the
    backend cannot run here; `options` are the `calmix study run` options it takes."""

    run: Callable[..., None]
    check: Callable[[], Any] = lambda: None
    options: tuple[str, ...] = ()


BACKENDS: Registry[Backend] = Registry("backend")
BACKENDS.add("local", Backend(run_local))
BACKENDS.add("ray", Backend(run_ray, check=import_ray, options=("num_cpus", "address", "threads")))


def _order(cells: list[Cell], cfg: StudyConfig) -> list[Cell]:
    """Cells sharing a calibration set run next to each other."""
    first = {}
    for i, c in enumerate(cells):
        first.setdefault(calib_key(cfg, c.spec, c.seed), i)
    return sorted(cells, key=lambda c: first[calib_key(cfg, c.spec, c.seed)])


def run_study(cfg: StudyConfig, text: str, out: str | os.PathLike, backend: str = "local", force: bool = False,
              device: str | None = None, progress: bool = True, **backend_kw: Any) -> dict:
    """Run every pending cell of a study into `out` (resumable); returns a summary with the status counts."""
    runner = BACKENDS.get(backend)
    runner.check()
    sandbox = sandbox_protections(cfg)  # refuse unisolated code execution before any cell runs
    if sandbox is not None and progress:
        from calmix.evals.sandbox import describe

        print(f"calmix: sandbox: {describe(sandbox)}", file=sys.stderr)
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
                    runner.run(cfg, store, todo, device, bar, **backend_kw)
            finally:
                bar.close()
            after = grid_status(cfg, store)
            counts = {k: len(v) for k, v in after.items()}
            rec = run_record(f"calmix study run --backend {backend}", asdict(cfg),
                             {"total": time.perf_counter() - t0, "cpu": time.process_time() - c0,
                              "cpu_children": _children_cpu()}, out=str(out), backend=backend, device=device,
                             fingerprint=cfg.fingerprint(), cells_run=len(todo), status=counts, sandbox=sandbox)
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
