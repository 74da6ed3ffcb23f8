"""Scoring batches are sized from free device memory, never above the configured size."""

from __future__ import annotations

import importlib

import torch

from calmix import batching
from calmix.evals.tasks import get_task

ev = importlib.import_module("calmix.evals.evaluate")  # the module (the package exports the function by this name)


def _seen_batches(monkeypatch, model, free: int | None) -> list[int]:
    seen: list[int] = []
    monkeypatch.setattr(batching, "free_memory", lambda device: free)
    monkeypatch.setitem(ev.RUNNERS, "mc", lambda task, model, tok, items, ctx: seen.append(ctx["batch_size"]) or {})
    ev.run_task(get_task("arc_easy"), model, None, [], {"batch_size": 16, "gen_batch_size": 8, "device": "cpu"})
    return seen


def test_scoring_batches_fit_the_free_memory(monkeypatch, tiny_model):
    cfg, dtype = tiny_model.config, next(tiny_model.parameters()).dtype
    seqlen = min(ev.max_context(tiny_model), ev.SCORED_ROW_TOKENS)
    per_row = batching.row_bytes(cfg, dtype, seqlen, logit_positions=ev.SCORED_POSITIONS)
    # room for exactly 3 rows in the usable share of free memory: 3 rows; plenty of room or unknown: the cap
    free = int((3 * per_row + per_row // 2) / batching.FREE_SHARE)
    assert _seen_batches(monkeypatch, tiny_model, free) == [3]
    assert _seen_batches(monkeypatch, tiny_model, 10**15) == [16]
    assert _seen_batches(monkeypatch, tiny_model, None) == [16]
    assert isinstance(per_row, int) and per_row > 0 and dtype == torch.float32
