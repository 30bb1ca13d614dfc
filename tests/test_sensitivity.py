"""Loss sensitivity of the decoder linears (residual.sensitivity=fisher) and row-weighted scores."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from mosaic_exp.config import ConfigError, ResidualConfig
from mosaic_exp.models.adapters import get_adapter
from mosaic_exp.residual.quantize import quantize_residual
from mosaic_exp.residual.scores import delta_hessian, output_exact, score_blocks
from mosaic_exp.residual.sensitivity import output_fisher
from tests.test_residual import layer


def tiny_llama(seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def test_output_fisher_equals_per_window_autograd():
    """F_i = mean over windows of sum_t (dL_w/dy_ti)^2, checked window by window with retain_grad;
    batching windows (batch_size=2, an odd count) must not mix their gradients."""
    model = tiny_llama()
    adapter = get_adapter("llama")
    ids = torch.randint(0, 97, (3, 17), generator=torch.Generator().manual_seed(1))
    got = output_fisher(model, adapter, ids, "cpu", batch_size=2)
    assert all(p.grad is None and p.requires_grad for p in model.parameters())  # untouched, flags restored
    names = [f"model.layers.{i}.{n}" for i, lay in enumerate(adapter.decoder_layers(model))
             for n in adapter.linears(lay)]
    assert sorted(got) == sorted(names)
    want = {n: 0.0 for n in names}
    for w in range(ids.shape[0]):
        outs = {}
        hooks = []
        for i, lay in enumerate(adapter.decoder_layers(model)):
            for n, mod in adapter.linears(lay).items():
                def keep(_m, _a, out, key=f"model.layers.{i}.{n}"):
                    out.retain_grad()
                    outs[key] = out
                hooks.append(mod.register_forward_hook(keep))
        emb = model.get_input_embeddings()(ids[w:w + 1]).detach().requires_grad_(True)
        logits = model(inputs_embeds=emb).logits[0, :-1]
        torch.nn.functional.cross_entropy(logits, ids[w, 1:]).backward()
        for h in hooks:
            h.remove()
        for k, out in outs.items():
            want[k] = want[k] + out.grad[0].pow(2).sum(dim=0) / ids.shape[0]
    for k in names:
        # same float32 graph, summed in a different order: 1e-5 relative
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-12)
        assert got[k].shape == (adapter.linears(adapter.decoder_layers(model)[0])[k.split(".", 3)[3]].out_features,)
    with pytest.raises(ValueError, match="windows=0"):
        output_fisher(model, adapter, ids, "cpu", windows=0)


@pytest.mark.parametrize("bs", [(8, 8), (16, 7), (40, 1)])
def test_row_weighted_delta_hessian_matches_loop(bs):
    _W, _X, H, R = layer(3)
    h = torch.diagonal(H).clone()
    f = torch.rand(R.shape[0], generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 3
    _, _, QR = quantize_residual(R, bs, "row")
    QR = QR.double()
    S = delta_hessian(R, QR, h, bs, row_weight=f)
    bh, bw = bs
    for r in range(S.shape[0]):
        for c in range(S.shape[1]):
            rows, cols = slice(r * bh, (r + 1) * bh), slice(c * bw, (c + 1) * bw)
            t = f[rows].view(-1, 1) * h[cols].view(1, -1) * (R[rows, cols] ** 2 - (R - QR)[rows, cols] ** 2)
            assert float(S[r, c]) == pytest.approx(max(float(t.sum()), 0.0), rel=1e-5,
                                                   abs=1e-6 * float((f.view(-1, 1) * h * R * R).sum()))
    # unit weights are the paper's score; a constant weight scales it
    torch.testing.assert_close(delta_hessian(R, QR, h, bs, row_weight=torch.ones(R.shape[0])),
                               delta_hessian(R, QR, h, bs))
    torch.testing.assert_close(score_blocks("channel", R=R, QR=QR, block_shape=bs, h=h, row_weight=2 * f),
                               2 * score_blocks("channel", R=R, QR=QR, block_shape=bs, h=h, row_weight=f))


@pytest.mark.parametrize("bs", [(8, 8), (16, 7), (40, 5)])
def test_row_weighted_output_exact_equals_weighted_measured_reduction(bs):
    """sum_i f_i (2/T)(||X r_i||^2 - ||X (r_i - e_i)||^2) measured directly, block by block."""
    _W, X, H, R = layer(5)
    f = torch.rand(R.shape[0], generator=torch.Generator().manual_seed(6), dtype=torch.float64) + 0.1
    _, _, QR = quantize_residual(R, bs, "row")
    QR = QR.double()
    S = output_exact(R, QR, H, bs, row_weight=f)
    bh, bw = bs
    T = X.shape[0]
    for r in range(S.shape[0]):
        for c in range(S.shape[1]):
            E = torch.zeros_like(R)
            E[r * bh:(r + 1) * bh, c * bw:(c + 1) * bw] = QR[r * bh:(r + 1) * bh, c * bw:(c + 1) * bw]
            per_row = (X @ R.T).pow(2).sum(0) - (X @ (R - E).T).pow(2).sum(0)
            measured = float((f * per_row).sum()) * 2 / T
            scale = float((f * (X @ R.T).pow(2).sum(0)).sum()) * 2 / T
            # float32 output of a float64 computation
            assert float(S[r, c]) == pytest.approx(measured, rel=1e-5, abs=1e-6 * scale)
    torch.testing.assert_close(output_exact(R, QR, H, bs, row_weight=torch.ones(R.shape[0])),
                               output_exact(R, QR, H, bs))


def test_row_weight_validation():
    _W, _X, H, R = layer(0)
    _, _, QR = quantize_residual(R, (8, 8), "row")
    with pytest.raises(ValueError, match="row_weight has 3 entries for a residual with 40 rows"):
        delta_hessian(R, QR, torch.diagonal(H), (8, 8), row_weight=torch.ones(3))
    with pytest.raises(ValueError, match="selector 'magnitude' does not take row weights"):
        score_blocks("magnitude", R=R, W=R, block_shape=(8, 8), row_weight=torch.ones(40))
    with pytest.raises(ConfigError, match="residual.selector='random' is not one"):
        ResidualConfig(selector="random", sensitivity="fisher")
    with pytest.raises(ConfigError, match="residual.sensitivity='hessian'"):
        ResidualConfig(sensitivity="hessian")
    with pytest.raises(ConfigError, match="residual.sensitivity_windows=0"):
        ResidualConfig(sensitivity="fisher", sensitivity_windows=0)
    assert ResidualConfig(selector="none", sensitivity="fisher").selector == "none"  # nothing to weight: allowed
    assert score_blocks("none", R=R, block_shape=(8, 8), row_weight=torch.ones(40)).isinf().all()
    assert math.isfinite(float(ResidualConfig(sensitivity="fisher").budget))
