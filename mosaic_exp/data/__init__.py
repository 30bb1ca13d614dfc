"""Evaluation and calibration data: local data dir first, HF hub only when reachable."""

from .calibration import get_calibration_windows
from .sources import (
    TEXT_DATASETS,
    ZEROSHOT_TASKS,
    DataSource,
    DataUnavailableError,
    canonical_dataset,
    check_available,
    default_split,
    hub_reachable,
    resolve_data_dir,
)
from .text import eval_text, get_eval_tokens, load_rows, wikitext_rows_from_raw

__all__ = [
    "TEXT_DATASETS",
    "ZEROSHOT_TASKS",
    "DataSource",
    "DataUnavailableError",
    "canonical_dataset",
    "check_available",
    "default_split",
    "eval_text",
    "get_calibration_windows",
    "get_eval_tokens",
    "hub_reachable",
    "load_rows",
    "resolve_data_dir",
    "wikitext_rows_from_raw",
]
