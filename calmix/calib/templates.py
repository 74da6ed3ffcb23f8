"""Record templates of the calibration sources: how one record of each dataset becomes one text document."""

from __future__ import annotations

import re
from typing import Callable

from calmix.data import bigbench
from calmix.data.files import record_text

# BIG-bench tasks the calibration sources read (extracted from the sdist in one pass)
BIGBENCH_TASKS = ("strategyqa", "topical_chat", "natural_instructions/subtask059_ropes_story_generation")


def qa(q: str, a: str) -> str:
    """The QA template used across sources: question, then the worked answer."""
    return f"Question: {q.strip()}\nAnswer: {a.strip()}"


_ADAPTER_Q = re.compile(r"question:\s*(.*?)\n\nAnswer1:", re.S)
_ADAPTER_BOOL = re.compile(r"question:\s*(.*?)\n\nAnswer format", re.S)


def adapters_question(rec: dict) -> str:
    """The question text of an LLM-Adapters multiple-choice or true/false record."""
    ins = rec.get("instruction", "")
    m = _ADAPTER_Q.search(ins) or _ADAPTER_BOOL.search(ins)
    return m.group(1).strip() if m else ins


def adapters_mc(rec: dict) -> str:
    """LLM-Adapters ARC/OBQA/BoolQ record as question, options, and the correct option's text."""
    ins = rec["instruction"]
    m = _ADAPTER_Q.search(ins)
    if not m:  # true/false format (BoolQ)
        return qa(adapters_question(rec), rec.get("answer", ""))
    opts_text = ins[m.end() - len("Answer1:"):].split("\n\nAnswer format")[0]
    opts = [o.strip() for o in re.split(r"Answer\d+:", opts_text) if o.strip()]
    ans = rec.get("answer", "")
    idx = int(ans[len("answer"):]) - 1 if ans.startswith("answer") and ans[6:].isdigit() else -1
    letters = "ABCDEFGH"
    body = m.group(1).strip() + "\n" + "\n".join(f"{letters[i]}. {o}" for i, o in enumerate(opts))
    answer = f"{letters[idx]}. {opts[idx]}" if 0 <= idx < len(opts) else ans
    return qa(body, answer)


def hub_arc(rec: dict) -> str:
    ch = rec["choices"]
    opts = "\n".join(f"{lab}. {t}" for lab, t in zip(ch["label"], ch["text"]))
    gold = dict(zip(ch["label"], ch["text"])).get(rec["answerKey"], rec["answerKey"])
    return qa(f"{rec['question']}\n{opts}", f"{rec['answerKey']}. {gold}")


def hub_obqa(rec: dict) -> str:
    return hub_arc({**rec, "question": rec["question_stem"]})


def dialogue(rec: dict) -> str:
    """A DailyDialog record as alternating speaker turns."""
    turns = rec.get("dialogue") or rec.get("dialog") or rec.get("utterances") or []
    if not turns:
        return record_text(rec)
    lines = [(t["text"] if isinstance(t, dict) else str(t)).strip() for t in turns]
    return "\n".join(f"{'AB'[i % 2]}: {t}" for i, t in enumerate(lines) if t)


def instruction(rec: dict) -> str:
    """Alpaca-style record: instruction, optional input, response."""
    out = rec.get("output") or rec.get("response") or ""
    inp = rec.get("input") or ""
    head = rec["instruction"].strip() + (f"\n\nInput:\n{inp.strip()}" if inp.strip() else "")
    return f"Instruction:\n{head}\n\nResponse:\n{out.strip()}"


def first_line_question(rec: dict) -> str:
    """The question of a BoolQ evaluation record ("Passage: ...\nQuestion: ...")."""
    q = rec.get("query", "")
    m = re.search(r"Question:\s*(.*?)(\n|$)", q)
    return m.group(1) if m else q


# ------------------------------------------------------------------------------------------ BIG-bench

def bigbench_task_json(name: str) -> dict:
    """task.json of a BIG-bench task (see calmix.data.bigbench)."""
    return bigbench.task_json(name, BIGBENCH_TASKS)


def bigbench_docs(name: str, template: Callable[[dict], str]) -> list[str]:
    """Documents of one BIG-bench task's examples through a per-task template."""
    return [t for t in (template(ex) for ex in bigbench_task_json(name)["examples"]) if t and t.strip()]


def bigbench_ok() -> tuple[bool, str]:
    """Whether the BIG-bench sdist is in the calmix cache (the package origin of the bb-* sources)."""
    if bigbench.sdist() is None:
        return False, "BIG-bench sdist not in the calmix cache (pip download --no-deps --no-binary :all: bigbench==1.0.0 -d ~/.cache/calmix/bigbench)"
    return True, "package bigbench==1.0.0 sdist (calmix cache)"


def bb(task: str, template: Callable[[dict], str]) -> Callable[[], list[str]]:
    """The package reader of a BIG-bench source: its task's examples through template."""
    return lambda: bigbench_docs(task, template)


def bb_strategyqa(ex: dict) -> str:
    return qa(ex["input"], ex.get("target") or max(ex["target_scores"], key=ex["target_scores"].get))


def bb_topical_chat_docs() -> list[str]:
    """Topical-Chat conversations: the longest prefix of each conversation plus its reply (no repeated prefixes)."""
    best: dict[str, dict] = {}
    for ex in bigbench_task_json("topical_chat")["examples"]:
        key = ex.get("comment") or ex["input"][:80]
        if key not in best or len(ex["input"]) > len(best[key]["input"]):
            best[key] = ex
    return [f"{ex['input']} agent_B: {_first(ex['target'])}".replace('" agent_', '"\nagent_')
            for _, ex in sorted(best.items())]


def _first(target) -> str:
    return target[0] if isinstance(target, list) else str(target)


def bb_ropes_story(ex: dict) -> str:
    return f"{ex['input'].strip()}\n\nStory: {_first(ex['target']).strip()}"


