"""Run a suite task by task (a failing task is recorded, never fatal) and cache dense-model scores on disk."""

from __future__ import annotations

import json
import logging
import math
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from calmix.batching import halving, memory_batch
from calmix.errors import CalmixError
from calmix.evals import scorers
from calmix.evals.loglik import max_context
from calmix.evals.floor import floor_of_nll, floor_of_rate, floor_of_scores, unigram_nll
from calmix.evals.itemscores import choice_mass_cn, item_table
from calmix.evals.suites import SUITES, get_suite, suite_tasks
from calmix.evals.task import task_fingerprint
from calmix.evals.tasks import DIMENSIONS, Task, build_items, get_task
from calmix.fingerprint import digest, file_stamp

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    """Per-task results ({dimension, score, metric, metrics, n, failures}) and per-dimension mean scores."""

    suite: str
    tasks: dict[str, dict]
    dimensions: dict[str, float | None]
    config: dict = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "EvalResult":
        """Inverse of to_dict."""
        return cls(suite=data["suite"], tasks=data["tasks"], dimensions=data["dimensions"],
                   config=data.get("config", {}), timings=data.get("timings", {}))

    def failed(self) -> dict[str, str]:
        """Tasks that raised, with their error."""
        return {k: v["error"] for k, v in self.tasks.items() if v.get("error")}


def dimension_scores(tasks: dict[str, dict]) -> dict[str, float | None]:
    """Mean task score per dimension (None where no task of the dimension has a score)."""
    out: dict[str, float | None] = {}
    for dim in DIMENSIONS:
        vals = [t["score"] for t in tasks.values() if t["dimension"] == dim and t.get("score") is not None]
        out[dim] = sum(vals) / len(vals) if vals else None
    return out


def _cn(x: float, chance: float) -> float:
    return (x - chance) / (1.0 - chance)


# ---------------------------------------------------------------------------------------------- runners per kind
def run_mc(task: Task, model, tokenizer, items: list[dict], ctx: dict) -> dict:
    """Multiple choice: acc, acc_norm, chance and the chance-corrected choice mass; the headline score is the choice
    mass for `mass_cn` tasks, else acc/acc_norm, chance-normalised when the suite says so."""
    res = scorers.score_mc_items(model, tokenizer, items, batch_size=ctx["batch_size"], device=ctx["device"],
                                 progress=ctx["progress"], desc=task.name)
    n = len(res)
    acc = sum(r["acc"] for r in res) / n
    acc_norm = sum(r["acc_norm"] for r in res) / n
    chance = [r["chance"] for r in res]
    mass = [choice_mass_cn(r["logprobs"], it["gold"]) for r, it in zip(res, items)]
    metrics = {"acc": acc, "acc_norm": acc_norm, "chance": sum(chance) / n, "mass_cn": sum(mass) / n}
    metrics.update(acc_cn=_cn(acc, metrics["chance"]), acc_norm_cn=_cn(acc_norm, metrics["chance"]))
    if task.metric == "mass_cn":
        metric, per_item, floor = "mass_cn", item_table("mass_cn", items, value=mass), floor_of_scores(mass, task.name)
    else:
        metric = task.metric + ("_cn" if ctx["chance_normalise"] else "")
        values = [r[task.metric] for r in res]
        per_item = (item_table("mean_cn", items, value=values, chance=chance) if ctx["chance_normalise"]
                    else item_table("mean", items, value=values))
        floor = floor_of_rate(values, chance, task.name)
    return {"score": metrics[metric], "metric": metric, "metrics": metrics, "n": n, "failures": [],
            "items": per_item, "floor": floor}


