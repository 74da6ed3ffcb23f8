"""lm-evaluation-harness adapter: evaluate an in-memory model with lm-eval, offline tasks on shared JSONL files."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from calmix.data.reserved import eval_file
from calmix.errors import CalmixError
from calmix.evals.formats import QA_PROMPT, SHORT_QA_PROMPT
from calmix.paths import shared_data

LMEVAL_MISSING = "lm-eval is not installed: pip install 'calmix[lm-eval]'"

# lm-eval task name pattern -> calmix capability dimension (first match wins; calmix_ prefixes are stripped first)
DIMENSION_PATTERNS: tuple[tuple[str, str], ...] = (
    ("mmlu*", "General"), ("triviaqa*", "General"), ("lambada*", "General"),
    ("arc*", "Commonsense"), ("ai2_arc*", "Commonsense"), ("hellaswag*", "Commonsense"), ("piqa*", "Commonsense"),
    ("winogrande*", "Commonsense"), ("boolq*", "Commonsense"), ("openbookqa*", "Commonsense"),
    ("siqa*", "Commonsense"), ("social_iqa*", "Commonsense"), ("copa*", "Commonsense"),
    ("humaneval*", "Code"), ("mbpp*", "Code"),
    ("gsm8k*", "Math"), ("math*", "Math"), ("hendrycks_math*", "Math"), ("minerva_math*", "Math"),
)

# headline metric, in order of preference, when a task does not name one
HEADLINE_METRICS = ("acc_norm", "acc", "exact_match", "pass@1", "pass_at_1", "f1", "em", "word_perplexity")


@dataclass(frozen=True)
class LocalTask:
    """An lm-eval multiple-choice task on a JSONL file under shared_data(), with calmix's prompt format."""

    data: str           # path relative to shared_data()
    doc_to_text: str
    doc_to_target: str
    doc_to_choice: str
    metric: str         # headline metric, the same as calmix's own task of that name
    dimension: str = "Commonsense"


# The prompts are calmix's own (calmix.evals.formats: fmt_arc, fmt_piqa, fmt_obqa, fmt_copa, fmt_siqa) with the
# record field as a Jinja expression in the template's slot: context + " " + choice, as calmix scores them.
LOCAL_TASKS: dict[str, LocalTask] = {
    "calmix_arc_easy": LocalTask(eval_file("arc_easy", "test"), QA_PROMPT.format("{{question}}"), "{{label}}",
                                 "{{choices}}", "acc_norm"),
    "calmix_arc_challenge": LocalTask(eval_file("arc_challenge", "test"), QA_PROMPT.format("{{question}}"),
                                      "{{label}}", "{{choices}}", "acc_norm"),
    "calmix_piqa": LocalTask(eval_file("piqa", "validation"), QA_PROMPT.format("{{goal}}"), "{{label}}",
                             "{{[sol1, sol2]}}", "acc_norm"),
    "calmix_openbookqa": LocalTask(eval_file("openbookqa", "test"), "{{query}}", "{{gold}}", "{{choices}}", "acc_norm"),
    "calmix_copa": LocalTask(eval_file("copa", "validation"), "{{query}}", "{{gold}}", "{{choices}}", "acc"),
    "calmix_siqa": LocalTask(eval_file("siqa", "validation"), SHORT_QA_PROMPT.format("{{question.strip()}}"),
                             "{{label}}", "{{choices}}", "acc"),
}


def task_dimension(name: str) -> tuple[str, str | None]:
    """Calmix dimension of an lm-eval task name, with a note when it is unknown ("Other")."""
    if name in LOCAL_TASKS:
        return LOCAL_TASKS[name].dimension, None
    base = name[len("calmix_"):] if name.startswith("calmix_") else name
    for pattern, dim in DIMENSION_PATTERNS:
        if fnmatch.fnmatch(base, pattern):
            return dim, None
    return "Other", f"task '{name}' has no calmix dimension; it is reported as Other and left out of retention"


