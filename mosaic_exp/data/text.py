"""Rows, documents and token streams for perplexity evaluation (GPTQ protocol).

Conventions (also in ``docs/data.md``):

* **WikiText-2** (``wikitext-2-raw-v1``): rows are HF's test split, 4,358 rows, each non-blank line
  *with its trailing newline*, blank lines as ``""``. The local ``wiki.test.raw`` writes blank lines
  as a single space, so line ``l`` becomes ``l + "\\n"`` if ``l.strip()`` else ``""``.
  Eval text = ``"\\n\\n".join(rows)`` (GPTQ ``testenc``); calibration text = ``" ".join(rows)``
  (GPTQ ``trainenc``).
* **PTB** (``ptb_text_only``): rows = the ``sentence`` field = each line of ``ptb.*.txt`` stripped.
  Eval / calibration text = ``" ".join(rows)`` (GPTQ). Default eval split is **test** (as GPTQ's
  ``ptb-new``; GPTQ's original ``ptb`` evaluated on validation: pass ``split="validation"``).
* **C4**: documents of ``en`` validation. Locally this is the 2,000-document excerpt (shard/offset
  unknown; *C4 numbers come from the excerpt*, not GPTQ's exact documents). Eval text = the first
  1,100 documents joined with ``" "``, then the token stream is cut to ``256 * seqlen`` tokens
  (GPTQ ``get_c4``: ``valenc[:, :256*seqlen]``) when ``seqlen`` is given.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from .sources import _TEXT_HUB, DataSource, DataUnavailableError, check_available

__all__ = [
    "C4_EVAL_DOCS",
    "C4_EVAL_WINDOWS",
    "calibration_text",
    "eval_text",
    "get_eval_tokens",
    "load_rows",
    "tokenize_text",
    "wikitext_rows_from_raw",
]

log = logging.getLogger(__name__)

C4_EVAL_DOCS = 1100  # GPTQ: ' '.join(valdata[:1100]['text'])
C4_EVAL_WINDOWS = 256  # GPTQ: valenc[:, :256 * seqlen]
_CACHE_VERSION = 1


def wikitext_rows_from_raw(raw: str) -> list[str]:
    """Convert the text of a ``wiki.*.raw`` file to HF ``wikitext-2-raw-v1`` rows.

    Each file line becomes one row: ``line + "\\n"`` when it has non-whitespace content, ``""``
    for a blank line (the file writes those as ``" "``). The final newline of the file does not
    start a row. ``"\\n\\n".join(rows)`` is then exactly what GPTQ builds from the HF split.
    """
    raw = raw.replace("\r\n", "\n")
    lines = raw.split("\n")
    if lines and lines[-1] == "":
        lines = lines[:-1]
    return [line + "\n" if line.strip() else "" for line in lines]


def _read_text(path: Path) -> str:
    return path.read_bytes().decode("utf-8")


def _read_c4_docs(path: Path) -> list[str]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return [str(t) for t in pq.read_table(path, columns=["text"]).column("text").to_pylist()]
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def _load_hub_rows(src: DataSource) -> list[str]:
    try:
        from datasets import load_dataset
    except ImportError as e:  # pragma: no cover - depends on env
        raise DataUnavailableError(f"{src.describe()}: the `datasets` package is not installed") from e
    spec = _TEXT_HUB[src.dataset]
    try:
        if spec.data_files:
            ds = load_dataset(spec.path, data_files={src.split: spec.data_files[src.split]}, split=src.split)
        else:
            ds = load_dataset(spec.path, spec.name, split=src.split)
    except Exception as e:  # pragma: no cover - network
        raise DataUnavailableError(f"could not load {src.describe()}: {type(e).__name__}: {e}") from e
    return [str(x) for x in ds[spec.column]]


def load_rows(
    dataset: str,
    data_dir: str | os.PathLike | None = None,
    split: str | None = None,
    purpose: str = "eval",
    *,
    source: DataSource | None = None,
) -> list[str]:
    """HF-equivalent rows: wikitext2 ``text`` rows, PTB ``sentence`` rows, or C4 documents."""
    src = source or check_available(dataset, data_dir, split, purpose)
    if src.kind == "hub":
        return _load_hub_rows(src)
    assert src.path is not None
    if src.dataset == "wikitext2":
        return wikitext_rows_from_raw(_read_text(src.path))
    if src.dataset == "ptb":
        text = _read_text(src.path).replace("\r\n", "\n")
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines = lines[:-1]
        return [line.strip() for line in lines]
    if src.dataset == "c4":
        return _read_c4_docs(src.path)
    raise ValueError(f"not a text dataset: {src.dataset}")


def _join_eval(dataset: str, rows: list[str]) -> str:
    if dataset == "wikitext2":
        return "\n\n".join(rows)
    if dataset == "ptb":
        return " ".join(rows)
    if dataset == "c4":
        return " ".join(rows[:C4_EVAL_DOCS])
    raise ValueError(dataset)


def eval_text(dataset: str, data_dir=None, split: str | None = None) -> str:
    """The single evaluation string of the GPTQ protocol (see module docstring)."""
    src = check_available(dataset, data_dir, split, "eval")
    return _join_eval(src.dataset, load_rows(src.dataset, source=src))


def calibration_text(dataset: str, data_dir=None, split: str | None = None) -> str:
    """GPTQ's ``trainenc`` text for wikitext2 / ptb (both joined with ``" "``)."""
    src = check_available(dataset, data_dir, split, "calibration")
    if src.dataset == "c4":
        raise ValueError("c4 calibration samples documents, not one stream; use get_calibration_windows")
    return " ".join(load_rows(src.dataset, source=src))


