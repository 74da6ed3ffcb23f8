"""Record parsers: evaluation records in their published schemas (hub, shared files) -> calmix's canonical records."""

from __future__ import annotations

import re

from calmix.errors import CalmixError


def arc_hub(r: dict) -> dict:
    labels = list(r["choices"]["label"])
    return {"question": r["question"], "choices": list(r["choices"]["text"]), "label": labels.index(r["answerKey"])}


def arc_local(r: dict) -> dict:
    return {"question": r["question"], "choices": r["choices"], "label": int(r["label"])}


def hellaswag_hub(r: dict) -> dict:
    ctx = r["ctx_a"] + " " + r["ctx_b"].capitalize()
    return {"ctx": r["activity_label"] + ": " + ctx, "endings": list(r["endings"]), "label": int(r["label"])}


def piqa_hub(r: dict) -> dict:
    return {"goal": r["goal"], "sol1": r["sol1"], "sol2": r["sol2"], "label": int(r["label"])}


def wino_hub(r: dict) -> dict:
    return {"sentence": r["sentence"], "option1": r["option1"], "option2": r["option2"], "answer": str(r["answer"])}


def boolq_local(r: dict) -> dict:
    q = r["query"]
    m = re.match(r"Passage: (.*)\nQuestion: (.*?)\??\s*$", q, flags=re.S)
    if not m:
        raise CalmixError(f"unexpected BoolQ record format: {q[:80]!r}")
    return {"passage": m.group(1), "question": m.group(2), "label": int(r["gold"])}


def boolq_hub(r: dict) -> dict:
    return {"passage": r["passage"], "question": r["question"], "label": int(r["label"])}


def obqa_local(r: dict) -> dict:
    return {"question": r["query"], "choices": r["choices"], "label": int(r["gold"])}


def obqa_hub(r: dict) -> dict:
    labels = list(r["choices"]["label"])
    return {"question": r["question_stem"], "choices": list(r["choices"]["text"]), "label": labels.index(r["answerKey"])}


def siqa_hub(r: dict) -> dict:
    return {"question": r["context"] + " " + r["question"], "choices": [r["answerA"], r["answerB"], r["answerC"]],
            "label": int(r["label"]) - 1}


def copa_hub(r: dict) -> dict:
    connector = {"cause": " because", "effect": " therefore"}[r["question"]]
    def lower(s: str) -> str:
        return s[0].lower() + s[1:]
    return {"query": r["premise"].strip()[:-1] + connector, "choices": [lower(r["choice1"]), lower(r["choice2"])],
            "gold": int(r["label"])}


def mmlu(r: dict) -> dict:
    return {"question": r["question"], "subject": r["subject"], "choices": list(r["choices"]), "answer": int(r["answer"])}


def lambada_hub(r: dict) -> dict:
    text = r["text"]
    k = text.rstrip().rfind(" ")
    return {"context": text[:k], "continuation": text[k + 1:]}
