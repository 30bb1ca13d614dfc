"""Shared-input fusion: stacked QuantizedWeights and the q/k/v, gate/up modules that run them as one kernel."""

from __future__ import annotations

import pytest
import torch

from mosaic_exp.formats import concat_out_features
from mosaic_exp.kernels.fused_linear import FusedSlice, SharedInputLinears
from mosaic_exp.kernels.testing import random_quantized
from tests.conftest import load_script, require_native_variant

U32 = 2.0 ** -24


def _parts(sizes, k=200, block=(64, 64), budget=0.3, **kw):
    return [random_quantized(n, k, group_size=64, budget=budget, block_shape=block, seed=10 + i, **kw)
            for i, n in enumerate(sizes)]


@pytest.mark.parametrize("kw", [{}, {"symmetric": True}, {"per_block_scale": True}, {"budget": 0.0}])
def test_concat_dequantizes_to_the_stacked_parts(kw):
    parts = _parts([128, 64, 100], **kw)  # the last part may be ragged
    cat = concat_out_features(parts)
    assert cat.out_features == 292 and cat.num_residual_blocks == sum(p.num_residual_blocks for p in parts)
    assert torch.equal(cat.dequantize(), torch.cat([p.dequantize() for p in parts]))


def test_concat_rejects_what_cannot_stack():
    with pytest.raises(ValueError, match="part 0 has out_features=100, not a multiple of the residual block height 64"):
        concat_out_features(_parts([100, 64]))
    concat_out_features(_parts([100, 64], budget=0.0))  # no residual anywhere: any row counts stack
    other_k = _parts([64])[0], random_quantized(64, 128, group_size=64, seed=3)
    with pytest.raises(ValueError, match="part 1 has in_features=128"):
        concat_out_features(list(other_k))
    mixed = [_parts([64])[0], _parts([64], per_block_scale=True)[0]]
    with pytest.raises(ValueError, match="per block row and per block mixed"):
        concat_out_features(mixed)
    with pytest.raises(ValueError, match="at least one"):
        concat_out_features([])


def test_without_residual_is_the_base():
    qw = _parts([128])[0]
    base = qw.without_residual()
    assert qw.num_residual_blocks > 0 and base.num_residual_blocks == 0
    assert torch.equal(base.dequantize(), qw.dequantize_base())


def _group(sizes=(128, 64, 64)):
    parts = _parts(list(sizes))
    g = SharedInputLinears(parts, variant="reference", dtype=torch.float32, device="cpu")
    return parts, g, [FusedSlice(g, i) for i in range(len(sizes))]


def _bound(x, w):
    # the same products as separate matmuls, summed by another fp32 GEMM blocking: K u |x| |w| per output
    return x.shape[-1] * U32 * (x.abs() @ w.abs().T) + 1e-7


def test_slices_match_separate_linears():
    parts, g, slices = _group()
    x = torch.randn(3, 5, 200)
    for p, s in zip(parts, slices):
        w = p.dequantize()
        assert bool(((s(x) - x @ w.T).abs() <= _bound(x, w)).all())
    assert g._outs is None  # every slice served: nothing held


def test_slices_recompute_for_another_or_modified_input():
    parts, _, (q, k, _) = _group()
    x1, x2 = torch.randn(2, 200), torch.randn(2, 200)
    q(x1)
    wk = parts[1].dequantize()
    assert bool(((k(x2) - x2 @ wk.T).abs() <= _bound(x2, wk)).all())  # another tensor: not x1's output
    x3 = torch.randn(2, 200)
    q(x3)
    x3.mul_(2)  # modified in place after q ran: k must see the new values
    assert bool(((k(x3) - x3 @ wk.T).abs() <= _bound(x3, wk)).all())
    y1 = k(x3)
    assert torch.allclose(y1, k(x3))  # the same slice twice: recomputed, not a stale or missing entry


def _tiny_quantized(device="cpu"):
    from mosaic_exp.models.loader import build_random_model

    bench = load_script("bench_forward")
    model = build_random_model(bench.load_model_config("tiny_llama"), device=device, num_hidden_layers=2).eval()
    weights = bench.quantize_linears(model, "llama", budget=0.5, block=32, group_size=32)
    return model, weights


