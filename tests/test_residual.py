"""Residual blocks: partition, Q(R), scores against direct computations, selection, end to end."""

import math

import pytest
import torch

from mosaic_exp.quant.gptq import GPTQ
from mosaic_exp.quant.mosaic import finalize, mosaic_candidates, mosaic_quantize
from mosaic_exp.quant.rtn import rtn_dequantize, rtn_quantize
from mosaic_exp.residual.blocks import (
    block_numel,
    expand_mask,
    from_blocks,
    grid_shape,
    resolve_block_shape,
    to_blocks,
)
from mosaic_exp.residual.quantize import quantize_residual
from mosaic_exp.residual.scores import SELECTORS, delta_hessian, output_exact, score_blocks
from mosaic_exp.residual.select import allocate_counts, budget_count, topk_global, topk_per_layer


def gen(seed):
    return torch.Generator().manual_seed(seed)


def layer(seed, n=40, k=50, tokens=300):
    """W [n, k], correlated X [tokens, k], H = 2 X^T X / T (float64), R of the RTN base."""
    g = gen(seed)
    X = torch.randn(tokens, k, generator=g, dtype=torch.float64) @ (
        torch.eye(k, dtype=torch.float64) + 0.3 * torch.randn(k, k, generator=g, dtype=torch.float64))
    W = torch.randn(n, k, generator=g, dtype=torch.float64)
    H = 2 * X.T @ X / tokens
    Q = rtn_dequantize(*rtn_quantize(W, 4, 16, True), 16).double()
    return W, X, H, W - Q


# ---------------------------------------------------------------- blocks
@pytest.mark.parametrize("shape,bs", [((40, 50), (16, 16)), ((33, 7), (8, 3)), ((16, 32), (16, 32)),
                                      ((5, 9), (-1, 1)), ((10, 10), 4)])
def test_blocks_roundtrip(shape, bs):
    M = torch.randn(*shape, generator=gen(1))
    bh, bw = resolve_block_shape(bs, shape)
    B = to_blocks(M, bs)
    nbr, nbc = grid_shape(shape, bs)
    assert B.shape == (nbr, nbc, bh, bw) and (nbr, nbc) == (math.ceil(shape[0] / bh), math.ceil(shape[1] / bw))
    assert torch.equal(from_blocks(B, shape), M)
    for r in range(nbr):  # block (r, c) covers rows r*bh.., cols c*bw.. (zero padded)
        for c in range(nbc):
            ref = M[r * bh:(r + 1) * bh, c * bw:(c + 1) * bw]
            assert torch.equal(B[r, c, :ref.shape[0], :ref.shape[1]], ref)
            pad = B[r, c].clone()
            pad[:ref.shape[0], :ref.shape[1]] = 0
            assert (pad == 0).all()
    assert int(block_numel(shape, bs).sum()) == shape[0] * shape[1]
    mask = torch.rand(nbr, nbc, generator=gen(2)) > 0.5
    em = expand_mask(mask, shape, bs)
    assert em.shape == shape
    assert torch.equal(em, from_blocks(mask[:, :, None, None].expand(nbr, nbc, bh, bw), shape))


# ---------------------------------------------------------------- Q(R)
@pytest.mark.parametrize("granularity", ["row", "block"])
@pytest.mark.parametrize("shape,bs", [((40, 50), (16, 16)), ((37, 45), (8, 32))])
def test_quantize_residual(granularity, shape, bs):
    R = torch.randn(*shape, generator=gen(3)) * 0.01
    codes, scales, QR = quantize_residual(R, bs, granularity)
    nbr, nbc = grid_shape(shape, bs)
    bh, bw = bs
    assert codes.dtype == torch.uint8 and codes.shape == (nbr, nbc, bh, bw) and int(codes.max()) <= 15
    assert scales.shape == (nbr, nbc, bh if granularity == "row" else 1)
    Rb = to_blocks(R, bs)
    deq = (codes.float() - 8) * scales.unsqueeze(-1)
    assert torch.equal(from_blocks(deq, shape), QR)
    # symmetric absmax/7 scale: |R - QR| <= s/2 (1e-6 relative slack for float32 division)
    assert ((Rb - deq).abs() <= scales.unsqueeze(-1) / 2 * (1 + 1e-6)).all()
    amax = Rb.abs().amax(-1) if granularity == "row" else Rb.abs().amax((-1, -2))[..., None]
    real = amax > 0
    assert torch.allclose(scales[real], amax[real] / 7)
    valid = to_blocks(torch.ones(shape, dtype=torch.bool), bs)
    assert (codes[~valid] == 8).all()  # padding holds value 0


