"""The Ray backend: dense evaluation and calibration sets first, then the cells, as Ray tasks; the driver
(this process) is the only writer of the store."""

from __future__ import annotations

import time
import traceback
from dataclasses import asdict
from typing import Any

from calmix.calib.spec import parse_spec
from calmix.errors import CalmixError
from calmix.study.compute import compute_calib, compute_cell, compute_dense, ensure_dense, error_line, store_calib
from calmix.study.config import StudyConfig
from calmix.study.grid import Cell, calib_key, cell_key, dense_key
from calmix.study.progress import Progress
from calmix.study.store import Store


def import_ray():
    """The ray module, or a CalmixError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise CalmixError("--backend ray needs Ray: pip install 'calmix[ray]' (or pip install ray), "
                          "or use --backend local") from None
    return ray


# the task bodies: plain dicts in and out, so that Ray only pickles data --------------------------------
def _set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(max(1, int(n)))


def _calib_task(cfg_dict: dict, spec: str, seed: int, device: str, threads: int) -> dict:
    _set_threads(threads)
    return compute_calib(StudyConfig(**cfg_dict), spec, seed, device)


def _dense_task(cfg_dict: dict, device: str, threads: int) -> dict:
    _set_threads(threads)
    return compute_dense(StudyConfig(**cfg_dict), device)


def _cell_task(cfg_dict: dict, cell_dict: dict, calib_data: bytes, calib_metrics: dict, dense: dict,
               device: str, threads: int) -> dict:
    _set_threads(threads)
    t0 = time.perf_counter()
    try:
        result = compute_cell(StudyConfig(**cfg_dict), Cell(**cell_dict), calib_data, calib_metrics, dense, device)
        return {"ok": True, "result": result, "seconds": time.perf_counter() - t0}
    except Exception as err:  # noqa: BLE001 - reported to the driver, which records the failed cell
        return {"ok": False, "error": error_line(err), "traceback": traceback.format_exc(),
                "seconds": time.perf_counter() - t0}


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
        remote = {"dense": ray.remote(**opts)(_dense_task), "calib": ray.remote(**opts)(_calib_task),
                  "cell": ray.remote(max_retries=0, **opts)(_cell_task)}
        calib_err = _dense_and_calib(ray, remote, cfg, cfg_dict, store, cells, dev, threads, progress)
        progress.restart()  # the ETA counts cell times only, not the calibration phase
        _cells(ray, remote["cell"], cfg, cfg_dict, store, cells, dev, threads, progress, calib_err)
    finally:
        if started_here:
            ray.shutdown()


def _dense_and_calib(ray, remote: dict, cfg: StudyConfig, cfg_dict: dict, store: Store, cells: list[Cell], dev: str,
                     threads: int, progress: Progress) -> dict[str, tuple[str, str]]:
    """Phase 1: the dense evaluation and the missing calibration sets, in parallel; returns the calibration
    failures by calibration key (error line, traceback)."""
    pending: dict[Any, tuple] = {}
    if store.get_dense(dense_key(cfg)) is None:
        pending[remote["dense"].remote(cfg_dict, dev, threads)] = ("dense",)
    calib_err: dict[str, tuple[str, str]] = {}
    # generated sets first: they take longest, and a long task last would leave the other workers idle
    needed = dict.fromkeys((c.spec, c.seed) for c in cells)
    for spec, seed in sorted(needed, key=lambda k: not parse_spec(k[0]).needs_model):
        if store.get_calib(calib_key(cfg, spec, seed)) is None:
            pending[remote["calib"].remote(cfg_dict, spec, seed, dev, threads)] = ("calib", spec, seed)
    total, t0 = len(pending), time.perf_counter()
    if total:
        progress.note(f"building {total} calibration sets and evaluations of the dense model first")
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        what = pending.pop(ready[0])
        done = total - len(pending)
        eta = (time.perf_counter() - t0) / done * len(pending)
        progress.note(f"[{done}/{total}] {' '.join(map(str, what))} ready | ETA of this phase {eta / 60:.1f} min")
        try:
            got = ray.get(ready[0])
        except Exception as err:  # noqa: BLE001 - a failed task fails the cells that need it
            if what[0] == "dense":
                raise CalmixError(f"dense evaluation failed: {error_line(err)}") from None
            calib_err[calib_key(cfg, what[1], what[2])] = (error_line(err), traceback.format_exc())
            continue
        if what[0] == "dense":
            ensure_dense(cfg, store, dev, compute=lambda: got)
        else:
            store_calib(cfg, store, what[1], what[2], got)
    return calib_err


def _cells(ray, r_cell, cfg: StudyConfig, cfg_dict: dict, store: Store, cells: list[Cell], dev: str, threads: int,
           progress: Progress, calib_err: dict[str, tuple[str, str]]) -> None:
    """Phase 2: every cell as a task (a cell whose calibration failed is recorded as failed at once)."""
    dense = store.get_dense(dense_key(cfg))["result"]
    refs: dict[Any, Cell] = {}
    data_refs: dict[str, Any] = {}
    for cell in cells:
        key, ck = cell_key(cfg, cell), calib_key(cfg, cell.spec, cell.seed)
        store.start_cell(key, cell.row(), ck, dense_key(cfg))
        if ck in calib_err:
            store.fail_cell(key, "calibration failed: " + calib_err[ck][0], calib_err[ck][1], 0.0)
            progress.cell_failed(cell, calib_err[ck][0], 0.0, "calibration: ")
            continue
        row = store.get_calib(ck)
        if ck not in data_refs:
            data_refs[ck] = ray.put(row["data"])
        refs[r_cell.remote(cfg_dict, cell.to_dict(), data_refs[ck], row["metrics"], dense, dev, threads)] = cell
    while refs:
        ready, _ = ray.wait(list(refs), num_returns=1)
        cell = refs.pop(ready[0])
        key = cell_key(cfg, cell)
        try:
            got = ray.get(ready[0])
        except Exception as err:  # noqa: BLE001 - worker died: record and go on
            got = {"ok": False, "error": error_line(err), "traceback": traceback.format_exc(), "seconds": 0.0}
        if got["ok"]:
            store.finish_cell(key, got["result"], got["seconds"])
            progress.cell_done(cell, got["result"], got["seconds"])
        else:
            store.fail_cell(key, got["error"], got["traceback"], got["seconds"])
            progress.cell_failed(cell, got["error"], got["seconds"])
