"""Zero-shot: task loaders on the local files, loglikelihood engine, scoring, tiny end-to-end run."""

from __future__ import annotations

import math

import pytest
import torch

from mosaic_exp.data import DataUnavailableError
from mosaic_exp.data.testing import tiny_llama, tiny_tokenizer
from mosaic_exp.eval.zeroshot import (
    DEFAULT_TASKS,
    Doc,
    LoglikelihoodEngine,
    evaluate_zeroshot,
    flatten_results,
    load_task,
    score_task,
)

EXPECTED = {
    "piqa": (1838, 2),
    "arc_easy": (2376, None),
    "arc_challenge": (1172, None),
    "winogrande": (1267, 2),
    "boolq": (3270, 2),
    "lambada_openai": (5153, 1),
}


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return tiny_llama(len(tok), max_positions=1024)


def direct_ll(model, tok, context: str, continuation: str, max_length: int = 10_000):
    """Independent reference: one unpadded forward per request, plain log_softmax."""
    ctx = tok.encode(context)
    whole = tok.encode(context + continuation)
    cont = whole[len(ctx) :]
    inp = (ctx + cont)[-(max_length + 1) :][:-1]
    cont = cont[-len(inp) :]  # a continuation longer than the window: its last tokens are scored
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([inp])).logits[0].double(), -1)
    rows = logp[len(inp) - len(cont) :]
    ll = sum(rows[i, t].item() for i, t in enumerate(cont))
    greedy = all(int(rows[i].argmax()) == t for i, t in enumerate(cont))
    return ll, greedy


REQS = [
    ("Question: How do I open a jar?\nAnswer:", " Twist the lid."),
    ("The quick brown fox", " jumps over the lazy dog."),
    ("A", " b"),
    ("Sarah was a much better surgeon than Maria so Sarah", " always got the easier cases."),
    ("Passage.\nQuestion: is it?\nAnswer:", " no"),  # same input as the next one when both
    ("Passage.\nQuestion: is it?\nAnswer:", " yes"),  # answers are single tokens: shared forward
    ("Short", " continuation that is noticeably longer than its context, to vary padding."),
]


def test_engine_equals_direct(model, tok):
    eng = LoglikelihoodEngine(model, tok, batch_size=3)
    got = eng.loglikelihood(REQS)
    for (c, x), (ll, greedy) in zip(REQS, got):
        ref_ll, ref_greedy = direct_ll(model, tok, c, x)
        assert ll == pytest.approx(ref_ll, abs=1e-4)
        assert greedy == ref_greedy


def test_engine_left_truncation(model, tok):
    eng = LoglikelihoodEngine(model, tok, batch_size=2, max_length=6)
    for (c, x), (ll, _) in zip(REQS, eng.loglikelihood(REQS)):
        assert ll == pytest.approx(direct_ll(model, tok, c, x, max_length=6)[0], abs=1e-4)


def test_engine_trailing_space_and_greedy(model, tok):
    eng = LoglikelihoodEngine(model, tok)
    assert eng.encode_pair("Answer: ", "yes") == eng.encode_pair("Answer:", " yes")
    ctx = tok.encode("The quick brown fox")
    with torch.no_grad():
        nxt = int(model(torch.tensor([ctx])).logits[0, -1].argmax())
    (ll_g, g), (ll_o, o) = eng.loglikelihood_tokens([(ctx, [nxt]), (ctx, [(nxt + 1) % len(tok)])])
    assert g is True and o is False and ll_g > ll_o


@pytest.mark.parametrize("task", list(EXPECTED))
def test_loader_counts_and_labels(task, data_dir):
    docs = load_task(task, data_dir)
    n, nchoices = EXPECTED[task]
    assert len(docs) == n
    for d in docs:
        if task == "lambada_openai":
            assert d.label == -1 and len(d.requests) == 1
            ctx, cont = d.requests[0]
            assert cont.startswith(" ") and " " not in cont[1:] and ctx
        else:
            assert len(d.requests) == len(d.choices) >= 2
            assert nchoices is None or len(d.requests) == nchoices
            assert 0 <= d.label < len(d.requests)
    assert len(load_task(task, data_dir, limit=7)) == 7


