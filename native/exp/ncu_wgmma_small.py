"""ncu target: the wgmma kernel at small M with a forced tile and split; K, N, M, BT, WGS, SPLITK, VARIANT
(dense / zipper at 3 %) from the environment."""
import os
import sys

import torch

sys.path.insert(0, os.getcwd())
from mosaic_exp.kernels import ops
from mosaic_exp.kernels.packing import pack_quantized
from scripts.bench_kernels import random_qw_gpu

k, n, m = int(os.environ.get("K", "4096")), int(os.environ.get("N", "4096")), int(os.environ.get("M", "1"))
tile = tuple(int(os.environ.get(v, d)) for v, d in (("BT", "64"), ("WGS", "2"), ("SPLITK", "4")))
variant = os.environ.get("VARIANT", "dense")
p0 = pack_quantized(random_qw_gpu(n, k, 0.03 if variant == "zipper" else 0.0, seed=7), torch.bfloat16, "cuda")
x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
for _ in range(3):
    ops.launch(x, p0, variant, path="wgmma", wgmma=tile)
torch.cuda.synchronize()
print(ops.LAST_LAUNCH["kernels"])
