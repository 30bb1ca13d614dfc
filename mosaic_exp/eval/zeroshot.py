"""Zero-shot accuracy from the local task files, following lm-eval-harness (v0.4.x) task definitions.

Tasks (names as in lm-eval; ``lambada`` is an alias of ``lambada_openai``):

=============== ============================================== ================================ ==========
task            context (doc_to_text)                          continuations                    metrics
=============== ============================================== ================================ ==========
piqa            ``"Question: {goal}\\nAnswer:"``                ``" " + sol1``, ``" " + sol2``   acc, acc_norm
arc_easy        ``"Question: {stem}\\nAnswer:"``                ``" " + choice_text`` each       acc, acc_norm
arc_challenge   same as arc_easy                               same                             acc, acc_norm
winogrande      ``sentence[:idx_] + option`` (one per option)  ``" " + sentence[idx_+1:].strip()`` acc (partial scoring)
boolq           ``"{passage}\\nQuestion: {question}?\\nAnswer:"`` ``" no"``, ``" yes"``           acc
lambada_openai  ``" ".join(text.split(" ")[:-1])``               ``" " + last word``              acc (greedy), perplexity
=============== ============================================== ================================ ==========

``acc`` = argmax of summed continuation log-likelihoods; ``acc_norm`` = argmax of log-likelihood
divided by the character length of the choice text (lm-eval's ``completion_len``); ties go to the
first choice (``np.argmax``). LAMBADA ``perplexity`` = ``exp(-mean(loglikelihood of the last word))``.

Loglikelihoods follow lm-eval's ``HFLM``: trailing spaces of the context move to the continuation;
``whole = encode(context + continuation)``, ``context_enc = encode(context)``, the continuation
tokens are ``whole[len(context_enc):]`` (tokenizer-default special tokens, as lm-eval 0.4.13 does);
``input = (context_enc + continuation_enc)[-(max_length + 1):][:-1]`` (left truncation).

``backend="local"`` (default) reads the local files (see ``docs/data.md``) and works offline.
``backend="lm_eval"`` runs ``lm_eval.simple_evaluate`` with ``HFLM(pretrained=model, tokenizer=...)``
and needs ``lm_eval`` installed AND the HF hub reachable (it downloads the datasets); otherwise it
raises: the backend is never switched silently, and the result dict says which one ran.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from mosaic_exp.eval.perplexity import progress_bar

from ..data.sources import (
    ZEROSHOT_TASKS,
    DataUnavailableError,
    canonical_dataset,
    check_available,
    hub_reachable,
)

__all__ = [
    "DEFAULT_TASKS",
    "TASK_METRICS",
    "Doc",
    "LoglikelihoodEngine",
    "evaluate_zeroshot",
    "flatten_results",
    "load_task",
    "score_task",
]

DEFAULT_TASKS: tuple[str, ...] = (
    "piqa",
    "arc_easy",
    "arc_challenge",
    "winogrande",
    "boolq",
    "lambada_openai",
)
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "piqa": ("acc", "acc_norm"),
    "arc_easy": ("acc", "acc_norm"),
    "arc_challenge": ("acc", "acc_norm"),
    "winogrande": ("acc",),
    "boolq": ("acc",),
    "lambada_openai": ("acc", "perplexity"),
}


@dataclass
class Doc:
    """One example as loglikelihood requests. ``requests[i] = (context, continuation)``.

    Multiple-choice: one request per choice, ``label`` = gold index, ``choices`` = the choice
    strings used for acc_norm lengths. LAMBADA: a single request, ``label = -1``.
    """

    requests: list[tuple[str, str]]
    label: int
    choices: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# task loaders (local files; formats in shared/data/*/SOURCE.md)


def _jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _labels(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def _mc(ctx: str, choices: list[str], label: int, delim: str = " ") -> Doc:
    return Doc([(ctx, f"{delim}{c}") for c in choices], label, list(choices))


def _piqa(files: tuple[Path, ...]) -> list[Doc]:
    rows, labels = _jsonl(files[0]), _labels(files[1])
    if len(rows) != len(labels):
        raise ValueError(f"piqa: {len(rows)} questions but {len(labels)} labels")
    return [
        _mc(f"Question: {r['goal']}\nAnswer:", [r["sol1"], r["sol2"]], int(lab))
        for r, lab in zip(rows, labels)
    ]


def _arc(files: tuple[Path, ...]) -> list[Doc]:
    docs = []
    for r in _jsonl(files[0]):
        q = r["question"]
        texts = [c["text"] for c in q["choices"]]
        labels = [c["label"] for c in q["choices"]]
        docs.append(_mc(f"Question: {q['stem']}\nAnswer:", texts, labels.index(r["answerKey"])))
    return docs


def _winogrande(files: tuple[Path, ...]) -> list[Doc]:
    docs = []
    for r in _jsonl(files[0]):
        s = r["sentence"]
        idx = s.index("_")
        target = " " + s[idx + 1 :].strip()
        options = [r["option1"], r["option2"]]
        ctxs = [s[:idx] + o for o in options]
        docs.append(Doc([(c, target) for c in ctxs], {"1": 0, "2": 1}[str(r["answer"])], ctxs))
    return docs


def _boolq(files: tuple[Path, ...]) -> list[Doc]:
    docs = []
    for r in _jsonl(files[0]):
        lab = r["label"]
        gold = int(lab) if isinstance(lab, (bool, int)) else {"true": 1, "false": 0}[str(lab).strip().lower()]
        docs.append(_mc(f"{r['passage']}\nQuestion: {r['question']}?\nAnswer:", ["no", "yes"], gold))
    return docs


def _lambada(files: tuple[Path, ...]) -> list[Doc]:
    docs = []
    for r in _jsonl(files[0]):
        words = r["text"].split(" ")
        docs.append(Doc([(" ".join(words[:-1]), " " + words[-1])], -1))
    return docs


_LOADERS = {
    "piqa": _piqa,
    "arc_easy": _arc,
    "arc_challenge": _arc,
    "winogrande": _winogrande,
    "boolq": _boolq,
    "lambada_openai": _lambada,
}


def load_task(task: str, data_dir=None, limit: int | None = None) -> list[Doc]:
    """Parse the local file(s) of ``task`` into :class:`Doc` s (first ``limit`` examples)."""
    name = canonical_dataset(task)
    if name not in _LOADERS:
        raise ValueError(f"not a zero-shot task: {task!r}; known: {list(_LOADERS)}")
    src = check_available(name, data_dir, allow_hub=False)
    docs = _LOADERS[name](src.files)
    return docs if limit is None else docs[: int(limit)]


# ---------------------------------------------------------------------------------------------
# loglikelihood engine




class LoglikelihoodEngine:
    """Batched ``log p(continuation | context)`` over a HF causal LM (lm-eval ``HFLM`` semantics).

    ``max_length``: model context used (default: ``config.max_position_embeddings`` capped at
    2048); longer inputs are truncated on the left. Batches hold at most ``batch_size`` sequences
    and ``max_batch_tokens`` padded tokens; sequences are right-padded and sorted by length.
    """

    def __init__(
        self,
        model,
        tokenizer,
        *,
        max_length: int | None = None,
        batch_size: int = 16,
        max_batch_tokens: int = 8192,
        device=None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        if max_length is None:
            cfg_len = getattr(getattr(model, "config", None), "max_position_embeddings", None) or 2048
            max_length = min(int(cfg_len), 2048)
        self.max_length = int(max_length)
        self.batch_size = max(1, int(batch_size))
        self.max_batch_tokens = max(1, int(max_batch_tokens))
        if device is None:
            try:
                device = next(model.parameters()).device
            except (StopIteration, AttributeError):
                device = "cpu"
        self.device = torch.device(device)
        bos = getattr(tokenizer, "bos_token_id", None)
        self.prefix_token_id = bos if bos is not None else getattr(tokenizer, "eos_token_id", None)
        self.pad_token_id = getattr(tokenizer, "pad_token_id", None) or 0

    def tok_encode(self, s: str, add_special_tokens: bool | None = None) -> list[int]:
        kw = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        return list(self.tokenizer.encode(s, **kw))

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        if context == "":
            cont = self.tok_encode(continuation, add_special_tokens=False)
            if self.prefix_token_id is None:
                raise ValueError("empty context and the tokenizer has neither BOS nor EOS")
            if cont and cont[0] == self.prefix_token_id:
                return cont[:1], cont[1:]
            return [self.prefix_token_id], cont
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces > 0:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        whole = self.tok_encode(context + continuation)
        ctx = self.tok_encode(context)
        return ctx, whole[len(ctx) :]

    def loglikelihood(
        self, requests: list[tuple[str, str]], progress: bool = False
    ) -> list[tuple[float, bool]]:
        """``[(sum log p(continuation tokens), is_greedy)]`` in request order."""
        return self.loglikelihood_tokens([self.encode_pair(c, x) for c, x in requests], progress=progress)

    def loglikelihood_tokens(
        self, pairs: list[tuple[list[int], list[int]]], progress: bool = False
    ) -> list[tuple[float, bool]]:
        # Requests with identical model input (e.g. single-token answers " no"/" yes" after the
        # same context) share one forward pass: items are (input ids, [(request idx, cont ids)]).
        groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
        for k, (ctx, cont) in enumerate(pairs):
            if len(cont) == 0:
                raise ValueError(f"request {k}: empty continuation after tokenization")
            inp = (list(ctx) + list(cont))[-(self.max_length + 1) :][:-1]
            n_cont = min(len(cont), len(inp))
            groups.setdefault(tuple(inp), []).append((k, list(cont)[-n_cont:]))
        items = [(reqs[0][0], list(inp), reqs) for inp, reqs in groups.items()]
        items.sort(key=lambda t: (-len(t[1]), t[0]))

        batches, cur = [], []
        for it in items:
            width = len(cur[0][1]) if cur else len(it[1])
            if cur and (len(cur) >= self.batch_size or (len(cur) + 1) * width > self.max_batch_tokens):
                batches.append(cur)
                cur = []
            cur.append(it)
        if cur:
            batches.append(cur)

        out: list[tuple[float, bool] | None] = [None] * len(pairs)
        was_training = getattr(self.model, "training", False)
        self.model.eval()
        try:
            with torch.inference_mode():
                for batch in progress_bar(batches, len(batches), progress, "loglikelihood"):
                    L = len(batch[0][1])
                    ids = torch.full((len(batch), L), self.pad_token_id, dtype=torch.long)
                    mask = torch.zeros((len(batch), L), dtype=torch.long)
                    for b, (_, inp, _) in enumerate(batch):
                        ids[b, : len(inp)] = torch.tensor(inp, dtype=torch.long)
                        mask[b, : len(inp)] = 1
                    ids, mask = ids.to(self.device), mask.to(self.device)
                    try:
                        res = self.model(input_ids=ids, attention_mask=mask, use_cache=False)
                    except TypeError:  # plain nn.Module LMs without HF kwargs
                        res = self.model(ids)
                    logits = res.logits if hasattr(res, "logits") else res[0]
                    for b, (_, inp, reqs) in enumerate(batch):
                        n_max = max(len(cont) for _, cont in reqs)
                        logp_all = F.log_softmax(logits[b, len(inp) - n_max : len(inp)].float(), dim=-1)
                        for k, cont in reqs:
                            logp = logp_all[n_max - len(cont) :]
                            tgt = torch.tensor(cont, dtype=torch.long, device=logp.device)
                            ll = logp.gather(-1, tgt[:, None]).squeeze(-1).double().sum().item()
                            greedy = bool((logp.argmax(-1) == tgt).all().item())
                            out[k] = (float(ll), greedy)
        finally:
            if was_training:
                self.model.train()
        return out  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# scoring


def _argmax(xs) -> int:
    best = 0
    for i, x in enumerate(xs):
        if x > xs[best]:
            best = i
    return best


def _stderr(vals: list[float]) -> float:
    n = len(vals)
    if n < 2:
        return float("nan")
    m = sum(vals) / n
    return math.sqrt(sum((v - m) ** 2 for v in vals) / (n - 1) / n)


def score_task(task: str, docs: list[Doc], results: list[list[tuple[float, bool]]]) -> dict:
    """Aggregate per-doc request results into lm-eval's metrics for ``task``."""
    name = canonical_dataset(task)
    metrics = TASK_METRICS[name]
    if name == "lambada_openai":
        lls = [r[0][0] for r in results]
        acc = [1.0 if r[0][1] else 0.0 for r in results]
        return {
            "acc": sum(acc) / len(acc),
            "acc_stderr": _stderr(acc),
            "perplexity": math.exp(-sum(lls) / len(lls)),
            "n": len(docs),
        }
    acc, acc_norm = [], []
    for doc, res in zip(docs, results):
        lls = [ll for ll, _ in res]
        acc.append(1.0 if _argmax(lls) == doc.label else 0.0)
        if "acc_norm" in metrics:
            normed = [ll / max(len(c), 1) for ll, c in zip(lls, doc.choices)]
            acc_norm.append(1.0 if _argmax(normed) == doc.label else 0.0)
    out = {"acc": sum(acc) / len(acc), "acc_stderr": _stderr(acc)}
    if acc_norm:
        out["acc_norm"] = sum(acc_norm) / len(acc_norm)
        out["acc_norm_stderr"] = _stderr(acc_norm)
    out["n"] = len(docs)
    return out


