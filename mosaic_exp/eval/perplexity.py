"""Perplexity on non-overlapping windows (GPTQ protocol).

``tokens[1, T]`` is cut into ``n = T // seqlen`` windows (the tail is dropped); each window is
scored on its own (no context carried over) with shifted labels, i.e. ``seqlen - 1`` predicted
tokens per window; ``ppl = exp(mean NLL over all scored tokens)``, which equals GPTQ's
``exp(sum(window_mean_nll * seqlen) / (n * seqlen))`` since windows have equal length.
"""

from __future__ import annotations

import math
import sys
import time

import torch
import torch.nn.functional as F

__all__ = ["evaluate_perplexity", "metric_name"]


def metric_name(dataset: str, seqlen: int) -> str:
    """Metric key convention: ``ppl/{dataset}@{seqlen}``, e.g. ``ppl/wikitext2@2048``."""
    return f"ppl/{dataset}@{int(seqlen)}"


def _model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def progress_bar(iterable, total: int, enabled: bool, desc: str):
    """tqdm over iterable when enabled and stderr is a terminal (quiet in CI logs and multirun files)."""
    if not enabled or not sys.stderr.isatty():
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False)


def _forward(model, ids: torch.Tensor):
    try:
        return model(input_ids=ids, use_cache=False)
    except TypeError:  # plain nn.Module LMs without HF kwargs
        return model(ids)


def evaluate_perplexity(
    model,
    tokens: torch.Tensor,
    seqlen: int,
    max_windows: int | None = None,
    device=None,
    batch_size: int = 1,
    progress: bool = True,
) -> dict:
    """Return ``dict(ppl, nll_mean, windows, tokens_scored, seqlen, windows_available, seconds)``.

    ``model(input_ids).logits`` must be ``[B, L, V]`` (any HF causal LM). NLL is computed from
    fp32 logits and accumulated in float64; runs under ``torch.inference_mode`` with the model in
    eval mode (its training flag is restored afterwards).
    """
    if tokens.dim() == 1:
        tokens = tokens.unsqueeze(0)
    if tokens.dim() != 2 or tokens.shape[0] != 1:
        raise ValueError(f"tokens must be [1, T], got {tuple(tokens.shape)}")
    seqlen = int(seqlen)
    if seqlen < 2:
        raise ValueError(f"seqlen must be >= 2, got {seqlen}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    available = tokens.shape[1] // seqlen
    n = available if max_windows is None else min(available, int(max_windows))
    if n < 1:
        raise ValueError(
            f"no full window: {tokens.shape[1]} tokens < seqlen {seqlen}"
            if available < 1
            else f"max_windows must be >= 1, got {max_windows}"
        )
    device = torch.device(device) if device is not None else _model_device(model)
    windows = tokens[0, : n * seqlen].reshape(n, seqlen).to(torch.long)

    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    nll_sum = 0.0
    t0 = time.perf_counter()
    starts = range(0, n, batch_size)
    try:
        with torch.inference_mode():
            for s in progress_bar(starts, total=len(starts), enabled=progress, desc=f"ppl@{seqlen}"):
                batch = windows[s : s + batch_size].to(device)
                out = _forward(model, batch)
                logits = out.logits if hasattr(out, "logits") else out[0]
                shift_logits = logits[:, :-1, :].float()
                shift_labels = batch[:, 1:]
                loss = F.cross_entropy(
                    shift_logits.reshape(-1, shift_logits.shape[-1]),
                    shift_labels.reshape(-1),
                    reduction="sum",
                )
                nll_sum += float(loss.double().item())
                del out, logits, shift_logits
    finally:
        if was_training and hasattr(model, "train"):
            model.train()
    scored = n * (seqlen - 1)
    nll_mean = nll_sum / scored
    return {
        "ppl": math.exp(nll_mean),
        "nll_mean": nll_mean,
        "windows": n,
        "tokens_scored": scored,
        "seqlen": seqlen,
        "windows_available": available,
        "seconds": time.perf_counter() - t0,
    }
