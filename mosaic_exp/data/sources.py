"""Where evaluation / calibration text comes from: a local data dir first, the HF hub second.

Resolution order for every dataset (see ``docs/data.md``):

1. a local data directory in the layout of ``shared/data`` (argument ``data_dir``; callers take it
   from config ``paths.data_dir`` or the env var ``MOSAIC_DATA_DIR``);
2. the Hugging Face dataset, **only when the hub is reachable** (decided by :func:`hub_reachable`,
   which never hangs: ``HF_DATASETS_OFFLINE=1`` / ``HF_HUB_OFFLINE=1`` means offline, otherwise a
   TCP probe of ``huggingface.co:443`` with a 2 s timeout);
3. otherwise :class:`DataUnavailableError`, naming the dataset, the local file expected and why the
   hub was not used.

:func:`check_available` performs this resolution without reading or tokenizing anything big, so a
config validator can call it before any model is loaded.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "TEXT_DATASETS",
    "ZEROSHOT_TASKS",
    "DataSource",
    "DataUnavailableError",
    "canonical_dataset",
    "check_available",
    "default_split",
    "hub_reachable",
    "resolve_data_dir",
]

HUB_HOST = "huggingface.co"
HUB_PORT = 443
_OFFLINE_ENV = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
_TRUE = {"1", "true", "yes", "on"}


class DataUnavailableError(RuntimeError):
    """A dataset is neither in the local data dir nor fetchable from the hub."""


@dataclass(frozen=True)
class _HubSpec:
    path: str
    name: str | None = None
    data_files: dict[str, str] | None = None
    column: str = "text"

    def describe(self, split: str) -> str:
        parts = [self.path] + ([self.name] if self.name else [])
        s = "/".join(parts) + f" split={split}"
        if self.data_files and split in self.data_files:
            s += f" file={self.data_files[split]}"
        return s


# ---------------------------------------------------------------------------------------------
# Text datasets (perplexity + calibration). Local paths are relative to data_dir; for a split
# several candidate files may be listed (first existing wins).
_TEXT_LOCAL: dict[str, dict[str, tuple[str, ...]]] = {
    "wikitext2": {
        "test": ("wikitext-2-raw/wiki.test.raw",),
        "validation": ("wikitext-2-raw/wiki.valid.raw",),
        "train": ("wikitext-2-raw/wiki.train.raw",),
    },
    "ptb": {
        "test": ("ptb/ptb.test.txt",),
        "validation": ("ptb/ptb.valid.txt",),
        "train": ("ptb/ptb.train.txt",),
    },
    "c4": {
        # The local copy is a 2,000-document excerpt of C4 en validation (shard/offset unknown).
        "validation": ("c4/c4_validation_2k.parquet", "c4/c4_validation_2k.jsonl"),
        "train": ("c4/c4_train.jsonl",),
    },
}
_TEXT_HUB: dict[str, _HubSpec] = {
    "wikitext2": _HubSpec("wikitext", "wikitext-2-raw-v1", column="text"),
    "ptb": _HubSpec("ptb_text_only", "penn_treebank", column="sentence"),
    "c4": _HubSpec(
        "allenai/c4",
        data_files={
            "validation": "en/c4-validation.00000-of-00008.json.gz",
            "train": "en/c4-train.00000-of-01024.json.gz",
        },
        column="text",
    ),
}
TEXT_DATASETS: tuple[str, ...] = tuple(_TEXT_LOCAL)

# Default splits: eval follows GPTQ (wikitext2 test, ptb test as in GPTQ's "ptb-new", c4 validation).
# Calibration follows GPTQ's train splits, except C4: the offline substitute is the validation
# excerpt, from which calibration draws only documents *after* the 1,100 used for evaluation.
_DEFAULT_SPLIT = {
    "eval": {"wikitext2": "test", "ptb": "test", "c4": "validation"},
    "calibration": {"wikitext2": "train", "ptb": "train", "c4": "validation"},
}

_ALIASES = {
    "wikitext": "wikitext2",
    "wikitext-2": "wikitext2",
    "wikitext2": "wikitext2",
    "wikitext-2-raw-v1": "wikitext2",
    "wiki2": "wikitext2",
    "c4": "c4",
    "allenai/c4": "c4",
    "ptb": "ptb",
    "ptb_text_only": "ptb",
    "penn_treebank": "ptb",
    "lambada": "lambada_openai",
    "lambada_openai": "lambada_openai",
    "piqa": "piqa",
    "arc_easy": "arc_easy",
    "arc-easy": "arc_easy",
    "arc_challenge": "arc_challenge",
    "arc-challenge": "arc_challenge",
    "winogrande": "winogrande",
    "boolq": "boolq",
}

# ---------------------------------------------------------------------------------------------
# Zero-shot tasks: local files (all must exist) and the split they hold.
ZEROSHOT_TASKS: dict[str, dict] = {
    "piqa": {"split": "validation", "files": ("piqa/valid.jsonl", "piqa/valid-labels.lst")},
    "arc_easy": {"split": "test", "files": ("arc_easy/ARC-Easy-Test.jsonl",)},
    "arc_challenge": {"split": "test", "files": ("arc_challenge/ARC-Challenge-Test.jsonl",)},
    "winogrande": {"split": "validation", "files": ("winogrande/dev.jsonl",)},
    "boolq": {"split": "validation", "files": ("boolq/val.jsonl",)},
    "lambada_openai": {"split": "test", "files": ("lambada/lambada_test.jsonl",)},
}


@dataclass(frozen=True)
class DataSource:
    """Resolved location of a dataset split: ``kind`` is ``"local"`` or ``"hub"``."""

    dataset: str
    split: str
    kind: str
    path: Path | None = None  # the local file (first one for multi-file tasks)
    files: tuple[Path, ...] = field(default_factory=tuple)
    hub: str | None = None  # human-readable hub spec when kind == "hub"

    def describe(self) -> str:
        if self.kind == "local":
            return f"{self.dataset}/{self.split} from local file {self.path}"
        return f"{self.dataset}/{self.split} from HF hub {self.hub}"


def canonical_dataset(name: str) -> str:
    key = str(name).strip().lower()
    if key not in _ALIASES:
        known = sorted(set(TEXT_DATASETS) | set(ZEROSHOT_TASKS))
        raise ValueError(f"unknown dataset {name!r}; known: {known}")
    return _ALIASES[key]


def default_split(dataset: str, purpose: str = "eval") -> str:
    ds = canonical_dataset(dataset)
    if ds in ZEROSHOT_TASKS:
        return ZEROSHOT_TASKS[ds]["split"]
    if purpose not in _DEFAULT_SPLIT:
        raise ValueError(f"purpose must be 'eval' or 'calibration', got {purpose!r}")
    return _DEFAULT_SPLIT[purpose][ds]


def _env_offline() -> bool:
    return any(os.environ.get(k, "").strip().lower() in _TRUE for k in _OFFLINE_ENV)


_PROBE_CACHE: dict[tuple[str, int], bool] = {}


def hub_reachable(timeout: float = 2.0, *, use_cache: bool = True) -> bool:
    """True when the HF hub may be used: not forced offline by env and ``huggingface.co:443``
    accepts a TCP connection within ``timeout`` seconds (≤ 2 s by default; result cached per
    process; the env vars are re-read on every call)."""
    if _env_offline():
        return False
    key = (HUB_HOST, HUB_PORT)
    if use_cache and key in _PROBE_CACHE:
        return _PROBE_CACHE[key]
    try:
        with socket.create_connection(key, timeout=min(float(timeout), 2.0)):
            ok = True
    except OSError:
        ok = False
    _PROBE_CACHE[key] = ok
    return ok


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The explicit ``data_dir`` if given, else ``$MOSAIC_DATA_DIR`` if set, else None."""
    if data_dir is None or str(data_dir) == "":
        env = os.environ.get("MOSAIC_DATA_DIR", "").strip()
        if not env:
            return None
        data_dir = env
    return Path(os.path.abspath(os.path.expanduser(str(data_dir))))


