"""Output fingerprints of the split-K launches (device), for comparing kernel builds bit for bit (NOTES.md v18).

NOTES v18's compact cluster fix-up and v28's cluster fix-up of the large tiles must give bit-identical sums (same
slots, same split order). Run this once per build and diff the files: every line is one launch (path, plan, M,
mode, dtype) and the SHA-256 of its output, on fixed weights and inputs.
  python3 native/exp/fixup_outputs.py > $OUT/fixup_A.txt     (per variant, e.g. from native/exp/probe_variants.sh)
  diff <(grep -v '^#' $OUT/fixup_A.txt) <(grep -v '^#' $OUT/fixup_B.txt) && echo bit-identical
(the '#' header names the build, compact flag included, so it differs between variants by design)
"""
import hashlib
import os
import sys

import torch

sys.path.insert(0, os.getcwd())
from mosaic_exp.kernels import ops
from mosaic_exp.kernels.packing import pack_quantized
from scripts.bench_kernels import random_qw_gpu

# (n, k): a ragged N, and LLaMA-3 o; tiled plans (cfg, splitk) with the cluster fix-up, wgmma (bt, wgs, splitk)
SHAPES = ((400, 64 * 37 + 24), (4096, 4096))
TILED = ((4, 2), (4, 8), (5, 3), (5, 8), (6, 4), (6, 8), (6, 16), (2, 8), (8, 8))
WGMMA = ((64, 2, 2), (64, 2, 4), (64, 2, 8), (128, 2, 3), (64, 4, 2), (128, 4, 5),
         (128, 3, 2), (128, 3, 4), (128, 3, 8), (256, 3, 3))  # wgs 3, bt >= 128: the large tiles' split (v26 / v28)


def digest(y: torch.Tensor) -> str:
    return hashlib.sha256(y.contiguous().view(torch.uint8).cpu().numpy().tobytes()).hexdigest()[:16]


def main():
    print(f"# fixup_outputs commit={os.environ.get('MOSAIC_COMMIT', '?')} device={torch.cuda.get_device_name()} "
          f"compact={ops._compact_fixup()}")
    for n, k in SHAPES:
        for dtype in (torch.bfloat16, torch.float16):
            qw = random_qw_gpu(n, k, 0.1, gs=64, bs=(64, 64), seed=11)
            p = pack_quantized(qw, dtype, "cuda")
            for m in (16, 37, 64):
                g = torch.Generator(device="cuda").manual_seed(m)
                x = torch.randn(m, k, device="cuda", dtype=dtype, generator=g)
                runs = [(f"tiled cfg{c} splitk{s}", dict(path="tiled", cfg=c, splitk=s, fixup="cluster")) for c, s in TILED]
                runs += [(f"wgmma {bt},{w},{s}", dict(path="wgmma", wgmma=(bt, w, s))) for bt, w, s in WGMMA if bt >= m]
                for label, kw in runs:
                    for variant in ("dense", "zipper"):
                        try:
                            y = ops.launch(x, p, variant, **kw)
                        except (ValueError, RuntimeError) as e:  # a plan this shape / GPU does not take
                            print(f"{n}x{k} {dtype} m={m} {variant} {label}: skipped ({str(e)[:60]})")
                            continue
                        torch.cuda.synchronize()
                        # the kernel name without the variant's own tag, so that builds diff on plans and bits only
                        kern = ops.LAST_LAUNCH["kernels"][0]
                        for tag in ("-compact", ",compact", ",global", ",cluster"):  # the fix-up as compiled
                            kern = kern.replace(tag, "")
                        print(f"{n}x{k} {dtype} m={m} {variant} {label} -> {kern}: {digest(y)}")


if __name__ == "__main__":
    main()
