"""Prompt formatters: a canonical record (and its few-shot examples) -> the request a scorer reads."""

from __future__ import annotations

import re

LETTERS = "ABCDEFGH"

# Prompt templates with one slot; the lm-eval adapter fills the slot with a Jinja expression, so both engines see
# the same prompt.
QA_PROMPT = "Question: {}\nAnswer:"
SHORT_QA_PROMPT = "Q: {}\nA:"


def _hellaswag_clean(text: str) -> str:
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def _mc(contexts: list[str], conts: list[str], gold: int, delimiter: str = " ") -> dict:
    return {"contexts": contexts, "continuations": [delimiter + c for c in conts], "gold": gold,
            "norm_lens": [len(c) for c in conts]}


def fmt_arc(r: dict, shots: list[dict]) -> dict:
    ctx = QA_PROMPT.format(r["question"])
    return _mc([ctx] * len(r["choices"]), r["choices"], r["label"])


def fmt_hellaswag(r: dict, shots: list[dict]) -> dict:
    ctx = _hellaswag_clean(r["ctx"])
    ends = [_hellaswag_clean(e) for e in r["endings"]]
    return _mc([ctx] * len(ends), ends, r["label"])


def fmt_piqa(r: dict, shots: list[dict]) -> dict:
    ctx = QA_PROMPT.format(r["goal"])
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
    ctx = SHORT_QA_PROMPT.format(r["question"].strip())
    return _mc([ctx] * len(r["choices"]), r["choices"], r["label"])


def fmt_copa(r: dict, shots: list[dict]) -> dict:
    return _mc([r["query"]] * 2, r["choices"], r["gold"])


def fmt_bigbench_mc(r: dict, shots: list[dict]) -> dict:
    ctx = SHORT_QA_PROMPT.format(r["question"]) if r["question"] else ""  # no input: which choice is the more likely text
    return _mc([ctx] * len(r["choices"]), r["choices"], r["label"])


def _mmlu_block(r: dict, with_answer: bool) -> str:
    lines = [r["question"].strip()] + [f"{LETTERS[i]}. {c}" for i, c in enumerate(r["choices"])]
    text = "\n".join(lines) + "\nAnswer:"
    return text + (f" {LETTERS[r['answer']]}\n\n" if with_answer else "")


def fmt_mmlu(r: dict, shots: list[dict]) -> dict:
    subject = r["subject"].replace("_", " ")
    head = f"The following are multiple choice questions (with answers) about {subject}.\n\n"
    ctx = head + "".join(_mmlu_block(s, True) for s in shots) + _mmlu_block(r, False)
    letters = [LETTERS[i] for i in range(len(r["choices"]))]
    return _mc([ctx] * len(letters), letters, r["answer"])


def fmt_gsm8k_gen(r: dict, shots: list[dict]) -> dict:
    prompt = "".join(f"Question: {s['question']}\nAnswer: {s['answer']}\n\n" for s in shots)
    return {"prompt": prompt + f"Question: {r['question']}\nAnswer:", "answer": r["answer"]}


def fmt_gsm8k_probe(r: dict, shots: list[dict]) -> dict:
    return {"context": QA_PROMPT.format(r["question"]), "reference": " " + r["answer"]}


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
    return {"context": SHORT_QA_PROMPT.format(r["question"]), "reference": " " + gold}


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