def tokenize_text(tokenizer, text: str) -> torch.Tensor:
    """``tokenizer(text, return_tensors="pt").input_ids`` as in GPTQ (default special tokens)."""
    try:
        enc = tokenizer(text, return_tensors="pt", verbose=False)
    except TypeError:
        enc = tokenizer(text, return_tensors="pt")
    ids = enc["input_ids"] if isinstance(enc, dict) or hasattr(enc, "keys") else enc.input_ids
    return torch.as_tensor(ids, dtype=torch.long).reshape(1, -1)


# ---------------------------------------------------------------------------------------------
# on-disk cache


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return f"{h.hexdigest()[:16]}-{path.stat().st_size}"


def tokenizer_fingerprint(tokenizer) -> str:
    """Name + vocab size + the ids of a probe string (catches same-name, different tokenizers)."""
    name = str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)
    try:
        vocab = len(tokenizer)
    except TypeError:
        vocab = getattr(tokenizer, "vocab_size", -1)
    probe = tokenize_text(tokenizer, "Hello world! \n\n = Ünïcode = 12,345 <unk> tokens.").flatten().tolist()
    h = hashlib.sha256(json.dumps([name, vocab, probe]).encode()).hexdigest()[:16]
    return f"{Path(name).name or 'tok'}-{vocab}-{h}"


def _cached_tokens(cache_dir, key_parts: list[str], build) -> torch.Tensor:
    if cache_dir is None:
        return build()
    cache_dir = Path(cache_dir)
    key = hashlib.sha256("|".join(key_parts).encode()).hexdigest()[:24]
    path = cache_dir / f"tokens-{key_parts[1]}-{key}.pt"
    if path.is_file():
        try:
            t = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(t, torch.Tensor) and t.dtype == torch.long and t.dim() == 2:
                return t
        except (OSError, RuntimeError, EOFError, ValueError) as e:  # corrupted cache: rebuild
            log.warning("ignoring unreadable token cache %s: %s", path, e)
    t = build()
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(t, tmp)
    os.replace(tmp, path)
    return t


def get_eval_tokens(
    tokenizer,
    dataset: str,
    data_dir: str | os.PathLike | None = None,
    *,
    split: str | None = None,
    seqlen: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> torch.Tensor:
    """Token stream ``LongTensor[1, T]`` of the evaluation text of ``dataset`` (GPTQ protocol).

    For ``c4`` and a given ``seqlen`` the stream is cut to ``256 * seqlen`` tokens as in GPTQ.
    With ``cache_dir`` the (uncut) tensor is cached, keyed by tokenizer fingerprint, dataset,
    split and the source file's sha256/size (or the hub spec).
    """
    src = check_available(dataset, data_dir, split, "eval")
    ds = src.dataset
    origin = _file_digest(src.path) if src.kind == "local" else f"hub:{src.hub}"

    def build() -> torch.Tensor:
        return tokenize_text(tokenizer, _join_eval(ds, load_rows(ds, source=src)))

    key = (
        [f"v{_CACHE_VERSION}", ds, src.split, "eval", origin, tokenizer_fingerprint(tokenizer)]
        if cache_dir
        else []
    )
    tokens = _cached_tokens(cache_dir, key, build)
    if ds == "c4" and seqlen is not None:
        tokens = tokens[:, : C4_EVAL_WINDOWS * int(seqlen)]
    return tokens
