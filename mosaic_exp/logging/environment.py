"""What produced a result: versions, device, git commit."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata as md
import os
import platform
import socket
import subprocess
from pathlib import Path

_PACKAGES = ("torch", "transformers", "lightning", "hydra-core", "omegaconf", "wandb", "datasets",
             "safetensors", "gguf", "accelerate", "numpy", "lm-eval", "mosaic-exp")


def git_commit(root: str | Path = ".") -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return None


def result_commit(root: str | Path = ".") -> str:
    """The commit a benchmark result belongs to: $MOSAIC_COMMIT (the device's copy of the tree has no matching
    git HEAD), else the ``.commit`` file a device run carries, else git (``-dirty`` if so), else "unknown"."""
    if os.environ.get("MOSAIC_COMMIT"):
        return os.environ["MOSAIC_COMMIT"]
    f = Path(root) / ".commit"
    if f.exists():
        return f.read_text().strip()
    return git_commit(root) or "unknown"


def capture_environment(root: str | Path = ".") -> dict:
    import torch

    versions = {}
    for p in _PACKAGES:
        try:
            versions[p] = md.version(p)
        except md.PackageNotFoundError:
            versions[p] = None
    env = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": __import__("os").cpu_count(),
        "versions": versions,
        "git_commit": git_commit(root),
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        env["cuda"] = torch.version.cuda
        env["gpu"] = torch.cuda.get_device_name(0)
        env["gpu_count"] = torch.cuda.device_count()
    return env