def lmeval_task_yaml(name: str, data_root: Path | str | None = None) -> str:
    """The lm-eval task YAML of a calmix local task, with the absolute path of its shared data file."""
    if name not in LOCAL_TASKS:
        raise CalmixError(f"unknown calmix lm-eval task '{name}': known are {', '.join(sorted(LOCAL_TASKS))}")
    spec = LOCAL_TASKS[name]
    root = Path(data_root) if data_root is not None else shared_data()
    if root is None or not (root / spec.data).is_file():
        where = root / spec.data if root is not None else f"$CALMIX_DATA/{spec.data}"
        raise CalmixError(f"lm-eval task '{name}' needs {where}: set CALMIX_DATA to the shared data folder")
    config = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str((root / spec.data).resolve())}},
        "output_type": "multiple_choice",
        "test_split": "test",
        "doc_to_text": spec.doc_to_text,
        "doc_to_target": spec.doc_to_target,
        "doc_to_choice": spec.doc_to_choice,
        "target_delimiter": " ",
        "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in ("acc", "acc_norm")],
        "metadata": {"version": 1.0, "calmix_headline": spec.metric},
    }
    try:
        import yaml
    except ImportError:  # JSON is valid YAML
        return json.dumps(config, indent=2, ensure_ascii=False) + "\n"
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True)


def _parse_metrics(raw: dict) -> dict[str, float]:
    """lm-eval's {"acc,none": x, "alias": ...} -> {"acc": x} (non-default filters keep their suffix)."""
    out = {}
    for key, value in raw.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or "," not in key:
            continue
        metric, filt = key.split(",", 1)
        out[metric if filt == "none" else f"{metric}:{filt}"] = float(value)
    return out


def _headline(name: str, metrics: dict[str, float]) -> str | None:
    if name in LOCAL_TASKS and LOCAL_TASKS[name].metric in metrics:
        return LOCAL_TASKS[name].metric
    for pref in HEADLINE_METRICS:
        for key in metrics:
            if key == pref or key.startswith(pref + ":"):
                return key
    return next((k for k in metrics if not k.endswith("_stderr") and "_stderr:" not in k), None)


def _samples(rows: list[dict]) -> list[dict]:
    """Per-document log-likelihoods of a multiple-choice task, from lm-eval's logged samples."""
    out = []
    for row in sorted(rows, key=lambda r: r["doc_id"]):
        resps = row.get("filtered_resps") or row.get("resps") or []
        lls = [float(r[0]) if isinstance(r, (list, tuple)) else float(r) for r in resps]
        out.append({"doc_id": row["doc_id"], "target": row.get("target"), "logprobs": lls})
    return out


def run_lm_eval(model, tokenizer, tasks: list[str], limit: int | None, device: str = "cpu", batch_size: int = 8,
                seed: int = 0, return_samples: bool = False) -> dict[str, dict]:
    """Run lm-eval tasks on an in-memory model: task -> {"dimension", "score", "metrics"} (plus "note" if unmapped).

    With return_samples, each entry also holds "samples": per document {doc_id, target, logprobs} (MC tasks).
    """
    if importlib.util.find_spec("lm_eval") is None:
        raise CalmixError(LMEVAL_MISSING)
    if not tasks:
        raise CalmixError("no lm-eval tasks given: name at least one (e.g. calmix_arc_easy)")
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as err:
        raise CalmixError(f"lm-eval cannot be imported ({err}): pip install 'calmix[lm-eval]'") from None
    if getattr(model, "hf_device_map", None) is None:  # a model spread by accelerate stays where it was put
        model = model.to(device)
    model = model.eval()
    local = [t for t in tasks if t in LOCAL_TASKS]
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="calmix-lmeval-") as tmp:
        for name in local:
            (Path(tmp) / f"{name}.yaml").write_text(lmeval_task_yaml(name), encoding="utf-8")
        manager = TaskManager(include_path=tmp if local else None, include_defaults=len(local) < len(tasks))
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        try:
            out = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), limit=limit, task_manager=manager,
                                          log_samples=return_samples, random_seed=seed, numpy_random_seed=seed,
                                          torch_random_seed=seed, fewshot_random_seed=seed, bootstrap_iters=0,
                                          verbosity="WARNING")
        except (KeyError, ValueError) as err:
            raise CalmixError(f"lm-eval could not run tasks {tasks}: {err}") from None
    if out is None or "results" not in out:
        raise CalmixError("lm-eval returned no results (is this a non-zero rank of a distributed run?)")
    results = {}
    for name in tasks:
        if name not in out["results"]:
            raise CalmixError(f"lm-eval returned no result for task '{name}' (got {', '.join(out['results'])})")
        metrics = _parse_metrics(out["results"][name])
        head = _headline(name, metrics)
        dim, note = task_dimension(name)
        entry = {"dimension": dim, "score": metrics.get(head) if head else None, "metric": head, "metrics": metrics,
                 "n": (out.get("n-samples") or {}).get(name, {}).get("effective")}
        if note:
            entry["note"] = note
        if return_samples:
            entry["samples"] = _samples(out.get("samples", {}).get(name, []))
        results[name] = entry
    return results
