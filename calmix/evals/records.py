"""Evaluation data access: where each split of a task lives (shared file, package, hub) and its canonical records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from calmix.data import bigbench, resolve
from calmix.data.files import read_rows
from calmix.data.hub import hub_rows
from calmix.data.reserved import BIGBENCH_EVAL_TASKS
from calmix.errors import CalmixError
from calmix.paths import shared_data


@dataclass(frozen=True)
class Hub:
    """Where a split lives on the HF hub: datasets.load_dataset(path, name, split=split)."""

    path: str
    name: str | None
    split: str


@dataclass(frozen=True)
class Source:
    """One split of a task's data: a file under shared_data(), a package loader, a hub split; each with a parser."""

    local: str | None = None                       # path relative to shared_data()
    local_parse: Callable[[dict], dict] | None = None
    package: Callable[[], list[dict]] | None = None  # returns canonical records; LookupError when absent
    hub: Hub | None = None
    hub_parse: Callable[[dict], dict] | None = None
    post: Callable[[list[dict]], list[dict]] | None = None  # applied to the records from any origin

    def places(self) -> list[resolve.Place]:
        """Where this split can come from, in resolution order (shared file, package, hub)."""
        out = []
        if self.local:
            root = shared_data()
            path = root / self.local if root is not None else None

            def local_ok() -> tuple[bool, str]:
                if path is not None and path.is_file():
                    return True, f"file {path}"
                where = str(path) if path is not None else f"$CALMIX_DATA/{self.local} or ../shared/data/{self.local}"
                return False, f"file {where} (not found)"

            out.append(resolve.Place("local", local_ok, lambda: _parsed(read_rows(path), self.local_parse)))
        if self.package is not None:
            out.append(resolve.Place("package", lambda: (True, "package"), self.package, label="package"))
        if self.hub is not None:
            h = self.hub
            label = f"hub {h.path}{'/' + h.name if h.name else ''} split {h.split}"
            out.append(resolve.Place("hub", lambda: (True, label),
                                     lambda: _parsed(hub_rows(h.path, h.name, h.split), self.hub_parse), label=label))
        return out


def _parsed(rows: list[dict], parse: Callable[[dict], dict] | None) -> list[dict]:
    return [parse(r) for r in rows] if parse else rows


def load_source(task: str, split: str, src: Source) -> list[dict]:
    """Canonical records of one split (shared data file, else package, else hub), after the source's post-filter;
    a clear error names every place tried."""
    try:
        _, rows = resolve.load(src.places())
    except resolve.Unavailable as err:
        raise CalmixError(f"no data for task '{task}' split '{split}': looked at " + "; ".join(err.reasons)
                          + " -- set CALMIX_DATA to a data folder, install the package, or install `datasets` with hub access"
                          ) from None
    return src.post(rows) if src.post else rows


# ---------------------------------------------------------------------------------------------- BIG-bench
def bigbench_task(name: str) -> dict:
    """task.json of one BIG-bench evaluation task (see calmix.data.bigbench; LookupError when it is not here)."""
    return bigbench.task_json(name, BIGBENCH_EVAL_TASKS)


def bigbench_mc(name: str) -> Callable[[], list[dict]]:
    """A multiple-choice BIG-bench task as (question, choices, label) rows; the label is the best-scored choice."""
    def load() -> list[dict]:
        rows = []
        for ex in bigbench_task(name)["examples"]:
            choices = list(ex["target_scores"])
            scores = [ex["target_scores"][c] for c in choices]
            rows.append({"question": ex["input"].strip(), "choices": choices, "label": scores.index(max(scores))})
        return rows

    return load


def bigbench_cloze(name: str) -> Callable[[], list[dict]]:
    """A generative BIG-bench task as (context, first gold target as continuation) rows, the LAMBADA row shape;
    examples without a target are skipped."""
    def load() -> list[dict]:
        rows = []
        for ex in bigbench_task(name)["examples"]:
            target = ex.get("target")
            target = target[0] if isinstance(target, list) and target else target
            if isinstance(target, str) and target.strip() and ex.get("input", "").strip():
                rows.append({"context": ex["input"].strip(), "continuation": target.strip()})
        return rows

    return load
