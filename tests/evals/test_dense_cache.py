"""The dense-score cache key: it changes with a task's definition (its prompt) and with the model's weights."""

from __future__ import annotations

import dataclasses

import torch

from calmix.evals.evaluate import dense_cache_key
from calmix.evals.task import TASKS, get_task

TASK = "humaneval_probe_pkg"  # package-only data: no shared data needed


def test_key_changes_when_a_prompt_changes(tiny_dir):
    before = dense_cache_key(str(tiny_dir), "small-offline", [TASK], 2, 0)
    assert dense_cache_key(str(tiny_dir), "small-offline", [TASK], 2, 0) == before  # stable
    task = get_task(TASK)

    def reworded(record, shots):
        req = task.formatter(record, shots)
        return {**req, "context": "# Complete the function.\n" + req["context"]}

    TASKS.remove(TASK)
    try:
        TASKS.add(TASK, dataclasses.replace(task, formatter=reworded))
        assert dense_cache_key(str(tiny_dir), "small-offline", [TASK], 2, 0) != before
        TASKS.remove(TASK)
        TASKS.add(TASK, dataclasses.replace(task, max_new_tokens=task.max_new_tokens + 1))  # a declared field
        assert dense_cache_key(str(tiny_dir), "small-offline", [TASK], 2, 0) != before
    finally:
        TASKS.remove(TASK)
        TASKS.add(TASK, task)
    assert dense_cache_key(str(tiny_dir), "small-offline", [TASK], 2, 0) == before
    assert dense_cache_key(str(tiny_dir), "small-offline", [TASK], 3, 0) != before  # other items


def test_key_changes_when_weights_change(tmp_path, tiny_model, tiny_tokenizer):
    folder = tmp_path / "m"
    tiny_model.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    before = dense_cache_key(str(folder), "small-offline", [TASK], 2, 0)
    with torch.no_grad():
        next(tiny_model.parameters()).add_(1.0)
    tiny_model.save_pretrained(folder)  # same shapes, same file sizes: the stamp still differs
    assert dense_cache_key(str(folder), "small-offline", [TASK], 2, 0) != before