def _local_candidates(ds: str, split: str) -> tuple[tuple[str, ...], bool]:
    """(relative paths, all_required). For text datasets: any one of them; for tasks: all."""
    if ds in ZEROSHOT_TASKS:
        spec = ZEROSHOT_TASKS[ds]
        if split != spec["split"]:
            raise ValueError(f"{ds}: only split {spec['split']!r} is supported, got {split!r}")
        return spec["files"], True
    splits = _TEXT_LOCAL[ds]
    if split not in splits:
        raise ValueError(f"{ds}: unknown split {split!r}; known: {sorted(splits)}")
    return splits[split], False


def check_available(
    dataset: str,
    data_dir: str | os.PathLike | None = None,
    split: str | None = None,
    purpose: str = "eval",
    *,
    allow_hub: bool = True,
) -> DataSource:
    """Resolve ``dataset``/``split`` cheaply (file existence + at most a 2 s hub probe).

    Returns a :class:`DataSource`; raises :class:`DataUnavailableError` naming the dataset, the
    local path(s) looked at and the hub status. Reads no data file and tokenizes nothing.
    ``split=None`` picks the default split for ``purpose`` ("eval" or "calibration").
    """
    ds = canonical_dataset(dataset)
    split = split or default_split(ds, purpose)
    rel, all_required = _local_candidates(ds, split)
    root = resolve_data_dir(data_dir)

    looked: list[Path] = []
    if root is not None:
        paths = [root / r for r in rel]
        looked = paths
        exists = [p.is_file() and p.stat().st_size > 0 for p in paths]
        if all_required and all(exists):
            return DataSource(ds, split, "local", paths[0], tuple(paths))
        if not all_required:
            for p, ok in zip(paths, exists):
                if ok:
                    if p.suffix == ".parquet" and importlib.util.find_spec("pyarrow") is None:
                        continue  # fall through to the jsonl copy if present
                    return DataSource(ds, split, "local", p, (p,))

    hub_spec = _TEXT_HUB.get(ds)
    hub_note: str
    if not allow_hub:
        hub_note = "hub use disabled (allow_hub=False)"
    elif hub_spec is None:
        hub_note = "no hub fallback is implemented for zero-shot tasks (use backend='lm_eval' online)"
    elif _env_offline():
        hub_note = "the HF hub is disabled (HF_DATASETS_OFFLINE/HF_HUB_OFFLINE=1)"
    elif not hub_reachable():
        hub_note = f"the HF hub is not reachable ({HUB_HOST}:{HUB_PORT} probe failed within 2 s)"
    elif importlib.util.find_spec("datasets") is None:
        hub_note = "the hub is reachable but the `datasets` package is not installed"
    else:
        return DataSource(ds, split, "hub", None, (), hub_spec.describe(split))

    if root is None:
        where = (
            "no local data dir given (pass data_dir, set config paths.data_dir or env MOSAIC_DATA_DIR); "
            f"expected file(s) relative to it: {', '.join(rel)}"
        )
    else:
        kind = "all of" if all_required else "one of"
        missing = [str(p) for p in looked if not p.is_file()]
        where = f"looked in {root} for {kind}: {', '.join(str(p) for p in looked)}"
        if missing:
            where += f" (missing: {', '.join(missing)})"
    hint = ""
    if ds in _TEXT_LOCAL and purpose == "calibration" and split == default_split(ds, "calibration"):
        local_splits = [
            s for s, r in _TEXT_LOCAL[ds].items() if root and any((root / x).is_file() for x in r)
        ]
        if local_splits:
            hint = (
                f". Locally available splits of {ds}: {local_splits}; pass split=... explicitly "
                "(calibrating on an evaluation split overlaps with the test data), or calibrate on c4"
            )
    raise DataUnavailableError(f"dataset {ds!r} split {split!r} is unavailable: {where}; {hub_note}{hint}")
