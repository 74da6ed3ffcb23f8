"""Evaluation items, named once: the files under the data root, the held-out gsm_symbolic templates, the
BIG-bench evaluation tasks and the WikiText-2 hub id. Calibration sources read this to hold them out."""

from __future__ import annotations

from pathlib import Path

from calmix.paths import shared_data

# (task, split) -> file relative to the data root
EVAL_FILES: dict[tuple[str, str], str] = {
    ("arc_easy", "test"): "eval/arc_easy/test.jsonl",
    ("arc_challenge", "test"): "eval/arc_challenge/test.jsonl",
    ("hellaswag", "validation"): "eval/hellaswag/val.jsonl",
    ("piqa", "validation"): "eval/piqa/valid.hf.jsonl",
    ("winogrande", "validation"): "eval/winogrande/dev.hf.jsonl",
    ("boolq", "validation"): "eval/boolq/dev.jsonl",
    ("openbookqa", "test"): "eval/openbookqa/test.jsonl",
    ("siqa", "validation"): "eval/siqa/dev.jsonl",
    ("copa", "validation"): "eval/copa/dev.jsonl",
    ("mmlu", "test"): "eval/mmlu/test.jsonl",
    ("mmlu", "dev"): "eval/mmlu/dev.jsonl",
    ("gsm8k", "test"): "eval/gsm8k/test.jsonl",
    ("gsm8k", "train"): "eval/gsm8k/train.jsonl",  # the calibration source gsm8k reads this split too
    ("humaneval", "test"): "eval/humaneval/HumanEval.jsonl",
    ("mbpp", "test"): "eval/mbpp/test.jsonl",
    ("mbpp", "prompt"): "eval/mbpp/mbpp.jsonl",
    ("lambada", "test"): "eval/lambada_openai/test.jsonl",
    ("wikitext2", "test"): "calib/wikitext2/wiki.test.raw",
}

# WikiText-2 on the hub (raw text): the perplexity text, the General probe and the calibration source
WIKITEXT2_HUB = ("Salesforce/wikitext", "wikitext-2-raw-v1")

# reasoning-gym gsm_symbolic templates reserved for evaluation; calibration sources exclude them.
GSM_SYMBOLIC_EVAL_TEMPLATES: tuple[int, ...] = (4, 9, 14, 19, 24, 29, 34, 39, 44, 49, 54, 59, 64, 69, 74, 79, 84, 89, 94, 99)
GSM_SYMBOLIC_EVAL_STRIDE = (1000, 100)  # seed formula of evaluation instances (see packages.gsm_symbolic_examples)

# BIG-bench tasks of the small-offline evaluation suite; calibration uses other BIG-bench tasks.
BIGBENCH_EVAL_TASKS = ("general_knowledge", "qa_wikidata", "social_iqa", "cause_and_effect/one_sentence",
                       "human_organs_senses", "goal_step_wikihow/step_inference")


def eval_file(task: str, split: str) -> str:
    """The file of an evaluation split, relative to the data root."""
    return EVAL_FILES[(task, split)]


def eval_path(task: str, split: str, root: Path | None = None) -> Path | None:
    """The file of an evaluation split under root (default: the data root), or None without a data root."""
    root = root if root is not None else shared_data()
    return Path(root) / eval_file(task, split) if root is not None else None