def _run_local(model, tokenizer, tasks, data_dir, limit, batch_size, max_length, device, progress) -> dict:
    engine = LoglikelihoodEngine(
        model, tokenizer, max_length=max_length, batch_size=batch_size, device=device
    )
    out = {}
    for t in tasks:
        t0 = time.perf_counter()
        src = check_available(t, data_dir, allow_hub=False)
        docs = load_task(t, data_dir, limit)
        if not docs:
            raise ValueError(f"{t}: no examples (limit={limit})")
        flat = [req for d in docs for req in d.requests]
        res = engine.loglikelihood(flat, progress=progress)
        per_doc, i = [], 0
        for d in docs:
            per_doc.append(res[i : i + len(d.requests)])
            i += len(d.requests)
        scores = score_task(t, docs, per_doc)
        scores.update(split=src.split, source=str(src.path), seconds=time.perf_counter() - t0)
        out[t] = scores
    return out


def _run_lm_eval(model, tokenizer, tasks, limit, batch_size, max_length, device) -> dict:
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
    except ImportError as e:
        raise RuntimeError("backend='lm_eval' needs the `lm-eval` package (extra `zeroshot`)") from e
    if not hub_reachable():
        raise DataUnavailableError(
            "backend='lm_eval' downloads its datasets from the HF hub, which is offline/unreachable; "
            "use backend='local' (reads the local data dir)"
        )
    kw = {"batch_size": batch_size}
    if max_length is not None:
        kw["max_length"] = max_length
    if device is not None:
        kw["device"] = str(device)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, **kw)
    res = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), num_fewshot=0, limit=limit)
    out = {}
    for t in tasks:
        r = res["results"].get(t, {})
        d = {}
        for m in TASK_METRICS[t]:
            if f"{m},none" in r:
                d[m] = float(r[f"{m},none"])
            if f"{m}_stderr,none" in r and m != "perplexity":
                try:
                    d[f"{m}_stderr"] = float(r[f"{m}_stderr,none"])
                except (TypeError, ValueError):
                    pass
        n = res.get("n-samples", {}).get(t, {})
        d["n"] = int(n.get("effective", n.get("original", -1))) if isinstance(n, dict) else -1
        out[t] = d
    return out