def run_probe(task: Task, model, tokenizer, items: list[dict], ctx: dict) -> dict:
    """Likelihood probe: token-weighted NLL per token of the references; score exp(-NLL), so the retention
    pruned/dense is exp(-(NLL_pruned - NLL_dense)). Floor: the NLL of a unigram model of the references."""
    failures = [{"index": i, "reason": "empty reference"} for i, it in enumerate(items) if not it["reference"].strip()]
    bad = {f["index"] for f in failures}
    keep = [it for i, it in enumerate(items) if i not in bad]
    res = scorers.score_probe_items(model, tokenizer, keep, batch_size=ctx["batch_size"], device=ctx["device"],
                                    progress=ctx["progress"], desc=task.name)
    nll, score = scorers.probe_score(res)
    nlls, tokens = [r["nll"] for r in res], [r["ntokens"] for r in res]
    metrics = {"nll": nll, "ppl": math.exp(nll), "tokens": sum(tokens)}
    refs = [scorers.encode_pair(tokenizer, it["context"], it["reference"])[1] for it in keep]
    baseline = unigram_nll(refs, len(tokenizer))
    metrics["unigram_nll"] = sum(baseline) / sum(tokens)
    return {"score": score, "metric": "exp(-nll)", "metrics": metrics, "n": len(res), "failures": failures,
            "items": item_table("exp_neg_nll", keep, nll=nlls, tokens=tokens),
            "floor": floor_of_nll(nlls, tokens, baseline, task.name)}


def run_gsm8k(task: Task, model, tokenizer, items: list[dict], ctx: dict) -> dict:
    """GSM8K-style generation: greedy CoT, exact match with strict and flexible extraction."""
    outs = scorers.generate_greedy(model, tokenizer, [it["prompt"] for it in items], stop=task.stop,
                                   max_new_tokens=task.max_new_tokens, batch_size=ctx["gen_batch_size"],
                                   device=ctx["device"], progress=ctx["progress"], desc=task.name)
    hits: dict[str, list[float]] = {"strict": [], "flexible": []}
    failures = []
    samples = []
    for i, (it, text) in enumerate(zip(items, outs)):
        gold = scorers.gsm8k_gold(it["answer"])
        if not text.strip():
            failures.append({"index": i, "reason": "empty generation"})
        s, f = scorers.extract_strict(text), scorers.extract_flexible(text)
        hits["strict"].append(float(s == gold))
        hits["flexible"].append(float(f == gold))
        if i < 3:
            samples.append({"gold": gold, "generation": text[:400], "strict": s, "flexible": f})
    n = len(items)
    metrics = {"strict": sum(hits["strict"]) / n, "flexible": sum(hits["flexible"]) / n, "samples": samples}
    return {"score": metrics[task.metric], "metric": task.metric, "metrics": metrics, "n": n, "failures": failures,
            "items": item_table("mean", items, value=hits[task.metric]),
            "floor": floor_of_rate(hits[task.metric], 0.0, task.name)}


def score_code_completions(task: Task, items: list[dict], completions: list[str], workers: int = 2,
                           allow_unsafe_exec: bool = False) -> dict:
    """Assemble each completion with its tests, run them in the sandbox, and score pass@1 (empty ones are failures);
    the sandbox layers used are recorded in the metrics."""
    try:
        from calmix.evals import codeexec
    except ImportError as err:
        raise CalmixError(f"task {task.name} needs calmix.evals.sandbox and calmix.evals.codeexec ({err})") from None
    assemble: Callable[[dict, str], str] = getattr(codeexec, task.program)
    failures = [{"index": i, "reason": "empty generation"} for i, c in enumerate(completions) if not c.strip()]
    programs = [assemble(it["problem"], c) for it, c in zip(items, completions)]
    results = codeexec.run_many(programs, workers=workers, desc=task.name, allow_unsafe_exec=allow_unsafe_exec)
    statuses: dict[str, int] = {}
    for r in results:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    pass1 = float(codeexec.pass_at_1(results))
    metrics = {"pass@1": pass1, "statuses": statuses, "passed": [bool(r.passed) for r in results],
               "sandbox": codeexec.exec_protections(allow_unsafe_exec)}
    passed = [float(bool(r.passed)) for r in results]
    return {"score": pass1, "metric": "pass@1", "metrics": metrics, "n": len(items), "failures": failures,
            "items": item_table("mean", items, value=passed), "floor": floor_of_rate(passed, 0.0, task.name)}


