"""ncu target: the wgmma kernel, dense and zipper (3%), one launch each; K, N, M, BT, WGS, SPLITK from the environment."""
import os
import sys

import torch

sys.path.insert(0, os.getcwd())
from mosaic_exp.kernels import ops
from mosaic_exp.kernels.packing import pack_quantized
from scripts.bench_kernels import random_qw_gpu

k, n = int(os.environ.get("K", "4096")), int(os.environ.get("N", "4096"))
m = int(os.environ.get("M", "4096"))
tile = (int(os.environ.get("BT", "128")), int(os.environ.get("WGS", "4")), int(os.environ.get("SPLITK", "1")))
p0 = pack_quantized(random_qw_gpu(n, k, 0.0, seed=7), torch.bfloat16, "cuda")
p3 = pack_quantized(random_qw_gpu(n, k, 0.03, seed=37), torch.bfloat16, "cuda")
x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
torch.cuda.synchronize()
ops.launch(x, p0, "dense", path="wgmma", wgmma=tile); print(ops.LAST_LAUNCH["kernels"])
ops.launch(x, p3, "zipper", path="wgmma", wgmma=tile); print(ops.LAST_LAUNCH["kernels"])
torch.cuda.synchronize()