def evaluate_zeroshot(
    model,
    tokenizer,
    tasks=DEFAULT_TASKS,
    data_dir: str | os.PathLike | None = None,
    *,
    limit: int | None = None,
    backend: str = "local",
    batch_size: int = 16,
    max_length: int | None = None,
    device=None,
    progress: bool = True,
) -> dict:
    """Zero-shot metrics per task.

    Returns ``{"backend": "local"|"lm_eval", "limit": limit, "seconds": s, "tasks": {task:
    {"acc", "acc_stderr", ["acc_norm", "acc_norm_stderr"], ["perplexity"], "n", ...}}}`` with
    accuracies as fractions in [0, 1]. ``limit`` takes the first N examples of each task.
    """
    if isinstance(tasks, str):
        tasks = [tasks]
    names = []
    for t in tasks:
        n = canonical_dataset(t)
        if n not in ZEROSHOT_TASKS:
            raise ValueError(f"not a zero-shot task: {t!r}; known: {list(ZEROSHOT_TASKS)}")
        if n not in names:
            names.append(n)
    if limit is not None and int(limit) < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")
    t0 = time.perf_counter()
    if backend == "local":
        per_task = _run_local(
            model, tokenizer, names, data_dir, limit, batch_size, max_length, device, progress
        )
    elif backend == "lm_eval":
        per_task = _run_lm_eval(model, tokenizer, names, limit, batch_size, max_length, device)
    else:
        raise ValueError(f"backend must be 'local' or 'lm_eval', got {backend!r}")
    return {"backend": backend, "limit": limit, "seconds": time.perf_counter() - t0, "tasks": per_task}


def flatten_results(result: dict, prefix: str = "zeroshot") -> dict[str, float]:
    """``{"zeroshot/piqa/acc": 0.66, ...}`` for loggers (metrics only; no stderr / n)."""
    flat = {}
    for task, d in result["tasks"].items():
        for m in TASK_METRICS.get(task, ()):
            if m in d:
                flat[f"{prefix}/{task}/{m}"] = d[m]
    return flat