def run_code(task: Task, model, tokenizer, items: list[dict], ctx: dict) -> dict:
    """Code generation: greedy completion, program assembled with its tests, executed in the sandbox; pass@1."""
    from calmix.evals.codeexec import exec_protections

    exec_protections(ctx["allow_unsafe_exec"])  # refuse before generating, not after
    outs = scorers.generate_greedy(model, tokenizer, [it["prompt"] for it in items], stop=task.stop,
                                   max_new_tokens=task.max_new_tokens, batch_size=ctx["gen_batch_size"],
                                   device=ctx["device"], progress=ctx["progress"], desc=task.name)
    return score_code_completions(task, items, outs, allow_unsafe_exec=ctx["allow_unsafe_exec"])


RUNNERS: dict[str, Callable[[Task, Any, Any, list[dict], dict], dict]] = {
    "mc": run_mc, "probe": run_probe, "gen": run_gsm8k, "code": run_code}


# ---------------------------------------------------------------------------------------------- evaluate
def sandbox_protections(suite: str | None, tasks: list[str] | None = None,
                        allow_unsafe_exec: bool = False) -> dict | None:
    """The sandbox layers under which these tasks run model-written code (None when none of them runs code);
    CalmixError, before anything runs, where kernel isolation is unavailable and `allow_unsafe_exec` is not set."""
    from calmix.evals.codeexec import exec_protections

    if not any(get_task(n).kind == "code" for n in suite_tasks(suite or "small", tasks)):
        return None
    return exec_protections(allow_unsafe_exec)


SCORED_ROW_TOKENS = 2048  # the longest scoring row the batch is sized for (packed rows are capped near it)
SCORED_POSITIONS = 256  # logits are computed at the scored positions of a row only


def run_task(task: Task, model, tokenizer, items: list[dict], ctx: dict) -> dict:
    """The task's runner with batches sized from free device memory (calmix.batching.memory_batch, never above the
    configured size); on out-of-memory run again with half the batch sizes (calmix.batching.halving)."""
    full = ctx["batch_size"]
    start = memory_batch(model, full, min(max_context(model), SCORED_ROW_TOKENS), ctx["device"],
                         logit_positions=SCORED_POSITIONS)

    def run(rows: int) -> dict:
        gen = max(1, ctx["gen_batch_size"] * rows // full)  # both shrink by the same factor
        return RUNNERS[task.kind](task, model, tokenizer, items, {**ctx, "batch_size": rows, "gen_batch_size": gen})

    return halving(run, start, f"task {task.name}")


def evaluate(model, tokenizer, suite: str = "small", tasks: list[str] | None = None, limit: int | None = None,
             seed: int = 0, device: str = "cpu", batch_size: int = 16, progress: bool = True,
             gen_batch_size: int = 8, allow_unsafe_exec: bool = False) -> EvalResult:
    """Evaluate a model on a suite (or an explicit task list), task by task; a failing task is recorded with its error.
    Code tasks are refused where the sandbox has no kernel isolation, unless `allow_unsafe_exec`."""
    scorers.require_tokenizer(tokenizer)
    spec = get_suite(suite)
    names = suite_tasks(suite, tasks)
    ctx = {"device": device, "batch_size": batch_size, "gen_batch_size": gen_batch_size, "progress": progress,
           "chance_normalise": spec.chance_normalise, "allow_unsafe_exec": allow_unsafe_exec}
    was_training = model.training
    model.eval()
    out: dict[str, dict] = {}
    timings: dict[str, float] = {}
    for name in names:
        task = get_task(name)
        t0 = time.perf_counter()
        entry: dict[str, Any] = {"dimension": task.dimension, "kind": task.kind}
        try:
            _, items = build_items(task, limit=limit, seed=seed)
            entry.update(run_task(task, model, tokenizer, items, ctx))
        except (CalmixError, RuntimeError, ValueError, KeyError, OSError, ImportError) as err:
            log.warning("task %s failed: %s", name, err)
            entry.update({"score": None, "metric": task.metric, "metrics": {}, "n": 0, "failures": [],
                          "error": f"{type(err).__name__}: {err}"})
            if not isinstance(err, CalmixError):
                entry["traceback"] = traceback.format_exc(limit=4)
        seconds = time.perf_counter() - t0
        entry["seconds"] = round(seconds, 3)
        if entry.get("n"):
            entry["items_per_s"] = round(entry["n"] / seconds, 2)
        timings[name] = seconds
        out[name] = entry
    model.train(was_training)
    config = {"suite": suite, "tasks": names, "limit": limit, "seed": seed, "batch_size": batch_size,
              "device": str(device), "chance_normalise": spec.chance_normalise}
    return EvalResult(suite=suite, tasks=out, dimensions=dimension_scores(out), config=config, timings=timings)


# ---------------------------------------------------------------------------------------------- dense cache
def model_fingerprint(model_spec: str) -> str:
    """Identity of the weights behind a spec: the spec plus, for a local folder or file, the sizes and mtimes of its
    files (re-saved weights change it), and for a built-in model the stamp of its packaged weights file."""
    from calmix.models import BUILTIN_MODELS

    p = Path(str(model_spec)).expanduser()
    if p.exists():
        files = sorted(p.rglob("*")) if p.is_dir() else [p]
        stats = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()]
        return json.dumps([str(p.resolve()), stats])
    if str(model_spec) in BUILTIN_MODELS:
        try:
            return json.dumps([str(model_spec), file_stamp(BUILTIN_MODELS.get(str(model_spec))[1]())])
        except (CalmixError, OSError):  # the package is missing: loading the model fails with the clear error
            pass
    return str(model_spec)


