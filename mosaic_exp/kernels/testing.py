"""Random QuantizedWeights for kernel tests and benchmarks (fresh data, residual blocks on edges)."""

from __future__ import annotations

import math

import torch

from mosaic_exp.formats import QuantizedWeight
from mosaic_exp.quant.quantizer import num_groups, pack_int4


def random_quantized(n: int, k: int, group_size: int = 128, symmetric: bool = False, budget: float = 0.0,
                     block_shape: tuple[int, int] = (128, 128), per_block_scale: bool = False,
                     device="cpu", seed: int | None = None, scale_dtype=torch.float16) -> QuantizedWeight:
    """Uniform random codes / scales / zeros; ``budget`` = fraction of residual blocks kept
    (the last block row and column are always included when budget > 0, so edges are hit)."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(torch.randint(0, 2**31 - 1, (1,)).item()) if seed is None else seed)
    g = num_groups(k, group_size)
    codes = torch.randint(0, 16, (n, k), generator=gen, dtype=torch.uint8)
    scales = (torch.rand(n, g, generator=gen) * 0.02 + 0.005).to(scale_dtype)
    if symmetric:
        zeros = torch.full((n, g), 8.0)
    else:
        zeros = torch.randint(0, 16, (n, g), generator=gen).float()
    zeros = zeros.to(scale_dtype)
    bh, bw = block_shape
    gr, gc = math.ceil(n / bh), math.ceil(k / bw)
    total = gr * gc
    nb = min(total, round(budget * total))
    if budget > 0 and nb == 0:
        nb = 1
    if nb:
        perm = torch.randperm(total, generator=gen)
        chosen = set(perm[:nb].tolist())
        edge = [(gr - 1) * gc + (gc - 1), (gr - 1) * gc, gc - 1]  # corner, last row, last col
        for e in edge:
            if len(chosen) >= nb:
                break
            if e not in chosen:
                chosen.pop()
                chosen.add(e)
        chosen.update(edge[:1])  # the bottom-right corner block is always present
        lin = torch.tensor(sorted(chosen))[:max(nb, 1)]
        if (gr - 1) * gc + (gc - 1) not in lin.tolist():
            lin[-1] = (gr - 1) * gc + (gc - 1)
        lin = torch.unique(lin)
        idx = torch.stack((lin // gc, lin % gc), dim=1).to(torch.int32)
        b = idx.shape[0]
        rcodes = torch.randint(0, 16, (b, bh, bw), generator=gen, dtype=torch.uint8)
        rs_shape = (b, 1) if per_block_scale else (b, bh)
        rscales = (torch.rand(*rs_shape, generator=gen) * 0.004 + 0.001).to(scale_dtype)
        res = {"res_index": idx, "res_qweight": pack_int4(rcodes), "res_scales": rscales}
    else:
        res = {}
    qw = QuantizedWeight(out_features=n, in_features=k, bits=4, group_size=group_size, symmetric=symmetric,
                         base_qweight=pack_int4(codes), base_scales=scales, base_zeros=zeros,
                         block_shape=block_shape, **res)
    return qw.to(device) if str(device) != "cpu" else qw
