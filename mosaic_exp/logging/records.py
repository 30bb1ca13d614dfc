"""JSON records in a run directory: config.yaml, config hash, environment.json, metrics.json."""

from __future__ import annotations

import json
import math
from pathlib import Path


def _clean(v):
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return str(v)
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_clean(data), indent=2, sort_keys=False, default=str))
    tmp.replace(path)


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def write_bench_result(out_dir: str | Path, stem: str, title: str, meta: dict, rows: list[dict],
                       table: list[str]) -> Path:
    """A benchmark's result as ``<stem>.json`` ({meta, rows}) and ``<stem>.md`` (title, meta list, ``table``
    lines); returns the markdown path."""
    out = Path(out_dir)
    write_json(out / f"{stem}.json", {"meta": meta, "rows": rows})
    md = out / f"{stem}.md"
    md.write_text("\n".join([f"# {title}", "", *[f"- {k}: `{v}`" for k, v in meta.items()], "", *table]) + "\n")
    return md
