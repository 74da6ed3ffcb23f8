"""The evaluation Task type, the task registry, and item selection (seeded subsets, few-shot draws)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields
from typing import Any, Callable

from calmix.data.dimensions import DIMENSIONS
from calmix.errors import CalmixError
from calmix.evals.records import Source, load_source
from calmix.fingerprint import digest
from calmix.registry import Registry
from calmix.runrecord import to_jsonable


@dataclass(frozen=True)
class Task:
    """One evaluation task: data splits, few-shot policy, prompt formatter, scorer kind and metrics."""

    name: str
    dimension: str
    kind: str                               # mc | probe | gen | code
    eval_split: str
    splits: dict[str, Source]
    formatter: Callable[[dict, list[dict]], dict]
    metric: str = "acc"                     # headline metric (mc: acc|acc_norm; gen: strict|flexible; code: pass@1)
    num_fewshot: int = 0
    fewshot_split: str | None = None        # never the eval split
    fewshot_by: str | None = None           # draw shots from records sharing this field (MMLU subject)
    default_limit: int | None = None
    prepare: Callable[[list[dict]], list[dict]] | None = None   # e.g. cut text into passages
    stop: tuple[str, ...] = ()
    max_new_tokens: int = 256
    program: str | None = None              # code tasks: name of the calmix.evals.codeexec assembler
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def records(self, split: str | None = None) -> list[dict]:
        """All canonical records of a split (default: the evaluation split)."""
        split = split or self.eval_split
        if split not in self.splits:
            raise CalmixError(f"task '{self.name}' has no split '{split}' (it has {', '.join(self.splits)})")
        rows = load_source(self.name, split, self.splits[split])
        return self.prepare(rows) if self.prepare else rows


TASKS: Registry[Task] = Registry("task")


def register(task: Task) -> Task:
    """Add a task to the registry (a name registered twice is refused)."""
    if task.dimension not in DIMENSIONS:
        raise ValueError(f"task {task.name}: unknown dimension {task.dimension}")
    if task.fewshot_split is not None and task.fewshot_split == task.eval_split:
        raise ValueError(f"task {task.name}: few-shot examples must not come from the evaluation split")
    return TASKS.add(task.name, task)


def get_task(name: str) -> Task:
    """A registered task by name; unknown names list the known ones."""
    return TASKS.get(name)


def select(n: int, limit: int | None, seed: int) -> list[int]:
    """Indices of a seeded subset of size limit (all, in order, when limit is None or >= n); sorted."""
    if limit is None or limit >= n:
        return list(range(n))
    if limit <= 0:
        raise CalmixError(f"--limit must be positive (got {limit})")
    return sorted(random.Random(seed).sample(range(n), limit))


def fewshot_pool(task: Task, seed: int) -> list[dict]:
    """Few-shot candidates, drawn from the task's train/dev split only."""
    if not task.num_fewshot:
        return []
    assert task.fewshot_split and task.fewshot_split != task.eval_split
    return task.records(task.fewshot_split)


def choose_shots(task: Task, pool: list[dict], record: dict, seed: int) -> list[dict]:
    """The few-shot examples for one record: same-field group in order (MMLU dev), else a fixed seeded draw."""
    if not task.num_fewshot:
        return []
    if task.fewshot_by:
        same = [p for p in pool if p[task.fewshot_by] == record[task.fewshot_by]]
        return same[:task.num_fewshot]
    return random.Random(seed).sample(pool, min(task.num_fewshot, len(pool)))


def build_items(task: Task, limit: int | None = None, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """The seeded evaluation subset of a task as (records, formatted requests)."""
    rows = task.records()
    if not rows:
        raise CalmixError(f"task '{task.name}' has no records in split '{task.eval_split}'")
    lim = limit if limit is not None else task.default_limit
    picked = [rows[i] for i in select(len(rows), lim, seed)]
    pool = fewshot_pool(task, seed)
    return picked, [task.formatter(r, choose_shots(task, pool, r, seed)) for r in picked]


def _declaration(task: Task) -> dict:
    """The task's declared fields, callables by their qualified name (their output is fingerprinted by the items)."""
    out: dict[str, Any] = {}
    for f in fields(task):
        value = getattr(task, f.name)
        if f.name == "splits":
            value = sorted(value)
        elif callable(value):
            value = f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', repr(value))}"
        out[f.name] = to_jsonable(value)
    return out


def task_fingerprint(task: Task, limit: int | None = None, seed: int = 0) -> str:
    """Digest of what a task's score depends on besides the model: its declaration (kind, metric, splits,
    few-shot policy, stop strings, ...) and the formatted requests it builds (data, item selection, prompts)."""
    try:
        _, requests = build_items(task, limit=limit, seed=seed)
        built: Any = digest(to_jsonable(requests))
    except (CalmixError, OSError, ValueError, KeyError, RuntimeError, ImportError) as err:  # an unavailable task is keyed by why; its evaluation fails and is not cached
        built = f"unavailable: {err}"
    return digest({"task": _declaration(task), "items": built})