def test_fused_model_matches_unfused():
    from mosaic_exp.eval.forward_speed import ran_kernels
    from mosaic_exp.kernels.swap import fuse_shared_input_linears, swap_quant_linears
    from mosaic_exp.models.adapters import get_adapter

    model, weights = _tiny_quantized()
    swap_quant_linears(model, weights, "reference", torch.float32)
    ids = torch.randint(0, model.config.vocab_size, (2, 7))
    with torch.no_grad():
        ref = model(input_ids=ids, use_cache=False).logits
        assert fuse_shared_input_linears(model, weights, get_adapter("llama"), "reference", torch.float32) == 4
        out = model(input_ids=ids, use_cache=False).logits
    assert isinstance(model.model.layers[0].self_attn.k_proj, FusedSlice)
    # fp32 sums in another order through 2 layers and the head: a few ulps of the logits' scale
    assert torch.allclose(out, ref, rtol=1e-4, atol=1e-5), float((out - ref).abs().max())
    kernels = ran_kernels(model)
    assert sum(kernels.values()) == 2 * (2 + 2)  # per layer: qkv group, o, gate/up group, down
    assert any("[fused" in k for k in kernels)


def test_fuse_requires_a_native_kernel(compose, tmp_path):
    from mosaic_exp.config import ConfigError
    from mosaic_exp.runner.entry import run_experiment

    cfg = compose(["debug=tiny", "logger=none", "quant=rtn", "kernel.fuse_shared_input=true"], tmp_path)
    with pytest.raises(ConfigError, match="kernel.fuse_shared_input=true needs a native W4 kernel"):
        run_experiment(cfg, run_dir=str(tmp_path))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("variant", ["zipper", "dense"])
def test_fused_native_kernel_matches_unfused(variant):
    from mosaic_exp.kernels.quant_linear import QuantLinear
    from mosaic_exp.kernels.swap import fuse_shared_input_linears
    from mosaic_exp.models.adapters import get_adapter

    require_native_variant(variant)
    from mosaic_exp.models.loader import build_random_model

    bench = load_script("bench_forward")
    cfg = bench.load_model_config("tiny_llama")
    # every member a multiple of the kernels' 64-row residual blocks: q 128, k / v 64, gate / up 256
    cfg.random.hidden_size, cfg.random.intermediate_size = 128, 256
    cfg.random.num_attention_heads, cfg.random.num_key_value_heads = 2, 1
    model = build_random_model(cfg, device="cuda", num_hidden_layers=2).eval()
    weights = bench.quantize_linears(model, "llama", budget=0.5, block=64, group_size=64)
    model = model.half()
    if variant == "dense":
        weights = {n: w.without_residual() for n, w in weights.items()}
    for name, qw in weights.items():
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child,
                QuantLinear.from_quantized(qw, variant=variant, dtype=torch.float16, device="cuda"))
    ids = torch.randint(0, model.config.vocab_size, (3, 5), device="cuda")
    layer = model.model.layers[0]
    h = torch.randn(3, 5, model.config.hidden_size, device="cuda", dtype=torch.float16)
    with torch.no_grad():
        sep = [layer.self_attn.get_submodule(n)(h) for n in ("q_proj", "k_proj", "v_proj")]
        assert fuse_shared_input_linears(model, weights, get_adapter("llama"), variant, torch.float16) == 4
        fused = [layer.self_attn.get_submodule(n)(h) for n in ("q_proj", "k_proj", "v_proj")]
        logits = model(input_ids=ids, use_cache=False).logits
    for a, b in zip(sep, fused):
        # another launch plan on the wider N (another kernel family or split): fp16 outputs (1 ulp = 2^-11 rel.)
        # and the weights rounded to fp16 on one path but scaled per group in fp32 on the other: up to
        # 2^-11 K E|x| E|w| ~ 2^-11 * 128 * 0.8 * 0.016 ~ 1e-3
        assert torch.allclose(a.float(), b.float(), rtol=2 ** -9, atol=1e-3), float((a - b).abs().max())
    assert torch.isfinite(logits).all()
