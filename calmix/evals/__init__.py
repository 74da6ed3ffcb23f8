"""Capability evaluation: task registry, scorers, suites, retention against the dense model."""

from calmix.evals.evaluate import EvalResult, dense_scores, evaluate
from calmix.evals.retention import retention
from calmix.evals.suites import SUITES
from calmix.evals.tasks import DIMENSIONS, GSM_SYMBOLIC_EVAL_TEMPLATES, TASKS

__all__ = ["EvalResult", "evaluate", "dense_scores", "retention", "SUITES", "TASKS", "DIMENSIONS",
           "GSM_SYMBOLIC_EVAL_TEMPLATES"]
