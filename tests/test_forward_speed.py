"""Model-level speed harness (mosaic_exp.eval.forward_speed) and the 8B-shaped random model builder."""

from __future__ import annotations

import pytest
import torch

from mosaic_exp.eval.forward_speed import _check_capturable, ran_kernels, time_forward
from mosaic_exp.models.loader import build_random_model
from mosaic_exp.models.registry import model_config
from tests.conftest import load_script, require_native_variant


def test_build_random_model_depth_and_seed():
    cfg = model_config("tiny_llama")
    a = build_random_model(cfg, num_hidden_layers=1)
    b = build_random_model(cfg, num_hidden_layers=1)
    assert a.config.num_hidden_layers == 1 and len(a.model.layers) == 1
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n  # the config's seed fixes every value
    full = build_random_model(cfg)
    assert len(full.model.layers) == cfg.random.num_hidden_layers
    # the first layer's weights do not depend on the depth (one generator, parameters in the same order)
    assert torch.equal(full.model.embed_tokens.weight, a.model.embed_tokens.weight)


def test_llama3_8b_random_config_has_the_llama3_shapes():
    cfg = model_config("llama3_8b_random")
    hf = __import__("mosaic_exp.models.loader", fromlist=["random_hf_config"]).random_hf_config(cfg, 2)
    assert (hf.hidden_size, hf.intermediate_size, hf.num_key_value_heads, hf.vocab_size) == (4096, 14336, 8, 128256)
    assert hf.num_hidden_layers == 2


def test_time_forward_eager_on_cpu():
    model = build_random_model(model_config("tiny_llama")).eval()
    r = time_forward(model, batch=2, seq=3, device="cpu", cuda_graph=False, warmup=1, reps=3)
    assert r.mode == "eager" and r.reps == 3 and (r.batch, r.seq) == (2, 3)
    assert 0 < r.min_ms <= r.median_ms <= r.max_ms
    assert r.tokens_per_s == pytest.approx(6 / (r.median_ms / 1e3))
    assert r.kernels == {}  # plain nn.Linear: nothing reports a kernel


@pytest.mark.parametrize("kw, msg", [({"batch": 0, "seq": 1}, "batch=0"), ({"batch": 1, "seq": 0}, "seq=0"),
                                     ({"batch": 1, "seq": 1, "reps": 0}, "reps=0"),
                                     ({"batch": 1, "seq": 1, "cuda_graph": True}, "needs a CUDA device")])
def test_time_forward_rejects_bad_arguments(kw, msg):
    model = build_random_model(model_config("tiny_llama"), num_hidden_layers=1)
    kw = {"cuda_graph": False, **kw}
    with pytest.raises(ValueError, match=msg):
        time_forward(model, device="cpu", **kw)


def test_ran_kernels_counts_quantized_modules():
    from mosaic_exp.kernels.quant_linear import QuantLinear
    from mosaic_exp.kernels.testing import random_quantized

    model = build_random_model(model_config("tiny_llama"), num_hidden_layers=1).eval()
    layer = model.model.layers[0]
    for name in ("self_attn.o_proj", "mlp.down_proj"):
        lin = layer.get_submodule(name)
        qw = random_quantized(lin.out_features, lin.in_features, group_size=32, seed=1)
        parent, _, child = name.rpartition(".")
        setattr(layer.get_submodule(parent), child, QuantLinear.from_quantized(qw, variant="reference"))
    r = time_forward(model, batch=1, seq=2, device="cpu", cuda_graph=False, warmup=0, reps=1)
    assert r.kernels == {"reference": 2}
    assert ran_kernels(model) == {"reference": 2}


def test_cpu_half_of_zipperquant_is_refused_for_graph_capture():
    from mosaic_exp.kernels.bitsplit_linear import BitSplitLinear
    from mosaic_exp.quant.zipperquant import zipperquant_quantize

    model = build_random_model(model_config("tiny_llama"), num_hidden_layers=1)
    lin = model.model.layers[0].mlp.down_proj
    bsw, _ = zipperquant_quantize(lin.weight.detach().float(), group_size=32)
    mod = BitSplitLinear(bsw, high_kernel="reference")
    model.model.layers[0].mlp.down_proj = mod
    _check_capturable(model)  # the reference high part runs on x's device: capturable
    mod.high_kernel = "cpu_direct"  # what a CPU high kernel looks like to the check (no module build needed)
    with pytest.raises(ValueError, match=r"model\.layers\.0\.mlp\.down_proj .*cpu_direct"):
        _check_capturable(model)


def test_bench_forward_arguments():
    bench = load_script("bench_forward")
    assert bench.parse_shapes("1x1,16x1,1x2048") == [(1, 1), (16, 1), (1, 2048)]
    for bad in ("1x", "0x1", "a"):
        with pytest.raises(SystemExit, match="--shapes"):
            bench.parse_shapes(bad)
    with pytest.raises(SystemExit, match="unknown model 'nope'"):
        bench.load_model_config("nope")
    with pytest.raises(SystemExit, match="source='gguf_package'"):
        bench.load_model_config("smollm2_135m")
    assert bench.load_model_config("llama3_8b_random").random.intermediate_size == 14336


def test_bench_forward_quantizes_every_decoder_linear():
    """The benchmark's weight path on a tiny model: every decoder linear, its residual at the budget."""
    bench = load_script("bench_forward")
    model = build_random_model(model_config("tiny_llama"), num_hidden_layers=2)
    weights = bench.quantize_linears(model, "llama", budget=0.5, block=32, group_size=32)
    assert len(weights) == 2 * 7
    for name, qw in weights.items():
        lin = model.get_submodule(name)
        assert (qw.out_features, qw.in_features) == (lin.out_features, lin.in_features)
        nb = -(-qw.out_features // 32) * -(-qw.in_features // 32)
        assert qw.res_index.shape[0] == int(0.5 * nb)
        # with h = 1 the kept blocks are those whose quantized residual lowers the weight error: the stored
        # weight is strictly closer to W than its RTN base alone
        W = lin.weight.detach().float()
        assert (W - qw.dequantize()).pow(2).sum() < (W - qw.dequantize_base()).pow(2).sum()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("variant", ["dense", "zipper"])
def test_time_forward_cuda_graph_with_native_kernels(variant):
    from mosaic_exp.kernels.quant_linear import QuantLinear

    require_native_variant(variant)
    bench = load_script("bench_forward")  # its yaml config loader: the device image has no omegaconf
    model = build_random_model(bench.load_model_config("tiny_llama"), device="cuda", num_hidden_layers=2)
    model = model.half().eval()
    weights = bench.quantize_linears(model, "llama", budget=0.5, block=64, group_size=64)
    for name, qw in weights.items():
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child,
                QuantLinear.from_quantized(qw, variant=variant, dtype=torch.float16, device="cuda"))
    ids = torch.randint(0, model.config.vocab_size, (3, 5), device="cuda")
    eager = model(input_ids=ids, use_cache=False).logits
    r = time_forward(model, batch=3, seq=5, device="cuda", cuda_graph=True, warmup=1, reps=3)
    assert r.mode == "cuda-graph" and sum(r.kernels.values()) == len(weights)
    for k in r.kernels:  # "<variant>: <launch plan>", e.g. "zipper: gemv-zipper[mb1,...]"
        name, _, plan = k.partition(": ")
        assert name == variant and plan.startswith(("gemv-", "dense[", "zipper[", "wgmma-")), r.kernels
    assert torch.isfinite(eager).all()