# ---------------------------------------------------------------- scores
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("bs", [(8, 8), (16, 7), (40, 1)])
def test_delta_hessian_matches_loop(seed, bs):
    _W, _X, H, R = layer(seed)
    h = torch.diagonal(H).clone()
    _, _, QR = quantize_residual(R, bs, "row")
    QR = QR.double()
    S = delta_hessian(R, QR, h, bs)
    bh, bw = bs
    n, k = R.shape
    for r in range(math.ceil(n / bh)):
        for c in range(math.ceil(k / bw)):
            before = after = 0.0
            for i in range(r * bh, min((r + 1) * bh, n)):
                for j in range(c * bw, min((c + 1) * bw, k)):
                    before += float(h[j]) * float(R[i, j]) ** 2
                    after += float(h[j]) * float(R[i, j] - QR[i, j]) ** 2
            # float32 block sums of ~bh*bw terms: relative error ~1e-6
            assert float(S[r, c]) == pytest.approx(max(before - after, 0.0), rel=1e-5, abs=1e-6 * before)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("bs", [(8, 8), (16, 7), (40, 5)])
def test_output_exact_equals_measured_reduction(seed, bs):
    _W, X, H, R = layer(seed)
    _, _, QR = quantize_residual(R, bs, "row")
    QR = QR.double()
    S = output_exact(R, QR, H, bs)  # float64 in -> float64 math, float32 out
    bh, bw = bs
    T = X.shape[0]
    base = float((X @ R.T).pow(2).sum())
    n_neg = 0
    for r in range(S.shape[0]):
        for c in range(S.shape[1]):
            E = torch.zeros_like(R)
            E[r * bh:(r + 1) * bh, c * bw:(c + 1) * bw] = QR[r * bh:(r + 1) * bh, c * bw:(c + 1) * bw]
            measured = (2 / T) * (base - float((X @ (R - E).T).pow(2).sum()))
            brute = float(torch.trace(R @ H @ R.T) - torch.trace((R - E) @ H @ (R - E).T))
            assert measured == pytest.approx(brute, rel=1e-9, abs=1e-9 * base / T)
            # float32 output of a float64 computation: 1e-6 relative of the block's magnitude
            assert float(S[r, c]) == pytest.approx(measured, rel=1e-5, abs=1e-5 * abs(brute) + 1e-4)
            n_neg += measured < 0
    # float32 inputs give the same scores to float32 accuracy
    S32 = output_exact(R.float(), QR.float(), H.float(), bs)
    assert torch.allclose(S32, S, rtol=1e-3, atol=1e-3 * float(S.abs().max()))


def test_selectors_registry_and_shapes():
    W, _X, H, R = layer(3)
    h = torch.diagonal(H)
    _, _, QR = quantize_residual(R, (8, 8), "row")
    assert set(SELECTORS) == {"delta_hessian", "magnitude", "residual_norm", "output_exact", "channel",
                              "random", "none"}
    for name in SELECTORS:
        S = score_blocks(name, R=R, QR=QR.double(), block_shape=(8, 8), W=W, h=h, H=H, seed=5)
        assert S.shape == ((1, 50) if name == "channel" else (5, 7)), name
    with pytest.raises(ValueError, match="unknown residual selector"):
        score_blocks("hessian_trace", R=R, QR=QR, block_shape=(8, 8))
    with pytest.raises(ValueError, match="needs h"):
        score_blocks("delta_hessian", R=R, QR=QR, block_shape=(8, 8))
    r1 = score_blocks("random", R=R, block_shape=(8, 8), seed=5)
    assert torch.equal(r1, score_blocks("random", R=R, block_shape=(8, 8), seed=5))
    assert not torch.equal(r1, score_blocks("random", R=R, block_shape=(8, 8), seed=6))
    assert (r1 > 0).all()
    _, _, QRc = quantize_residual(R, (40, 1), "block")
    assert torch.allclose(score_blocks("channel", R=R, QR=QRc, block_shape=None, h=h),
                          delta_hessian(R, QRc, h, (40, 1)))
    mag = score_blocks("magnitude", R=R, block_shape=(8, 8), W=W)
    assert float(mag[1, 2]) == pytest.approx(float(W[8:16, 16:24].norm()), rel=1e-6)
    assert (score_blocks("none", R=R, block_shape=(8, 8)) == float("-inf")).all()


