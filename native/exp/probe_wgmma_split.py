import sys, dataclasses, torch
sys.path.insert(0, "."); sys.path.insert(0, "scripts")
import bench_kernels as bk
from mosaic_exp.kernels import ops
from mosaic_exp.kernels.packing import pack_quantized
for name, k, n in bk.SHAPES["llama3"][:2]:
    p = pack_quantized(bk.random_qw_gpu(n, k, 0.0, seed=7), torch.bfloat16, "cuda")
    ps = [p] + [dataclasses.replace(p, **{kk: vv.clone() for kk, vv in p.tensors().items()}) for _ in range(bk.copies_for(p.nbytes()) - 1)]
    for m in (1, 64):
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16); y = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
        for tl in ((64, 2, 1), (64, 2, 2), (64, 2, 4), (64, 2, 8), (128, 2, 1), (64, 4, 1), (64, 4, 4)):
            t = bk.time_graph([lambda p=p_, tl=tl: ops.launch(x, p, "dense", out=y, path="wgmma", wgmma=tl) for p_ in ps])
            print(f"{name} M={m} {tl}: {t*1e6:.1f} us  {ops.LAST_LAUNCH['kernels'][0]}", flush=True)
