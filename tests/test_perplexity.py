"""GPTQ-protocol perplexity against an independent naive computation on a tiny random Llama."""

from __future__ import annotations

import math

import pytest
import torch

from mosaic_exp.data.testing import tiny_llama
from mosaic_exp.eval.perplexity import evaluate_perplexity, metric_name

VOCAB = 97
SEQLEN = 16


@pytest.fixture(scope="module")
def model():
    return tiny_llama(VOCAB, max_positions=64)


@pytest.fixture(scope="module")
def tokens():
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, VOCAB, (1, 5 * SEQLEN + 7), generator=g)


def naive_nll(model, tokens, seqlen, n):
    """Token-by-token float64 NLL, one window at a time (no shared code with the module)."""
    total, count = 0.0, 0
    with torch.no_grad():
        for w in range(n):
            ids = tokens[:, w * seqlen : (w + 1) * seqlen]
            logits = model(ids).logits[0].double()
            for p in range(seqlen - 1):
                row = logits[p]
                lse = math.log(sum(math.exp(v) for v in (row - row.max()).tolist())) + row.max().item()
                total += lse - row[ids[0, p + 1]].item()
                count += 1
    return total / count, count


def test_matches_naive(model, tokens):
    res = evaluate_perplexity(model, tokens, SEQLEN, progress=False)
    nll, count = naive_nll(model, tokens, SEQLEN, 5)
    assert res["windows"] == 5 == res["windows_available"]  # tail of 7 tokens dropped
    assert res["tokens_scored"] == count == 5 * (SEQLEN - 1)
    assert res["seqlen"] == SEQLEN
    assert res["nll_mean"] == pytest.approx(nll, rel=1e-5)
    assert res["ppl"] == pytest.approx(math.exp(nll), rel=1e-5)
    assert math.exp(res["nll_mean"]) == pytest.approx(res["ppl"], rel=1e-12)


def test_max_windows_and_batching(model, tokens):
    res = evaluate_perplexity(model, tokens, SEQLEN, max_windows=2, progress=False)
    nll, _ = naive_nll(model, tokens, SEQLEN, 2)
    assert res["windows"] == 2 and res["windows_available"] == 5 and res["tokens_scored"] == 2 * 15
    assert res["nll_mean"] == pytest.approx(nll, rel=1e-5)
    full = evaluate_perplexity(model, tokens[0], SEQLEN, progress=False)  # 1-D accepted
    batched = evaluate_perplexity(model, tokens, SEQLEN, batch_size=2, progress=False)  # 2+2+1
    assert batched["ppl"] == pytest.approx(full["ppl"], rel=1e-5)
    assert evaluate_perplexity(model, tokens, SEQLEN, max_windows=99, progress=False)["windows"] == 5


def test_errors_and_modes(model, tokens):
    with pytest.raises(ValueError, match="no full window"):
        evaluate_perplexity(model, tokens[:, :10], SEQLEN, progress=False)
    with pytest.raises(ValueError):
        evaluate_perplexity(model, torch.zeros(2, 40, dtype=torch.long), SEQLEN, progress=False)
    model.train()
    evaluate_perplexity(model, tokens, SEQLEN, max_windows=1, progress=False)
    assert model.training  # restored
    model.eval()


def test_metric_name():
    assert metric_name("wikitext2", 2048) == "ppl/wikitext2@2048"
    assert metric_name("c4", 512) == "ppl/c4@512"
