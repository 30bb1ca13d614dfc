"""Model-level speed: the latency of one forward over [batch, seq] tokens, the way a decoder runs it.

    seq = 1      a decode step's weight work: every linear at M = batch, each weight streamed once
    seq = S      a prefill of S tokens per sequence (M = batch * S: the compute-bound side)

The forward is ``model(input_ids, use_cache=False)`` keeping the last position's logits only (as generation
does), so attention runs over the ``seq`` tokens themselves: a decode step's reads of a KV cache are **not**
part of the number (they are the same bytes for every weight format; at short contexts they are small next to
the weights). What W4 kernels change, the linears' weight traffic and compute, is all in it.

Method: random token ids (fixed seed), ``warmup`` eager forwards, then either a CUDA graph of one forward replayed (``cuda_graph=True``: no Python or launch overhead in the number, as a serving engine
runs decode) or eager forwards (the Python + dispatch path included). Each rep is timed by CUDA events (wall
clock on the CPU); the median of ``reps`` is reported with the min and max. A model whose forward cannot be
captured (e.g. ZipperQuant's CPU half, which synchronizes with the host) raises, naming the module, instead of
silently timing something else.
"""

from __future__ import annotations

import inspect
import statistics
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass
class ForwardTiming:
    batch: int
    seq: int
    mode: str            # "cuda-graph" | "eager"
    median_ms: float
    min_ms: float
    max_ms: float
    reps: int
    tokens_per_s: float  # batch * seq / median
    kernels: dict        # kernel name -> number of modules that ran it (QuantLinear / BitSplitLinear)

    def as_dict(self) -> dict:
        return asdict(self)


def ran_kernels(model: nn.Module) -> dict[str, int]:
    """What each quantized module reported after the last forward: kernel description -> count. A module inside
    one that reports (a fused group's QuantLinear, a BitSplitLinear's dense part) is counted by its outer one."""
    out: dict[str, int] = {}
    reported: set[str] = set()
    for name, mod in model.named_modules():
        k = getattr(mod, "last_kernel", None)
        if not isinstance(k, str):
            continue
        parts = name.split(".")
        if any(".".join(parts[:i]) in reported for i in range(1, len(parts))):
            continue
        reported.add(name)
        launch = getattr(mod, "last_launch", ())
        if launch:  # a native kernel: its launch plan(s), e.g. "gemv-zipper[mb1,warps16,...]"
            k = f"{k}: {' + '.join(launch)}"
        out[k] = out.get(k, 0) + 1
    return dict(sorted(out.items()))


def _forward_fn(model: nn.Module, ids: torch.Tensor):
    kw = {"use_cache": False}
    if "logits_to_keep" in inspect.signature(model.forward).parameters:
        kw["logits_to_keep"] = 1  # generation keeps one position; the head's cost is then one row per sequence
    return lambda: model(input_ids=ids, **kw).logits


def _check_capturable(model: nn.Module) -> None:
    from mosaic_exp.kernels.bitsplit_linear import BitSplitLinear

    for name, mod in model.named_modules():
        if isinstance(mod, BitSplitLinear) and mod.high_kernel != "reference":
            raise ValueError(f"cuda_graph=True: {name} runs its high-order part on the CPU ({mod.high_kernel}), "
                             f"which synchronizes with the host and cannot be captured; use cuda_graph=False")


@torch.no_grad()
def time_forward(model: nn.Module, batch: int, seq: int, *, device: torch.device | str, cuda_graph: bool = True,
                 warmup: int = 3, reps: int = 20, vocab: int | None = None, seed: int = 0) -> ForwardTiming:
    """Median latency of ``model``'s forward over random [batch, seq] token ids on ``device``."""
    if batch <= 0 or seq <= 0:
        raise ValueError(f"batch={batch} and seq={seq} must be positive")
    if reps <= 0 or warmup < 0:
        raise ValueError(f"reps={reps} must be positive and warmup={warmup} non-negative")
    device = torch.device(device)
    if cuda_graph and device.type != "cuda":
        raise ValueError(f"cuda_graph=True needs a CUDA device, got {device}")
    if cuda_graph:
        _check_capturable(model)
    vocab = vocab or model.config.vocab_size
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, seq), generator=gen).to(device)
    fwd = _forward_fn(model, ids)
    cuda = device.type == "cuda"
    if cuda_graph:
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm-up off the default stream (first launches plan and upload)
            for _ in range(max(warmup, 1)):
                fwd()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fwd()
        run = graph.replay
        kernels = ran_kernels(model)  # the captured forward's modules report what they launched
    else:
        for _ in range(warmup):
            fwd()
        run = fwd
        run()
        kernels = ran_kernels(model)
    times = []
    for _ in range(reps):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            run()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            run()
            times.append((time.perf_counter() - t0) * 1e3)
    med = statistics.median(times)
    return ForwardTiming(batch=batch, seq=seq, mode="cuda-graph" if cuda_graph else "eager", median_ms=med,
                         min_ms=min(times), max_ms=max(times), reps=reps,
                         tokens_per_s=batch * seq / (med / 1e3), kernels=kernels)
