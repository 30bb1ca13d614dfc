"""Evaluation: perplexity (GPTQ protocol) and zero-shot accuracy (lm-eval-harness task definitions)."""

from .perplexity import evaluate_perplexity, metric_name
from .zeroshot import DEFAULT_TASKS, LoglikelihoodEngine, evaluate_zeroshot, flatten_results, load_task

__all__ = [
    "DEFAULT_TASKS",
    "LoglikelihoodEngine",
    "evaluate_perplexity",
    "evaluate_zeroshot",
    "flatten_results",
    "load_task",
    "metric_name",
]