# ---------------------------------------------------------------- selection
@pytest.mark.parametrize("nb", [(7, 9), (1, 10), (3, 3)])
@pytest.mark.parametrize("budget", [0.0, 0.1, 0.29, 0.5, 1 / 3, 1.0])
def test_topk_per_layer_exact_budget(nb, budget):
    S = torch.rand(*nb, generator=gen(4)) + 0.01
    m = topk_per_layer(S, budget)
    k = math.floor(budget * S.numel() + 1e-9)
    assert int(m.sum()) == k == budget_count(budget, S.numel())
    if 0 < k < S.numel():
        assert S[m].min() > S[~m].max()


@pytest.mark.parametrize("budget", [0.0, 0.03, 0.1, 0.29, 0.5, 1 / 3, 1.0])
def test_allocate_counts_is_model_exact_and_within_one_block_of_each_share(budget):
    g = gen(9)
    blocks = {f"l{i}": int(n) for i, n in enumerate(torch.randint(1, 70, (40,), generator=g))}
    blocks["empty"] = 0
    counts = allocate_counts(blocks, budget)
    assert list(counts) == list(blocks)
    assert sum(counts.values()) == budget_count(budget, sum(blocks.values()))
    for n, k in counts.items():
        assert math.floor(budget * blocks[n] + 1e-9) <= k <= math.ceil(budget * blocks[n] - 1e-9) or k == 0 == blocks[n]
        assert 0 <= k <= blocks[n]
    # SmolLM2 at 3 %, 128x128 blocks: per-layer floor keeps 1.2 % of the blocks, largest remainder 3 %
    smol = {f"{i}.{n}": b for i in range(30) for n, b in
            [("q", 25), ("k", 10), ("v", 10), ("o", 25), ("gate", 60), ("up", 60), ("down", 60)]}
    floor = sum(budget_count(0.03, b) for b in smol.values())
    assert floor == 90 and sum(allocate_counts(smol, 0.03).values()) == 225
    # remainders 0.8 (gate/up/down) before 0.75 (q/o); ties in dict order
    c = allocate_counts({"a": 25, "b": 60, "c": 25}, 0.03)
    assert c == {"a": 1, "b": 2, "c": 0}
    S = torch.rand(4, 5, generator=g) + 0.01
    assert int(topk_per_layer(S, 0.0, k=3).sum()) == 3
    with pytest.raises(ValueError, match="k=21"):
        topk_per_layer(S, 0.1, k=21)


def test_topk_ties_nonpositive_and_validation():
    S = torch.ones(3, 4)
    m = topk_per_layer(S, 0.5)  # ties -> first 6 blocks in row-major order
    assert m.reshape(-1).tolist() == [True] * 6 + [False] * 6
    S = torch.tensor([[3.0, 0.0, -1.0], [0.0, 2.0, float("-inf")]])
    assert int(topk_per_layer(S, 1.0).sum()) == 2  # only the positive blocks
    assert topk_per_layer(S, 1.0).tolist() == [[True, False, False], [False, True, False]]
    m = topk_per_layer(S, 1.0, allow_nonpositive=True)
    assert int(m.sum()) == 5 and not m[1, 2]  # -inf never
    assert topk_per_layer(S, 0.5, allow_nonpositive=True).tolist() == [[True, True, False], [False, True, False]]
    for bad in (-0.1, 1.01, float("nan")):
        with pytest.raises(ValueError):
            topk_per_layer(S, bad)


