"""Stage callbacks (called through Fabric's ``fabric.call``): timing/memory, progress, metric files."""

from __future__ import annotations

import logging
import resource
import sys
import time

import torch

log = logging.getLogger(__name__)


def _host_peak_gb() -> float:
    # ru_maxrss is KiB on Linux: peak resident memory of this process so far.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class StageTimer:
    """Wall time and peak memory (host RSS; accelerator allocator peak) of every stage."""

    def __init__(self):
        self.t0: dict[str, float] = {}
        self.metrics: dict[str, float] = {}

    def on_stage_start(self, stage: str, pipeline) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.t0[stage] = time.perf_counter()

    def on_stage_end(self, stage: str, pipeline) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            self.metrics[f"mem/{stage}_gpu_peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
        self.metrics[f"time/{stage}_s"] = time.perf_counter() - self.t0[stage]
        self.metrics[f"mem/{stage}_host_peak_gb"] = _host_peak_gb()
        log.info("stage %-9s %.1fs", stage, self.metrics[f"time/{stage}_s"])
        pipeline.metrics.update(self.metrics)


class ConsoleSummary:
    """Print the headline numbers when the run ends."""

    def on_run_end(self, pipeline) -> None:
        m = pipeline.metrics
        lines = [f"run dir: {pipeline.run_dir}", f"config hash: {pipeline.config_hash}"]
        for k in sorted(m):
            if k.startswith(("ppl/", "zeroshot/", "bits_per_weight", "time/", "eval/", "residual/")):
                v = m[k]
                lines.append(f"  {k:<34} {v:.4f}" if isinstance(v, float) else f"  {k:<34} {v}")
        print("\n".join(lines), file=sys.stdout, flush=True)


def progress_enabled() -> bool:
    """Progress bars only on a terminal (quiet in CI logs and multirun files)."""
    return sys.stderr.isatty()
