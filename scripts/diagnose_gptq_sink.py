"""Why plain GPTQ loses to RTN on SmolLM2: per-linear output error of GPTQ vs RTN, on all tokens and
on each window's first token (the attention sink), with inputs from the FP model.

    python scripts/diagnose_gptq_sink.py --out outputs/results/cpu_gptq_sink_diag.md

CPU, a few minutes. Calibration: C4 windows; held-out: other C4 windows and WikiText-2 test windows.
Ratios < 1 mean GPTQ has the smaller output error sum ||X (W - Q)^T||^2.
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
from pathlib import Path

import torch

from mosaic_exp.config import ModelConfig
from mosaic_exp.data import get_calibration_windows, get_eval_tokens
from mosaic_exp.models.loader import load_model
from mosaic_exp.quant.gptq import GPTQ
from mosaic_exp.quant.rtn import rtn_dequantize, rtn_quantize

LINEARS = ("self_attn.q_proj", "self_attn.o_proj", "mlp.up_proj", "mlp.down_proj")


def collect(model, ids: torch.Tensor, keys, bs: int = 4) -> dict:
    store: dict = {}
    handles = []
    for i, n in keys:
        def hook(_m, args, key=(i, n)):
            store.setdefault(key, []).append(args[0].reshape(-1, args[0].shape[-1]).float())
        handles.append(model.model.layers[i].get_submodule(n).register_forward_pre_hook(hook))
    with torch.inference_mode():
        for j in range(0, ids.shape[0], bs):
            model(ids[j:j + bs], use_cache=False)
    for h in handles:
        h.remove()
    return {k: torch.cat(v) for k, v in store.items()}


def err(X: torch.Tensor, D: torch.Tensor) -> float:
    return float(((X @ D.T) ** 2).sum())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--layers", default="0,1,2,3,10,20,28,29")
    ap.add_argument("--nsamples", type=int, default=32)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    torch.manual_seed(0)
    model, tok = load_model(ModelConfig())
    L = a.seqlen
    cal = get_calibration_windows(tok, "c4", a.nsamples + 8, L, 0, a.data_dir)
    train, held = cal[:a.nsamples], cal[a.nsamples:]
    wt = get_eval_tokens(tok, "wikitext2", a.data_dir, seqlen=2048)[0, :8 * L].reshape(8, L)
    keys = [(int(i), n) for i in a.layers.split(",") for n in LINEARS]
    Xtr, Xho, Xwt = collect(model, train, keys), collect(model, held, keys), collect(model, wt, keys)
    rows = []
    for key in keys:
        W = model.model.layers[key[0]].get_submodule(key[1]).weight.detach().float()
        g = GPTQ(W)
        g.add_batch(Xtr[key])
        Dg = W - g.quantize(4, a.group_size, False).dequantized
        Dr = W - rtn_dequantize(*rtn_quantize(W, 4, a.group_size, False), a.group_size)
        X = Xwt[key]
        X0 = X[0::L]  # each window's first token
        Xr = X.reshape(8, L, -1)[:, 1:].reshape(-1, X.shape[1])
        rows.append((key, err(Xtr[key], Dg) / err(Xtr[key], Dr), err(Xho[key], Dg) / err(Xho[key], Dr),
                     err(X, Dg) / err(X, Dr), err(X0, Dg) / err(X0, Dr), err(X0, Dr) / err(X, Dr),
                     err(Xr, Dg) / err(Xr, Dr)))
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    md = ["# GPTQ vs RTN per linear: all tokens vs the attention-sink token", "",
          f"- command: `python scripts/diagnose_gptq_sink.py --layers {a.layers} --nsamples {a.nsamples} "
          f"--seqlen {L} --group-size {a.group_size}`",
          f"- device: CPU ({torch.get_num_threads()} threads)",
          f"- date: {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}", f"- commit: {commit}",
          "- inputs from the FP model; GPTQ calibrated on the C4 windows (plain average, sink weight 1);",
          "  ratio = GPTQ's output error / RTN's (< 1: GPTQ better); 'pos0 share' = the first tokens' part",
          "  of RTN's WikiText-2 error", "",
          "| layer | linear | C4 calib | C4 held-out | WikiText-2 | WikiText-2 first token | pos0 share | WikiText-2 other tokens |",
          "|---|---|---|---|---|---|---|---|"]
    md += [f"| {k[0]} | {k[1]} | {a1:.3f} | {a2:.3f} | {a3:.3f} | {a4:.3f} | {a5:.3f} | {a6:.3f} |"
           for k, a1, a2, a3, a4, a5, a6 in rows]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
