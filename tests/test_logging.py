"""W&B mode resolution, run records and result tables."""

from __future__ import annotations

import json
import time

from mosaic_exp.logging import loggers
from mosaic_exp.logging.environment import capture_environment
from mosaic_exp.logging.results_table import collect, format_table


def test_wandb_mode_offline_unless_asked(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setattr(loggers, "_host_answers", lambda *a, **k: True)
    assert loggers.resolve_wandb_mode("offline") == "offline"
    assert loggers.resolve_wandb_mode("online") == "online"


def test_wandb_online_without_credentials_stays_offline_fast(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    probed = []
    monkeypatch.setattr(loggers, "_host_answers", lambda *a, **k: probed.append(1) or True)
    t0 = time.perf_counter()
    assert loggers.resolve_wandb_mode("online") == "offline"
    assert loggers.resolve_wandb_mode("auto") == "offline"
    assert not probed  # no network probe without credentials
    assert time.perf_counter() - t0 < 1.0


def test_env_override_wins(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert loggers.resolve_wandb_mode("online") == "disabled"


def test_environment_records_versions_and_commit():
    env = capture_environment()
    assert env["versions"]["torch"] and env["python"]
    assert "git_commit" in env and "date_utc" in env


def test_results_table_reads_metrics_files(tmp_path):
    for i, (status, ppl) in enumerate([("ok", 12.5), ("failed", None)]):
        d = tmp_path / f"{i}_job"
        d.mkdir()
        rec = {"status": status, "headline_name": "ppl/wikitext2@2048", "headline": ppl,
               "metrics": {"bits_per_weight": 4.17, "time/quantize_s": 2.0},
               "config": {"quant": {"method": "rtn", "w_bits": 4, "group_size": 128}}}
        if status == "failed":
            rec["error"] = "ConfigError: quant.group_size=0"
        (d / "metrics.json").write_text(json.dumps(rec))
    rows = collect(tmp_path)
    assert [r["status"] for r in rows] == ["ok", "failed"]
    assert rows[0]["headline"] == 12.5 and rows[0]["calib+quant s"] == 2.0
    assert rows[1]["error"].startswith("ConfigError")
    table = format_table(rows, ["run", "status", "method", "headline"])
    assert "| 0_job" in table and "12.5" in table