def dense_cache_key(model_spec: str, suite: str, tasks: list[str] | None, limit: int | None, seed: int,
                    dtype: str = "float32") -> str:
    """Cache key of a dense evaluation: the weights (model_fingerprint), dtype, suite and its scoring rule, and per
    task its limit and task_fingerprint (declaration, data, item selection, prompts), seed, calmix version."""
    import calmix
    from calmix.models import resolve_dtype

    names = suite_tasks(suite, tasks)
    limits = {n: (limit if limit is not None else get_task(n).default_limit) for n in names}
    definitions = {n: task_fingerprint(get_task(n), limit=limit, seed=seed) for n in names}
    return digest({"model": model_fingerprint(model_spec), "suite": suite, "tasks": names, "limits": limits,
                   "chance_normalise": get_suite(suite).chance_normalise, "definitions": definitions,
                   "seed": seed, "dtype": str(resolve_dtype(dtype)), "version": calmix.__version__}, 16)


def dense_scores(model_spec: str, model=None, tokenizer=None, suite: str = "small", limit: int | None = None,
                 seed: int = 0, tasks: list[str] | None = None, device: str = "cpu", batch_size: int = 16,
                 progress: bool = True, cache: bool = True, dtype: str = "float32",
                 allow_unsafe_exec: bool = False) -> EvalResult:
    """Scores of the dense model in dtype, from the disk cache when present, else evaluated (loading the model if
    needed) and cached.

    Results with failed tasks are returned but not cached.
    """
    from calmix.paths import cache_dir
    from calmix.runrecord import write_json_atomic

    get_suite(suite)
    key = dense_cache_key(model_spec, suite, tasks, limit, seed, dtype)
    path = cache_dir("dense") / f"{key}.json"
    if cache and path.is_file():
        try:
            data = json.loads(path.read_text())
            result = EvalResult.from_dict(data["result"])
            result.config["cached"] = str(path)
            return result
        except (ValueError, KeyError) as err:
            log.warning("ignoring unreadable dense cache %s: %s", path, err)
    from calmix.placement import on_device

    if model is None:
        from calmix.models import load_model

        model, tokenizer = load_model(model_spec, device=device, dtype=dtype, home="cpu")
    with on_device(model, device):  # whole where it fits the device, else offloaded to CPU memory
        result = evaluate(model, tokenizer, suite=suite, tasks=tasks, limit=limit, seed=seed, device=device,
                          batch_size=batch_size, progress=progress, allow_unsafe_exec=allow_unsafe_exec)
    if cache and not result.failed():
        write_json_atomic(path, {"model": str(model_spec), "key": key, "result": result.to_dict()})
    result.config["cache_path"] = str(path)
    return result


__all__ = ["EvalResult", "evaluate", "dense_scores", "dense_cache_key", "dimension_scores", "RUNNERS", "SUITES"]
