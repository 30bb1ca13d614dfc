#!/usr/bin/env python3
"""Model-level speed of the W4A16 kernels: an 8B-shaped random model's forward, bf16 vs our kernels, one run.

    python scripts/bench_forward.py --out $OUT                       (on the device: CUDA + the native module)
    python scripts/bench_forward.py --model qwen3_8b_random --layers 8 --budget 0.1

The model (``conf/model/<name>.yaml``, ``source: random``; default LLaMA-3-8B shapes at full depth) is built on
the GPU. Every decoder linear is quantized once by MosaicQuant's weight path (RTN 4-bit base, g128 asymmetric,
then the Δ-Hessian residual with h = 1, i.e. the weight-space error drop, at ``--budget`` of 128x128 blocks: no
calibration data, the same block count and layout the kernels see after a real run). Then, in the same process
and with the same input ids, the forward of each variant (:func:`mosaic_exp.eval.forward_speed.time_forward`):
  bf16        the model as built (torch.nn.Linear, cuBLAS)
  dense       every decoder linear a QuantLinear running our dense 4-bit kernel on the base alone
  zipper      the fused base + residual kernel (the product)
  +fused      the same, with q/k/v and gate/up each one launch over the stacked weight
              (mosaic_exp.kernels.fused_linear; kernel.fuse_shared_input in a run)
  separate    dense kernel + a second residual kernel (with --separate)
at each --shapes entry BxS (B sequences of S tokens; S = 1 is a decode step's weight work). Embeddings, norms,
attention and the head stay bf16 in every variant. Default timing: a CUDA graph of one forward, replayed (the
way a serving engine runs decode); --eager times the eager forward (Python and dispatch included) too.
Unfused, HF runs q/k/v and gate/up as separate linears (4096->4096, ->1024 for k and v, ->14336 for gate and up);
fused, the kernels see bench_kernels.py's qkv 4096->6144 and gate_up 4096->28672.
Output: markdown + JSON (command, device, date, commit, kernels that ran) under --out.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mosaic_exp.config import ConfigError, ModelConfig, parse_speed_shape
from mosaic_exp.eval.forward_speed import time_forward
from mosaic_exp.kernels.quant_linear import check_variant
from mosaic_exp.kernels.swap import fuse_shared_input_linears, swap_quant_linears
from mosaic_exp.logging.environment import result_commit
from mosaic_exp.logging.records import write_bench_result
from mosaic_exp.models.adapters import get_adapter
from mosaic_exp.models.loader import build_random_model
from mosaic_exp.quant.mosaic import mosaic_quantize


def load_model_config(name: str) -> ModelConfig:
    import yaml  # a transformers dependency; hydra / omegaconf are not needed on the device for this script

    path = ROOT / "conf" / "model" / f"{name}.yaml"
    if not path.exists():
        raise SystemExit(f"unknown model {name!r}: no {path}")
    cfg = ModelConfig(**yaml.safe_load(path.read_text()))
    if cfg.source != "random":
        raise SystemExit(f"--model {name}: source={cfg.source!r}; this benchmark builds random models only")
    return cfg


def parse_shapes(text: str) -> list[tuple[int, int]]:
    try:
        return [parse_speed_shape(item) for item in text.split(",")]
    except ConfigError as e:
        raise SystemExit(f"--shapes: {e}") from None


@torch.no_grad()
def quantize_linears(model, arch: str, budget: float, block: int, group_size: int) -> dict:
    """name -> QuantizedWeight (on the GPU) for every decoder linear."""
    adapter = get_adapter(arch)
    weights = {}
    for i, layer in enumerate(adapter.decoder_layers(model)):
        for name, lin in adapter.linears(layer).items():
            W = lin.weight.float()
            qw, _ = mosaic_quantize(W, base="rtn", h=torch.ones(W.shape[1], device=W.device), bits=4,
                                    group_size=group_size, symmetric=False, budget=budget,
                                    block_shape=(block, block), scale_dtype=torch.float16)
            weights[f"model.layers.{i}.{name}"] = qw
    return weights


def install(model, arch: str, linears: dict, weights: dict, variant: str | None, dtype: torch.dtype) -> None:
    """Put the original nn.Linear back at every quantized name, then (unless ``variant`` is None) a fresh
    QuantLinear of ``variant`` by ``swap_quant_linears``, the runner's own swap (the weights are on the GPU, so
    packing happens there); "<variant>+fused": q/k/v and gate/up then run as one kernel each
    (``fuse_shared_input_linears``)."""
    base, _, fused = (variant or "").partition("+")
    for name in {n.rpartition(".")[0] for n in linears}:  # drop the previous variant's fused groups
        parent = model.get_submodule(name)
        for child in [c for c, _ in parent.named_children() if c.startswith("fused_")]:
            delattr(parent, child)
    for name, lin in linears.items():
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, lin)
    if variant is not None:
        swap_quant_linears(model, {name: weights[name] for name in linears}, base, dtype)
    if fused:
        fuse_shared_input_linears(model, weights, get_adapter(arch), base, dtype)
    torch.cuda.empty_cache()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="llama3_8b_random")
    ap.add_argument("--layers", type=int, default=None, help="decoder layers (default: the config's)")
    ap.add_argument("--budget", type=float, default=0.03)
    ap.add_argument("--block", type=int, default=128)
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--shapes", default="1x1,16x1,64x1,1x2048")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--separate", action="store_true")
    ap.add_argument("--eager", action="store_true", help="also time eager forwards")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    a = ap.parse_args()
    shapes = parse_shapes(a.shapes)
    if not 0.0 <= a.budget <= 1.0:
        raise SystemExit(f"--budget={a.budget} must be in [0, 1]")
    if not torch.cuda.is_available():
        raise SystemExit("bench_forward needs a CUDA device")
    variants = ["dense", "zipper", "dense+fused", "zipper+fused"] + (["separate"] if a.separate else [])
    for v in variants:
        check_variant(v.partition("+")[0], "cuda")  # raises naming the variant and why (e.g. the native module is not built)
    mcfg = load_model_config(a.model)
    dtype = torch.bfloat16 if mcfg.dtype == "bfloat16" else torch.float16
    t0 = time.perf_counter()
    model = build_random_model(mcfg, device="cuda", num_hidden_layers=a.layers).eval()
    model.config.use_cache = False
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    weights = quantize_linears(model, mcfg.arch, a.budget, a.block, a.group_size)
    t_quant = time.perf_counter() - t0
    linears = {name: model.get_submodule(name) for name in weights}  # the original nn.Linear of every name
    kept = sum(int(qw.res_index.shape[0]) for qw in weights.values())
    total = sum(math.ceil(qw.out_features / a.block) * math.ceil(qw.in_features / a.block) for qw in weights.values())
    print(f"built in {t_build:.1f} s, quantized {len(weights)} linears in {t_quant:.1f} s "
          f"({kept} / {total} residual blocks)", flush=True)

    modes = [True] + ([False] if a.eager else [])
    rows = []
    base_only = {n: w.without_residual() for n, w in weights.items()}  # what `dense` runs of each weight
    for variant in [None, *variants]:
        install(model, mcfg.arch, linears, base_only if (variant or "").startswith("dense") else weights, variant,
                dtype)
        name = variant or "bf16"
        for b, s in shapes:
            for graph in modes:
                mode = "cuda-graph" if graph else "eager"
                try:
                    r = time_forward(model, b, s, device="cuda", cuda_graph=graph, reps=a.reps)
                except (RuntimeError, ValueError) as e:  # recorded as failed, the other cells go on
                    rows.append({"variant": name, "batch": b, "seq": s, "mode": mode, "median_ms": math.nan,
                                 "kernels": {}, "error": f"{type(e).__name__}: {e}"[:2000]})
                    print(f"{name:12s} {b}x{s} {mode:10s} FAILED {type(e).__name__}: {str(e)[:300]}", flush=True)
                    torch.cuda.synchronize()
                    continue
                rows.append({"variant": name, **r.as_dict()})
                print(f"{name:12s} {b}x{s} {r.mode:10s} {r.median_ms:8.3f} ms  ({r.min_ms:.3f}-{r.max_ms:.3f})  "
                      f"{sorted(r.kernels)[:2]}", flush=True)
        torch.cuda.synchronize()
    # the end-to-end check: the zipper model's last-position logits against the same weights dequantized into
    # the bf16 linears (the reference the kernel tests use, at model scale); the originals are not needed after
    ids = torch.randint(0, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1)).to("cuda")
    with torch.no_grad():
        install(model, mcfg.arch, linears, weights, "zipper", dtype)
        logits_z = model(input_ids=ids, use_cache=False).logits[:, -1].float()
        install(model, mcfg.arch, linears, weights, None, dtype)
        for name, lin in linears.items():
            lin.weight.copy_(weights[name].dequantize().to(lin.weight.device, dtype))
        logits_r = model(input_ids=ids, use_cache=False).logits[:, -1].float()
    check = float((logits_z - logits_r).norm() / logits_r.norm())
    print(f"zipper vs dequantized bf16 linears, last-position logits: relative error {check:.2e}", flush=True)

    def ms(variant, b, s, mode) -> float:
        return next(r["median_ms"] for r in rows if (r["variant"], r["batch"], r["seq"], r["mode"]) == (variant, b, s, mode))

    head = ["| B x S | mode | bf16 ms | " + " | ".join(f"{v} ms (vs bf16)" for v in variants)
            + " | zipper vs dense (unfused / fused) |", "|---|---|---|" + "---|" * len(variants) + "---|"]
    for b, s in shapes:
        for graph in modes:
            mode = "cuda-graph" if graph else "eager"
            base = ms("bf16", b, s, mode)
            cells = [f"{ms(v, b, s, mode):.3f} ({base / ms(v, b, s, mode):.2f}x)" for v in variants]
            over = ms("zipper", b, s, mode) / ms("dense", b, s, mode) - 1
            over_f = ms("zipper+fused", b, s, mode) / ms("dense+fused", b, s, mode) - 1
            head.append(f"| {b} x {s} | {mode} | {base:.3f} | " + " | ".join(cells)
                        + f" | {over * 100:+.1f} % / {over_f * 100:+.1f} % |")
    failed = [r for r in rows if "error" in r]
    if failed:
        head += ["", "Failed cells (nan above):"] + [f"- {r['variant']} {r['batch']}x{r['seq']} {r['mode']}: "
                                                     f"{r['error'][:400]}" for r in failed]
    head += ["", "Kernels that ran (per variant and shape, CUDA graph; module count):"]
    for r in rows:
        if r["mode"] == "cuda-graph" and r["variant"] != "bf16" and "error" not in r:
            head.append(f"- {r['variant']} {r['batch']}x{r['seq']}: "
                        + "; ".join(f"{k} x{n}" for k, n in r["kernels"].items()))
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    layers = model.config.num_hidden_layers
    meta = {"command": " ".join(["python", *sys.argv]), "gpu": torch.cuda.get_device_name(0), "date_utc": stamp,
            "commit": result_commit(ROOT), "torch": torch.__version__,
            "model": f"{a.model} ({layers} decoder layers, {dtype}, random weights)",
            "quantization": f"RTN g{a.group_size} asym base + residual at budget {a.budget} of "
                            f"{a.block}x{a.block} blocks ({kept} / {total} kept), h = 1",
            "method": f"median of {a.reps} timed forwards (CUDA events) after 3 warm-up; logits of the last "
                      f"position only; no KV cache (attention over the S tokens themselves)",
            "build_s": round(t_build, 1), "quantize_s": round(t_quant, 1),
            "zipper_vs_dequantized_logits_rel_err": check}
    md = write_bench_result(a.out, f"bench_forward_{stamp}", f"Model forward, {a.model}, bf16 vs W4A16 ({stamp})",
                            meta, rows, head)
    print(md.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
