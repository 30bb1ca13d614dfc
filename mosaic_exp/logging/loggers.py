"""Fabric loggers for a run: W&B (mode decided before init, never a network hang) or CSV, or none."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from mosaic_exp.config import LoggerConfig

log = logging.getLogger(__name__)


def _wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def _host_answers(host: str = "api.wandb.ai", port: int = 443, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_wandb_mode(mode: str) -> str:
    """auto/online -> online only with credentials and a reachable host; else offline (sync later)."""
    if os.environ.get("WANDB_MODE") in ("offline", "disabled", "online"):
        return os.environ["WANDB_MODE"]
    if mode in ("offline", "disabled"):
        return mode
    if _wandb_credentials() and _host_answers():
        return "online"
    if mode == "online":
        log.warning("logger.mode=online but W&B credentials or network are missing: logging offline")
    return "offline"


def make_loggers(cfg: LoggerConfig, run_dir: Path, run_name: str, group: str | None, config: dict,
                 tags: list[str]) -> tuple[list, str]:
    """Return (Fabric loggers, description of what logs where)."""
    if cfg.kind == "none":
        return [], "none (JSON files only)"
    if cfg.kind == "csv":
        from lightning.fabric.loggers import CSVLogger

        return [CSVLogger(root_dir=str(run_dir), name="csv", version="")], "csv"
    mode = resolve_wandb_mode(cfg.mode)
    if mode == "disabled":
        return [], "wandb disabled"
    from lightning.pytorch.loggers import WandbLogger

    os.environ.setdefault("WANDB_SILENT", "true")
    logger = WandbLogger(project=cfg.project, entity=cfg.entity, name=run_name, group=cfg.group or group,
                         tags=list(cfg.tags) + tags, save_dir=str(run_dir), offline=(mode == "offline"),
                         config=config, settings=None)
    return [logger], f"wandb ({mode})"