def test_topk_global():
    g = gen(5)
    scores = {"a": torch.rand(4, 4, generator=g) + 0.01, "b": torch.rand(2, 6, generator=g) * 3 + 0.01,
              "c": torch.rand(1, 3, generator=g) + 0.01}
    total = 16 + 12 + 3
    for budget in (0.0, 0.1, 0.25, 0.6, 1.0):
        masks = topk_global(scores, budget)
        k = math.floor(budget * total + 1e-9)
        assert sum(int(m.sum()) for m in masks.values()) == k
        chosen = torch.cat([scores[n][masks[n]] for n in scores])
        rest = torch.cat([scores[n][~masks[n]] for n in scores])
        if 0 < k < total:
            assert chosen.min() > rest.max()
    # per-layer costs: capacity in element units, ranking by score per element
    w = {"a": 64.0, "b": 256.0, "c": 64.0}
    masks = topk_global(scores, 0.3, weights_per_block=w)
    cap = math.floor(0.3 * (16 * 64 + 12 * 256 + 3 * 64))
    used = sum(int(masks[n].sum()) * w[n] for n in scores)
    assert 0 < used <= cap
    dens = torch.cat([scores[n].reshape(-1) / w[n] for n in scores])
    sel = torch.cat([masks[n].reshape(-1) for n in scores])
    assert dens[sel].min() >= dens[~sel].max() or used + 64 > cap


# ---------------------------------------------------------------- end to end
@pytest.mark.parametrize("selector", ["delta_hessian", "output_exact", "magnitude", "residual_norm", "random"])
@pytest.mark.parametrize("granularity", ["row", "block"])
def test_mosaic_quantize_rtn(selector, granularity):
    W, _X, H, _ = layer(6, n=44, k=72)
    W, H = W.float(), H.float()
    qw, info = mosaic_quantize(W, base="rtn", H=H, bits=4, group_size=32, symmetric=True, budget=0.25,
                               block_shape=(16, 16), selector=selector, granularity=granularity, seed=1)
    nb = math.ceil(44 / 16) * math.ceil(72 / 16)
    assert info["num_blocks"] == nb and info["chosen"] == qw.num_residual_blocks <= math.floor(0.25 * nb)
    if selector in ("magnitude", "residual_norm", "random", "delta_hessian"):
        assert info["chosen"] == math.floor(0.25 * nb)
    # W_q = Q(W) + M_S * Q(R), rebuilt independently
    Q = rtn_dequantize(*rtn_quantize(W, 4, 32, True), 32)
    _, _, QR = quantize_residual(W - Q, (16, 16), granularity)
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[qw.res_index[:, 0].long(), qw.res_index[:, 1].long()] = True
    assert torch.allclose(qw.dequantize(), Q + expand_mask(mask, (44, 72), (16, 16)) * QR, atol=1e-6)
    assert info["weight_err_final"] < info["weight_err_base"]
    if selector in ("delta_hessian", "output_exact"):
        assert info["proxy_err_final"] < info["proxy_err_base"]
        assert info["output_err_final"] < info["output_err_base"]


def test_budget_monotone_and_zero_budget():
    W, _X, H, _ = layer(7, n=48, k=64)
    W, H = W.float(), H.float()
    errs = []
    for budget in (0.0, 0.2, 0.5, 1.0):
        qw, info = mosaic_quantize(W, base="rtn", H=H, group_size=-1, budget=budget, block_shape=(16, 16),
                                   selector="output_exact")
        errs.append(info["output_err_final"])
        if budget == 0.0:
            assert qw.num_residual_blocks == 0
            assert torch.equal(qw.dequantize(), rtn_dequantize(*rtn_quantize(W, 4, -1, True), -1))
    # output_exact picks blocks with positive marginal gain; gains of different blocks interact
    # only through cross terms, so the first few steps must each lower the error on this data
    assert errs[0] > errs[1] > errs[2]


def test_gptq_base_candidates_finalize_and_channel():
    W, X, _H, _ = layer(8, n=32, k=96, tokens=400)
    W, X = W.float(), X.float()
    gq = GPTQ(W)
    gq.add_batch(X)
    cand = mosaic_candidates(W, base="gptq", gptq=gq, group_size=32, block_shape=(16, 32),
                             selector="delta_hessian")
    assert cand.stats["gptq"]["fallback"] is None
    c2 = cand.cpu()
    mask = topk_per_layer(c2.scores, 0.5)
    qw = finalize(c2, mask)
    qw2, info = mosaic_quantize(W, base="gptq", gptq=gq, group_size=32, budget=0.5, block_shape=(16, 32))
    assert torch.equal(qw.res_index, qw2.res_index) and torch.equal(qw.dequantize(), qw2.dequantize())
    assert info["output_err_base"] == pytest.approx(cand.output_base)
    # channel selector: whole input columns, one scale per column
    qwc, infoc = mosaic_quantize(W, base="rtn", h=gq.h_diag, bits=4, group_size=32, budget=0.1,
                                 block_shape=(16, 16), selector="channel", granularity="row")
    assert qwc.block_shape == (32, 1) and infoc["granularity"] == "block"
    assert qwc.num_residual_blocks == math.floor(0.1 * 96) and qwc.res_scales.shape[1] == 1
    with pytest.raises(ValueError):
        mosaic_quantize(W, base="gptq", budget=0.1)
    with pytest.raises(ValueError):
        mosaic_quantize(W, base="rtn", h=gq.h_diag, budget=0.1, selector="nope")