def test_loader_contents(data_dir):
    p = load_task("piqa", data_dir, limit=1)[0]
    assert p.requests[0][0] == "Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:"
    assert p.requests[0][1].startswith(" Provide the guinea pig") and p.label == 0
    w = load_task("winogrande", data_dir, limit=1)[0]
    assert w.requests == [
        ("Sarah was a much better surgeon than Maria so Sarah", " always got the easier cases."),
        ("Sarah was a much better surgeon than Maria so Maria", " always got the easier cases."),
    ]
    assert w.label == 1
    b = load_task("boolq", data_dir)
    assert sum(d.label for d in b) == 2033  # SOURCE.md: 2,033 true
    assert (
        b[0].requests[0][0].endswith("\nQuestion: does ethanol take more energy make that produces?\nAnswer:")
    )
    assert [r[1] for r in b[0].requests] == [" no", " yes"]
    arc = load_task("arc_easy", data_dir, limit=1)[0]
    assert arc.requests[0][0].startswith("Question: Which statement best explains why photosynthesis")
    assert (
        arc.label == 0
        and arc.requests[0][1] == " Sunlight is the source of energy for nearly all ecosystems."
    )


def test_scoring_argmax_and_norm():
    docs = [
        Doc([("q", " a"), ("q", " bbbbbbbb")], 1, ["a", "bbbbbbbb"]),
        Doc([("q", " x"), ("q", " y")], 0, ["x", "y"]),
    ]
    res = [[(-2.0, False), (-3.0, False)], [(-1.0, True), (-1.0, False)]]  # tie -> first choice
    s = score_task("arc_easy", docs, res)
    assert s["acc"] == 0.5  # doc0 picks choice 0 (wrong), doc1 tie -> 0 (right)
    assert s["acc_norm"] == 1.0  # doc0: -2/1 < -3/8 -> choice 1
    assert s["n"] == 2
    lam = score_task("lambada", [Doc([("c", " w")], -1)] * 2, [[(-1.0, True)], [(-3.0, False)]])
    assert lam["acc"] == 0.5 and lam["perplexity"] == pytest.approx(math.exp(2.0))
    assert "acc_norm" not in score_task("boolq", docs, res)


def test_tiny_model_all_tasks(model, tok, data_dir):
    res = evaluate_zeroshot(
        model, tok, DEFAULT_TASKS, data_dir, limit=5, batch_size=8, max_length=192, progress=False
    )
    assert res["backend"] == "local" and res["limit"] == 5
    assert set(res["tasks"]) == set(DEFAULT_TASKS)
    for t, d in res["tasks"].items():
        assert d["n"] == 5 and 0.0 <= d["acc"] <= 1.0, t
    assert res["tasks"]["lambada_openai"]["perplexity"] > 1.0
    flat = flatten_results(res)
    assert "zeroshot/piqa/acc_norm" in flat and "zeroshot/lambada_openai/perplexity" in flat
    again = evaluate_zeroshot(
        model, tok, ["lambada", "piqa"], data_dir, limit=5, max_length=192, progress=False
    )
    assert again["tasks"]["piqa"]["acc"] == res["tasks"]["piqa"]["acc"]


def test_lm_eval_backend_never_switches_silently(model, tok, data_dir):
    with pytest.raises((DataUnavailableError, RuntimeError)):
        evaluate_zeroshot(model, tok, ["piqa"], data_dir, limit=2, backend="lm_eval")  # offline in tests
    with pytest.raises(ValueError, match="backend"):
        evaluate_zeroshot(model, tok, ["piqa"], data_dir, limit=2, backend="auto")
    with pytest.raises(ValueError, match="not a zero-shot task"):
        evaluate_zeroshot(model, tok, ["wikitext2"], data_dir, limit=2)


