"""Capability evaluation: task registry, scorers, suites, retention against the dense model."""

from calmix.data.dimensions import DIMENSIONS
from calmix.data.reserved import GSM_SYMBOLIC_EVAL_TEMPLATES
from calmix.evals.evaluate import EvalResult, dense_scores, evaluate
from calmix.evals.retention import retention
from calmix.evals.suites import SUITES
from calmix.evals.tasks import TASKS

__all__ = ["EvalResult", "evaluate", "dense_scores", "retention", "SUITES", "TASKS", "DIMENSIONS",
           "GSM_SYMBOLIC_EVAL_TEMPLATES"]