# ---------------------------------------------------------------- GPTQ with the residual in the loop
@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_in_loop_residual(act_order):
    W, X, H, _ = layer(9, n=48, k=96, tokens=500)
    W, X, H = W.float(), X.float(), H.float()
    gq = GPTQ(W)
    gq.add_batch(X)
    opts = {"act_order": act_order}
    plain = gq.quantize(4, 32, True, act_order=act_order)
    # an all-False mask is plain GPTQ, bit for bit
    none = gq.quantize(4, 32, True, act_order=act_order, residual_mask=torch.zeros(48, 96, dtype=torch.bool),
                       residual_scales=torch.ones(48, 96))
    assert torch.equal(none.codes, plain.codes) and torch.equal(none.dequantized, plain.dequantized)
    assert (none.residual_codes == 8).all()
    cand = mosaic_candidates(W, base="gptq", gptq=gq, group_size=32, block_shape=(16, 32),
                             gptq_options=opts, gptq_residual="in_loop")
    assert cand.in_loop and cand.W_hat is not None
    # the in-loop proxy is GPTQ's own loss: sum h R~^2 with h = 1/U_jj^2 equals 2 * gptq_loss
    assert cand.proxy_base == pytest.approx(2 * cand.stats["gptq"]["gptq_loss"], rel=1e-4)
    qw, info = mosaic_quantize(W, base="gptq", gptq=gq, group_size=32, budget=0.25, block_shape=(16, 32),
                               gptq_options=opts, gptq_residual="in_loop")
    assert qw.num_residual_blocks == math.floor(0.25 * 3 * 3)
    # the stored weight is what the second GPTQ pass computed with (same float ops)
    mask = torch.zeros(3, 3, dtype=torch.bool)
    mask[qw.res_index[:, 0].long(), qw.res_index[:, 1].long()] = True
    rs = cand.residual_scales
    again = gq.quantize(4, 32, True, act_order=act_order, residual_mask=expand_mask(mask, (48, 96), (16, 32)),
                        residual_scales=from_blocks(rs.unsqueeze(-1).expand(3, 3, 16, 32), (48, 96)))
    assert torch.allclose(qw.dequantize(), again.dequantized, rtol=0, atol=1e-6)
    # keeping 25% of the blocks with the residual in the loop lowers the true output error
    # (post mode on this correlated data makes it worse, see docs/method.md)
    assert info["output_err_final"] < 0.9 * info["output_err_base"]
    Wq = qw.dequantize()
    assert info["output_err_final"] == pytest.approx(float(((W - Wq) @ H * (W - Wq)).sum()), rel=1e-4)
    with pytest.raises(ValueError):
        finalize(cand, mask)  # needs the GPTQ object
    with pytest.raises(ValueError):
        mosaic_candidates(W, base="gptq", gptq=gq, selector="output_exact", gptq_residual="in_loop")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    """The whole layer path runs on CUDA tensors and agrees with the CPU run (codes may differ where
    a value sits on a rounding boundary, so compare errors, 2% relative)."""
    W, X, _H, _ = layer(10, n=64, k=200, tokens=600)
    W, X = W.float(), X.float()
    out = {}
    for dev in ("cpu", "cuda"):
        gq = GPTQ(W.to(dev))
        gq.add_batch(X.to(dev))
        for base, mode, sel in (("rtn", "post", "output_exact"), ("gptq", "post", "delta_hessian"),
                                ("gptq", "in_loop", "delta_hessian"), ("rtn", "post", "random")):
            qw, info = mosaic_quantize(W.to(dev), base=base, gptq=gq, group_size=128, budget=0.3,
                                       block_shape=(16, 32), selector=sel, gptq_residual=mode)
            assert qw.base_qweight.device.type == dev and qw.res_scales.device.type == dev
            out[dev, base, mode, sel] = info
    for key in {k[1:] for k in out}:
        a, b = out[("cpu", *key)], out[("cuda", *key)]
        assert b["output_err_final"] == pytest.approx(a["output_err_final"], rel=2e-2), key
        assert b["chosen"] == a["chosen"]
    assert out["cuda", "gptq", "in_loop", "delta_hessian"]["output_err_final"] < \
        out["cuda", "gptq", "in_loop", "delta_hessian"]["output_err_base"]