def _hf_layout(task: str, data_dir, n: int) -> list[dict]:
    """The first n local records converted to the HF dataset layout lm-eval's YAMLs read."""
    import json

    def jl(rel):
        with open(data_dir / rel, encoding="utf-8") as f:
            return [json.loads(line) for line, _ in zip(f, range(n))]

    if task == "piqa":
        labels = (data_dir / "piqa/valid-labels.lst").read_text().split()
        return [dict(r, label=int(lab)) for r, lab in zip(jl("piqa/valid.jsonl"), labels)]
    if task.startswith("arc_"):
        rel = (
            "arc_easy/ARC-Easy-Test.jsonl" if task == "arc_easy" else "arc_challenge/ARC-Challenge-Test.jsonl"
        )
        return [
            {
                "id": r["id"],
                "question": r["question"]["stem"],
                "choices": {
                    "text": [c["text"] for c in r["question"]["choices"]],
                    "label": [c["label"] for c in r["question"]["choices"]],
                },
                "answerKey": r["answerKey"],
            }
            for r in jl(rel)
        ]
    if task == "boolq":
        return [dict(r, label=int(r["label"] == "true")) for r in jl("boolq/val.jsonl")]
    if task == "winogrande":
        return jl("winogrande/dev.jsonl")
    return jl("lambada/lambada_test.jsonl")


def test_requests_match_lm_eval_task_configs(data_dir, tmp_path):
    """Requests, gold labels and choices equal those lm-eval builds from its own task YAMLs."""
    pytest.importorskip("lm_eval")
    import importlib.util
    import json
    from pathlib import Path

    import lm_eval
    import yaml
    from lm_eval.api.task import ConfigurableTask

    root = Path(lm_eval.__file__).parent / "tasks"
    ymls = {
        "piqa": "piqa/piqa.yaml",
        "arc_easy": "arc/arc_easy.yaml",
        "arc_challenge": "arc/arc_easy.yaml",  # arc_challenge.yaml includes it, only the data differ
        "boolq": "super_glue/boolq/default.yaml",
        "lambada_openai": "lambada/lambada_openai.yaml",
    }
    spec = importlib.util.spec_from_file_location("pw", root / "winogrande/preprocess_winogrande.py")
    pw = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pw)
    n = 40
    for task in EXPECTED:
        path = tmp_path / f"{task}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in _hf_layout(task, data_dir, n)))
        if task == "winogrande":
            cfg = {
                "output_type": "multiple_choice",
                "doc_to_text": pw.doc_to_text,
                "doc_to_target": pw.doc_to_target,
                "doc_to_choice": pw.doc_to_choice,
                "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
            }
        else:
            cfg = yaml.safe_load((root / ymls[task]).read_text())
        for k in ("tag", "training_split", "validation_split"):
            cfg.pop(k, None)
        cfg.update(
            task=f"{task}_local",
            dataset_path="json",
            dataset_name=None,
            dataset_kwargs={"data_files": {"test": str(path)}, "cache_dir": str(tmp_path / "hf")},
            test_split="test",
        )
        lm_task = ConfigurableTask(config=cfg)
        lm_task.build_all_requests(limit=None, rank=0, world_size=1)
        by_doc: dict[int, list] = {}
        for inst in lm_task.instances:
            by_doc.setdefault(inst.doc_id, []).append(inst)
        mine = load_task(task, data_dir, limit=n)
        assert len(by_doc) == len(mine) == n, task
        for d, (_, insts) in zip(mine, sorted(by_doc.items())):
            insts.sort(key=lambda i: i.idx)
            assert [tuple(i.arguments) for i in insts] == d.requests, task
            doc = insts[0].doc
            if task == "winogrande":
                assert lm_task.doc_to_text(doc) == d.label
            elif task != "lambada_openai":
                assert lm_task.doc_to_target(doc) == d.label, task
            if task in ("piqa", "arc_easy", "arc_challenge"):
                assert lm_task.doc_to_choice(doc) == d.choices
