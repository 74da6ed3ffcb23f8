"""The study's three units of work (calibrate, evaluate dense, prune + evaluate a cell) and how they reach the store.

They run in the runner's process (local backend) or in Ray workers. Each process loads its dense model once,
with its home in CPU memory, and keeps one dense copy of its weights there: a cell prunes the model in place
(its layers streamed to the device one at a time), is evaluated on the device, and gets the dense weights back.
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict
from typing import Any, Callable

from calmix.errors import CalmixError
from calmix.study.config import StudyConfig
from calmix.study.grid import Cell, calib_key, dense_key, prune_params
from calmix.study.store import Store

# calibration-set "metrics" that describe the set's shape, not its information content
SHAPE_KEYS = ("nsamples", "seqlen", "vocab_size")


@functools.lru_cache(maxsize=1)
def _load_dense(model: str, dtype: str, device: str) -> tuple[Any, Any, dict]:
    from calmix.models import load_model

    loaded, tok = load_model(model, device=device, dtype=dtype, home="cpu")
    loaded.eval()
    return loaded, tok, dense_weights(loaded)


def dense_model(cfg: StudyConfig, device: str) -> tuple[Any, Any]:
    """The dense model and tokenizer of a study, loaded once per process (only the latest one is kept); its home
    is CPU memory (calmix.placement.on_device puts it on the device to run it)."""
    model, tok, _ = _load_dense(cfg.model, cfg.dtype, str(device))
    return model, tok


def dense_weights(model: Any) -> dict[str, Any]:
    """A CPU copy of every parameter of the model, by name: the dense weights each cell starts from."""
    return {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters()}


def restore_weights(model: Any, weights: dict[str, Any]) -> None:
    """Copy `weights` (from dense_weights) back into the model's parameters, in place."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(weights[name])


def compute_calib(cfg: StudyConfig, spec: str, seed: int, device: str) -> dict:
    """Build one calibration set and its information metrics."""
    from calmix.calib import build_calib
    from calmix.calib.metrics import set_metrics

    t0, c0 = time.perf_counter(), time.process_time()
    from calmix.placement import on_device

    model, tok = dense_model(cfg, device)
    with on_device(model, device, cfg.max_gpu_memory):
        calib = build_calib(spec, tok, cfg.nsamples, cfg.seqlen, seed=seed, model=model, device=device,
                            bos=cfg.calib_bos)
        met = set_metrics(calib, model=model, tokenizer=tok, device=device)
    metrics = {k: v for k, v in met["set"].items() if k not in SHAPE_KEYS}
    card = {**calib.card, "study_build": {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}}
    return {"data": calib.to_bytes(), "card": card, "metrics": metrics, "seconds": time.perf_counter() - t0}


def compute_dense(cfg: StudyConfig, device: str) -> dict:
    """Evaluate the dense model once (the denominator of every retention)."""
    from calmix.evals import evaluate
    from calmix.placement import on_device

    t0 = time.perf_counter()
    model, tok = dense_model(cfg, device)
    with on_device(model, device, cfg.max_gpu_memory):
        res = evaluate(model, tok, suite=cfg.suite, tasks=cfg.tasks, limit=cfg.limit, seed=cfg.eval_seed,
                       device=device, progress=False, allow_unsafe_exec=cfg.allow_unsafe_exec)
    check_tasks(res, "dense evaluation")
    return {"result": res.to_dict(), "seconds": time.perf_counter() - t0}


def compute_cell(cfg: StudyConfig, cell: Cell, calib_data: bytes, calib_metrics: dict, dense: dict,
                 device: str) -> dict:
    """Prune the dense model in place with the cell's calibration set (its layers streamed to the device), evaluate
    it on the device, compare to dense; the dense weights are restored afterwards, whatever happened."""
    from calmix.calib.calibset import CalibSet
    from calmix.evals import evaluate
    from calmix.evals.retention import retention
    from calmix.placement import on_device
    from calmix.prune.engine import PruneConfig, prune_model

    times: dict[str, float] = {}
    work, tok, weights = _load_dense(cfg.model, cfg.dtype, str(device))
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        calib = CalibSet.from_bytes(calib_data)
        report = prune_model(work, calib, PruneConfig(**prune_params(cfg, cell)), device=device, progress=False)
        times["prune"] = time.perf_counter() - t0
        times["prune_cpu"] = time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        with on_device(work, device, cfg.max_gpu_memory):
            res = evaluate(work, tok, suite=cfg.suite, tasks=cfg.tasks, limit=cfg.limit, seed=cfg.eval_seed,
                           device=device, progress=False, allow_unsafe_exec=cfg.allow_unsafe_exec)
        times["eval"] = time.perf_counter() - t0
        times["eval_cpu"] = time.process_time() - c0
    finally:
        restore_weights(work, weights)
    check_tasks(res, "evaluation of the pruned model")
    errs = [r.rel_error for r in report.layers if r.rel_error is not None]
    prune = {"sparsity": report.sparsity, "timings": dict(report.timings), "config": asdict(report.config),
             "linears": len(report.layers), "mean_rel_error": sum(errs) / len(errs) if errs else None}
    return {"retention": retention(res, dense), "scores": res.to_dict(), "calib_metrics": calib_metrics,
            "prune": prune, "timings": times, "sandbox": sandbox_protections(cfg)}


def sandbox_protections(cfg: StudyConfig) -> dict | None:
    """The sandbox layers the study's code tasks run under (None: no task runs code); CalmixError where refused."""
    from calmix.evals.evaluate import sandbox_protections as protections

    return protections(cfg.suite, cfg.tasks, cfg.allow_unsafe_exec)


def check_tasks(res: Any, what: str) -> None:
    """An evaluation whose tasks failed cannot give a retention: raise with the first task's error."""
    failed = res.failed() if hasattr(res, "failed") else {}
    if failed:
        name, err = next(iter(failed.items()))
        more = f" (and {len(failed) - 1} more: {', '.join(list(failed)[1:])})" if len(failed) > 1 else ""
        raise CalmixError(f"{what}: task {name} failed: {err}{more}")


def error_line(err: BaseException) -> str:
    """The one line a failed unit of work records: exception type and the first line of its message."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}"[:500]


# results into the store ----------------------------------------------------------------------------------
def ensure_dense(cfg: StudyConfig, store: Store, device: str, compute: Callable[[], dict] | None = None,
                 progress: Any = None) -> dict:
    """The dense evaluation from the store, computed (or taken from `compute`) and stored first if absent."""
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


def store_calib(cfg: StudyConfig, store: Store, spec: str, seed: int, got: dict) -> None:
    """Record a result of compute_calib."""
    store.put_calib(calib_key(cfg, spec, seed), {"model": cfg.model, "spec": spec, "seed": seed,
                                                 "nsamples": cfg.nsamples, "seqlen": cfg.seqlen},
                    got["data"], got["card"], got["metrics"], got["seconds"])
