"""Measured small-M routes: which kernel (a gemv plan or the tiled kernel) serves a layer shape at M = 9..32.

At M <= 8 one heuristic (``ops.GEMV_ONE_WAVE_PLANS``: the first plan that fills one wave) picks the gemv
plan well. With two or four 8-row blocks per CTA (M = 9..32) the best plan depends on how the CTA's staged X
rows (M x its K range) trade against residency and the split's length, and no simple rule ranked the
measured plans (native/NOTES.md v10, v15). So ``scripts/tune_gemv_routes.py`` times every candidate plan
and the tiled kernel on the device for each (N, K, mode, row block) and writes a table; the default routing
uses a plan only where the table measured it faster than the tiled kernel, on that GPU model, and falls back
to the tiled kernel for shapes the table does not hold (the same approach as Marlin's and Machete's tuned
heuristics, which are tables of measured winners per shape class).

Tables live in ``mosaic_exp/kernels/routes/*.json`` (committed, each with its device, date, commit and
command) and are matched by ``torch.cuda.get_device_name()``; ``$MOSAIC_GEMV_ROUTES`` names one more table
file (it takes precedence) or ``off`` (no table: M > 8 runs the tiled kernel).

Table format::

    {"device": "NVIDIA H100 80GB HBM3", "date": ..., "commit": ..., "command": ...,
     "routes": [{"n_pad": 4096, "k_pad": 4096, "mode": "zipper", "mb": 2, "plan": [16, 8, 2]},
                {"n_pad": 4096, "k_pad": 14336, "mode": "dense", "mb": 4, "plan": "tiled"}, ...],
     "timings": {...}}
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

ROUTES_DIR = Path(__file__).resolve().parent / "routes"
MODES = ("dense", "zipper")
ROW_BLOCKS = (2, 4)  # 16 and 32 rows per CTA; M <= 8 (one block) keeps the one-wave heuristic


class RouteTableError(ValueError):
    """A route table that does not have the documented format (names the file and the bad entry)."""


def _check_plan(plan, where: str):
    if plan == "tiled":
        return plan
    if not (isinstance(plan, (list, tuple)) and len(plan) == 3 and all(isinstance(v, int) for v in plan)):
        raise RouteTableError(f"{where}: plan must be 'tiled' or [warps, kparts, splitk], got {plan!r}")
    w, kp, sk = plan
    if w not in (4, 8, 16) or kp < 1 or w % kp or not 1 <= sk <= 16:
        raise RouteTableError(f"{where}: bad gemv plan warps={w} kparts={kp} splitk={sk}")
    return tuple(plan)


def parse_table(data: dict, source: str) -> tuple[str, dict]:
    """(device name, {(n_pad, k_pad, mode, mb): plan}) of a table; raises RouteTableError naming the bad value."""
    if not isinstance(data, dict) or not isinstance(data.get("device"), str) or not isinstance(data.get("routes"), list):
        raise RouteTableError(f"{source}: a route table needs a 'device' string and a 'routes' list")
    out = {}
    for i, r in enumerate(data["routes"]):
        where = f"{source}: routes[{i}]"
        if not isinstance(r, dict):
            raise RouteTableError(f"{where}: expected an object, got {r!r}")
        try:
            n, k, mode, mb = int(r["n_pad"]), int(r["k_pad"]), r["mode"], int(r["mb"])
        except (KeyError, TypeError, ValueError) as e:
            raise RouteTableError(f"{where}: needs integer n_pad, k_pad, mb and a mode ({e})") from None
        if mode not in MODES:
            raise RouteTableError(f"{where}: mode must be one of {MODES}, got {mode!r}")
        if mb not in ROW_BLOCKS:
            raise RouteTableError(f"{where}: mb must be one of {ROW_BLOCKS}, got {mb}")
        if n <= 0 or k <= 0 or n % 64 or k % 64:
            raise RouteTableError(f"{where}: n_pad and k_pad must be positive multiples of 64, got {n}, {k}")
        out[(n, k, mode, mb)] = _check_plan(r.get("plan"), where)
    return data["device"], out


def load_table(path: str | Path) -> tuple[str, dict]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise RouteTableError(f"route table {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise RouteTableError(f"route table {path} is not valid JSON: {e}") from None
    return parse_table(data, str(path))


@functools.cache
def _tables(extra: str | None) -> tuple[tuple[str, dict], ...]:
    tabs = []
    if extra:
        tabs.append(load_table(extra))
    for f in sorted(ROUTES_DIR.glob("*.json")):
        tabs.append(load_table(f))
    return tuple(tabs)


def lookup(device_name: str, n_pad: int, k_pad: int, mode: str, mb: int):
    """The measured route for this device and shape: a (warps, kparts, splitk) gemv plan, 'tiled', or None
    (no table entry: the caller keeps its default)."""
    extra = os.environ.get("MOSAIC_GEMV_ROUTES") or None
    if extra == "off":
        return None
    for dev, table in _tables(extra):
        if dev == device_name and (n_pad, k_pad, mode, mb) in table:
            return table[(n_pad, k_pad, mode, mb)]
    return None
