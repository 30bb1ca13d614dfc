"""GPTQ-style calibration windows.

* wikitext2 / ptb: one token stream (GPTQ ``trainenc``: rows joined with ``" "``); each sample is
  ``tokens[i:i+seqlen]`` with ``i = rng.randint(0, T - seqlen - 1)``.
* c4: GPTQ's document sampling: draw a random document, keep it if it has **more than** ``seqlen``
  tokens (else draw again), then take a random window inside it. From the ``validation`` split
  (the local excerpt, or the hub shard) only documents after the first 1,100 are eligible, so the
  calibration data never overlaps the C4 evaluation documents.

Randomness comes only from ``random.Random(seed)`` (never the global RNG); with the same token
stream the windows are the ones GPTQ's ``random.seed(seed)`` code would draw.
"""

from __future__ import annotations

import logging
import os
import random

import torch

from .sources import DataUnavailableError, check_available, default_split
from .text import C4_EVAL_DOCS, _cached_tokens, _file_digest, load_rows, tokenize_text, tokenizer_fingerprint

__all__ = ["get_calibration_windows"]

log = logging.getLogger(__name__)


def _validate(nsamples: int, seqlen: int) -> tuple[int, int]:
    for name, v in (("nsamples", nsamples), ("seqlen", seqlen)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    return nsamples, seqlen


def _windows_from_stream(tokens: torch.Tensor, nsamples: int, seqlen: int, rng: random.Random, what: str):
    T = tokens.shape[1]
    if T < seqlen + 1:
        raise ValueError(f"{what}: the token stream has {T} tokens, fewer than seqlen + 1 = {seqlen + 1}")
    out = torch.empty(nsamples, seqlen, dtype=torch.long)
    for k in range(nsamples):
        i = rng.randint(0, T - seqlen - 1)
        out[k] = tokens[0, i : i + seqlen]
    return out


def _windows_from_docs(tokenizer, docs: list[str], nsamples: int, seqlen: int, rng: random.Random, what: str):
    if not docs:
        raise ValueError(f"{what}: no documents to sample from")
    encoded: dict[int, torch.Tensor] = {}
    long_docs: set[int] = set()

    def enc(i: int) -> torch.Tensor:
        if i not in encoded:
            encoded[i] = tokenize_text(tokenizer, docs[i])
            if encoded[i].shape[1] > seqlen:
                long_docs.add(i)
        return encoded[i]

    out = torch.empty(nsamples, seqlen, dtype=torch.long)
    for k in range(nsamples):
        while True:
            i = rng.randint(0, len(docs) - 1)
            ids = enc(i)
            if ids.shape[1] > seqlen:
                break
            if not long_docs and len(encoded) == len(docs):
                longest = max(t.shape[1] for t in encoded.values())
                raise ValueError(
                    f"{what}: no document has more than seqlen={seqlen} tokens "
                    f"(longest: {longest} of {len(docs)} documents); use a smaller seqlen"
                )
        j = rng.randint(0, ids.shape[1] - seqlen - 1)
        out[k] = ids[0, j : j + seqlen]
    return out


def get_calibration_windows(
    tokenizer,
    dataset: str,
    nsamples: int,
    seqlen: int,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    *,
    split: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> torch.Tensor:
    """``LongTensor[nsamples, seqlen]`` of GPTQ-style random windows, deterministic in ``seed``.

    ``split=None`` takes the calibration default: wikitext2/ptb ``train`` (GPTQ; not in the local
    data dir, so offline you must pass a split explicitly, e.g. ``"test"`` with a warning about
    overlap), c4 ``validation`` restricted to documents after the first 1,100 (the eval ones).
    """
    nsamples, seqlen = _validate(nsamples, seqlen)
    src = check_available(dataset, data_dir, split, "calibration")
    ds = src.dataset
    what = f"calibration data {src.describe()}"
    if src.split == default_split(ds, "eval") and ds != "c4":
        log.warning("%s is also the default evaluation split: calibration and evaluation data overlap", what)
    rng = random.Random(int(seed))

    if ds == "c4":
        docs = load_rows(ds, source=src)
        if src.split == "validation":
            if len(docs) <= C4_EVAL_DOCS:
                raise DataUnavailableError(
                    f"{what}: only {len(docs)} documents, none left after the {C4_EVAL_DOCS} used for eval"
                )
            docs = docs[C4_EVAL_DOCS:]
        return _windows_from_docs(tokenizer, docs, nsamples, seqlen, rng, what)

    origin = _file_digest(src.path) if src.kind == "local" else f"hub:{src.hub}"

    def build() -> torch.Tensor:
        return tokenize_text(tokenizer, " ".join(load_rows(ds, source=src)))

    key = ["v1", ds, src.split, "calib", origin, tokenizer_fingerprint(tokenizer)] if cache_dir else []
    tokens = _cached_tokens(cache_dir, key, build)
    return _windows_from_stream(tokens, nsamples, seqlen, rng, what)