def test_global_in_loop_equals_per_layer_finalize_for_the_same_masks():
    """finalize_global's stacked in-loop pass gives each linear exactly what finalize(gptq=...) gives
    for the mask the global ranking chose."""
    from mosaic_exp.runner.layer_quant import finalize_global

    g = torch.Generator().manual_seed(5)
    X = torch.randn(512, 64, generator=g) @ (torch.eye(64) + 0.3 * torch.randn(64, 64, generator=g))
    Ws = {"a": torch.randn(48, 64, generator=g) * 0.05, "b": torch.randn(32, 64, generator=g) * 0.05}
    shared = GPTQ(Ws["a"])
    shared.add_batch(X)
    kw = dict(base="gptq", group_size=32, block_shape=(16, 16), gptq_residual="in_loop")
    cands = {n: mosaic_candidates(W, gptq=shared, **kw) for n, W in Ws.items()}
    ref = GPTQ(Ws["a"])
    ref.add_batch(X)
    finals = finalize_global(cands, 0.3, gptqs={n: shared for n in Ws})
    kept = 0
    for n, (qw, info) in finals.items():
        mask = torch.zeros(qw.grid_shape, dtype=torch.bool)
        mask[qw.res_index[:, 0].long(), qw.res_index[:, 1].long()] = True
        kept += int(mask.sum())
        expect = finalize(cands[n], mask, scale_dtype=torch.float16, gptq=ref)
        assert torch.equal(qw.dequantize(), expect.dequantize()), n
        assert info["chosen"] == int(mask.sum())
    assert kept == int(0.3 * sum(c.num_blocks for c in cands.values()))
    assert shared.H is None  # freed after the pass


def test_in_loop_candidates_own_their_weight():
    """Regression: the runner overwrites a linear's float32 weight with its base right after the candidates
    are built; the deferred in-loop pass of a global budget must still quantize the original weight."""
    g = torch.Generator().manual_seed(6)
    X = torch.randn(256, 32, generator=g)
    W = torch.randn(24, 32, generator=g) * 0.05
    gq = GPTQ(W)
    gq.add_batch(X)
    kw = dict(base="gptq", gptq=gq, group_size=16, block_shape=(8, 8), gptq_residual="in_loop")
    ref = mosaic_candidates(W.clone(), **kw)
    live = mosaic_candidates(W, **kw)
    W.zero_()  # what copy_(base) does to the module weight
    mask = topk_per_layer(ref.scores, 0.5)
    assert torch.equal(finalize(live, mask, gptq=gq).dequantize(), finalize(ref, mask, gptq=gq).dequantize())


def test_global_relative_rank_ignores_each_layers_error_scale():
    """rank='relative': scaling one layer's Hessian (its activations) by 100 changes nothing; the
    absolute ranking moves blocks to the scaled layer."""
    from mosaic_exp.runner.layer_quant import finalize_global

    g = torch.Generator().manual_seed(8)
    Ws = {"a": torch.randn(64, 64, generator=g) * 0.05, "b": torch.randn(64, 64, generator=g) * 0.05}
    hs = {n: torch.rand(64, generator=g) + 0.1 for n in Ws}

    def chosen(scale_b: float, rank: str) -> dict:
        cands = {n: mosaic_candidates(W, base="rtn", h=hs[n] * (scale_b if n == "b" else 1.0), group_size=32,
                                      block_shape=(16, 16)) for n, W in Ws.items()}
        finals = finalize_global(cands, 0.25, rank=rank)
        return {n: qw.res_index.tolist() for n, (qw, _) in finals.items()}

    assert chosen(1.0, "relative") == chosen(100.0, "relative")
    base, scaled = chosen(1.0, "absolute"), chosen(100.0, "absolute")
    assert len(scaled["b"]) > len(base["b"]) and len(scaled["a"]) == 0
