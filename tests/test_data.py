"""Data sources, WikiText/PTB/C4 conventions, calibration windows, offline errors."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
import torch

from mosaic_exp.data import (
    DataUnavailableError,
    check_available,
    eval_text,
    get_calibration_windows,
    get_eval_tokens,
    hub_reachable,
    load_rows,
    wikitext_rows_from_raw,
)
from mosaic_exp.data import sources as sources_mod
from mosaic_exp.data import text as text_mod
from mosaic_exp.data.testing import tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture
def fake_dir(tmp_path: Path) -> Path:
    """A small data dir in the shared/data layout (wikitext2 test, ptb test, c4 jsonl)."""
    (tmp_path / "wikitext-2-raw").mkdir()
    lines = [" ", " = Title = ", " ", " Some text , with @-@ tokens . ", " more text here . ", " "]
    (tmp_path / "wikitext-2-raw" / "wiki.test.raw").write_text("\n".join(lines * 20) + "\n")
    (tmp_path / "ptb").mkdir()
    (tmp_path / "ptb" / "ptb.test.txt").write_text(" the cat sat on the mat \n a dog ran \n" * 30)
    (tmp_path / "c4").mkdir()
    with open(tmp_path / "c4" / "c4_validation_2k.jsonl", "w") as f:
        for i in range(1200):
            words = " ".join(["the cat sat on the mat"] * (1 + (i % 7) * 2)) + f" doc {i}"
            f.write(json.dumps({"text": words, "timestamp": "t", "url": "u"}) + "\n")
    return tmp_path


# ---------------------------------------------------------------- conventions


def test_wikitext_rows_from_raw_small():
    raw = " \n = A = \n \n Body text . \n"
    rows = wikitext_rows_from_raw(raw)
    assert rows == ["", " = A = \n", "", " Body text . \n"]
    assert "\n\n".join(rows) == "\n\n = A = \n\n\n\n\n Body text . \n"


def test_wikitext_local_matches_hf_rows(data_dir):
    path = data_dir / "wikitext-2-raw" / "wiki.test.raw"
    raw = path.read_bytes().decode("utf-8")
    rows = load_rows("wikitext2", data_dir)
    assert len(rows) == 4358  # HF wikitext-2-raw-v1 test rows
    assert sum(1 for r in rows if r) == 2891
    assert all(r == "" or (r.endswith("\n") and r.strip()) for r in rows)
    assert len("".join(rows).encode("utf-8")) == 1_287_656  # SOURCE.md, HF view
    # round trip back to the file (blank rows are written as " " there)
    assert "".join((r[:-1] if r else " ") + "\n" for r in rows) == raw
    joined = eval_text("wikitext2", data_dir)
    assert joined == "\n\n".join(rows)
    assert joined.startswith("\n\n = Robert Boulter = \n\n\n\n\n Robert Boulter is an English film")


def test_ptb_and_c4_rows(data_dir):
    ptb = load_rows("ptb", data_dir)
    assert len(ptb) == 3761 and ptb[0] == "no it was n't black monday"
    assert all(s == s.strip() and s for s in ptb)
    assert eval_text("ptb", data_dir) == " ".join(ptb)
    docs = load_rows("c4", data_dir)  # parquet
    assert len(docs) == 2000
    jsonl = text_mod._read_c4_docs(data_dir / "c4" / "c4_validation_2k.jsonl")
    assert jsonl == docs
    assert eval_text("c4", data_dir) == " ".join(docs[:1100])


# ---------------------------------------------------------------- availability


def test_check_available_fast_local(data_dir):
    t0 = time.perf_counter()
    srcs = [
        check_available(d, data_dir)
        for d in ("wikitext2", "ptb", "c4", "wikitext", "lambada", "piqa", "boolq")
    ]
    assert time.perf_counter() - t0 < 0.5
    assert all(s.kind == "local" for s in srcs)
    assert srcs[0].path == data_dir / "wikitext-2-raw" / "wiki.test.raw"
    assert srcs[2].path.name == "c4_validation_2k.parquet" and srcs[2].split == "validation"
    assert srcs[4].dataset == "lambada_openai"
    assert len(check_available("piqa", data_dir).files) == 2


def test_check_available_reads_env(data_dir, monkeypatch):
    monkeypatch.setenv("MOSAIC_DATA_DIR", str(data_dir))
    assert check_available("ptb").path == data_dir / "ptb" / "ptb.test.txt"


def test_missing_dir_offline_raises_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = tmp_path / "nope"
    t0 = time.perf_counter()
    with pytest.raises(DataUnavailableError) as ei:
        check_available("wikitext2", missing)
    msg = str(ei.value)
    assert "wikitext2" in msg and str(missing / "wikitext-2-raw" / "wiki.test.raw") in msg
    assert "offline" in msg.lower() or "hub" in msg.lower()
    with pytest.raises(DataUnavailableError, match="c4_validation_2k"):
        get_eval_tokens(object(), "c4", missing)  # fails before touching the tokenizer
    assert time.perf_counter() - t0 < 5.0


def test_no_data_dir_message(monkeypatch):
    monkeypatch.delenv("MOSAIC_DATA_DIR", raising=False)
    with pytest.raises(DataUnavailableError, match="MOSAIC_DATA_DIR.*ptb/ptb.test.txt"):
        check_available("ptb", None)


def test_hub_reachable_env_and_probe(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert hub_reachable() is False
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(sources_mod, "HUB_HOST", "127.0.0.1")
    monkeypatch.setattr(sources_mod, "HUB_PORT", 9)  # discard port: refused at once
    monkeypatch.setattr(sources_mod, "_PROBE_CACHE", {})
    t0 = time.perf_counter()
    assert hub_reachable(use_cache=False) is False
    assert time.perf_counter() - t0 < 2.5


def test_calibration_default_split_offline_names_hint(data_dir):
    with pytest.raises(DataUnavailableError, match="wiki.train.raw.*split"):
        check_available("wikitext2", data_dir, purpose="calibration")


def test_unknown_dataset_and_split(data_dir):
    with pytest.raises(ValueError, match="unknown dataset"):
        check_available("hellaswag", data_dir)
    with pytest.raises(ValueError, match="unknown split"):
        check_available("c4", data_dir, split="dev")


# ---------------------------------------------------------------- tokens + cache


def test_eval_tokens_cache_and_c4_cut(fake_dir, tok, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    a = get_eval_tokens(tok, "ptb", fake_dir, cache_dir=cache)
    assert a.dtype == torch.long and a.shape[0] == 1
    assert torch.equal(a, text_mod.tokenize_text(tok, eval_text("ptb", fake_dir)))
    assert len(list(cache.glob("tokens-ptb-*.pt"))) == 1
    monkeypatch.setattr(text_mod, "load_rows", lambda *a, **k: pytest.fail("cache miss"))
    assert torch.equal(get_eval_tokens(tok, "ptb", fake_dir, cache_dir=cache), a)
    monkeypatch.undo()
    full = get_eval_tokens(tok, "c4", fake_dir, cache_dir=cache)
    docs = load_rows("c4", fake_dir)
    assert torch.equal(full, text_mod.tokenize_text(tok, " ".join(docs[:1100])))
    cut = get_eval_tokens(tok, "c4", fake_dir, seqlen=8, cache_dir=cache)
    assert torch.equal(cut, full[:, : 256 * 8])


# ---------------------------------------------------------------- calibration


def test_calibration_c4_deterministic(data_dir, tok):
    rs, ts = random.getstate(), torch.random.get_rng_state()
    a = get_calibration_windows(tok, "c4", 6, 48, seed=0, data_dir=data_dir)
    b = get_calibration_windows(tok, "c4", 6, 48, seed=0, data_dir=data_dir)
    c = get_calibration_windows(tok, "c4", 6, 48, seed=1, data_dir=data_dir)
    assert a.shape == (6, 48) and a.dtype == torch.long
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert random.getstate() == rs and torch.equal(torch.random.get_rng_state(), ts)
    assert 0 <= int(a.min()) and int(a.max()) < len(tok)


def test_calibration_stream_matches_gptq(fake_dir, tok):
    stream = text_mod.tokenize_text(tok, " ".join(load_rows("wikitext2", fake_dir, split="test")))
    w = get_calibration_windows(tok, "wikitext2", 5, 16, seed=3, data_dir=fake_dir, split="test")
    random.seed(3)  # GPTQ's own code path, on the same stream
    for k in range(5):
        i = random.randint(0, stream.shape[1] - 16 - 1)
        assert torch.equal(w[k], stream[0, i : i + 16])


def test_calibration_c4_windows_in_late_docs(fake_dir, tok):
    docs = load_rows("c4", fake_dir)
    w = get_calibration_windows(tok, "c4", 4, 12, seed=0, data_dir=fake_dir)
    late = [text_mod.tokenize_text(tok, d)[0].tolist() for d in docs[1100:]]
    for row in w.tolist():
        assert any(any(ids[j : j + 12] == row for j in range(len(ids) - 11)) for ids in late)


def test_calibration_validation(fake_dir, tok):
    for bad in ({"nsamples": 0, "seqlen": 8}, {"nsamples": 2, "seqlen": 0}, {"nsamples": 2.5, "seqlen": 8}):
        with pytest.raises(ValueError, match="positive int"):
            get_calibration_windows(tok, "ptb", seed=0, data_dir=fake_dir, split="test", **bad)
    with pytest.raises(ValueError, match="fewer than seqlen"):
        get_calibration_windows(tok, "ptb", 2, 100_000, seed=0, data_dir=fake_dir, split="test")
    with pytest.raises(ValueError, match="no document has more than"):
        get_calibration_windows(tok, "c4", 2, 5_000, seed=0, data_dir=fake_dir)
