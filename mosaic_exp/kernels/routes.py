"""Measured mid-M routes: which kernel and plan serve a layer shape at M = 9..64.

At M <= 8 one heuristic (``ops.GEMV_ONE_WAVE_PLANS``: the first plan that fills one wave) picks the gemv
plan well. With two or four 8-row blocks per CTA (M = 9..32) the best plan depends on how the CTA's staged X
rows (M x its K range) trade against residency and the split's length, and no simple rule ranked the
measured plans (native/NOTES.md v10, v15). So ``scripts/tune_gemv_routes.py`` times every candidate plan
and the tiled kernel on the device for each (N, K, mode, row block) and writes a table; the default routing
uses a plan only where the table measured it faster than the tiled kernel, on that GPU model, and falls back
to the tiled kernel for shapes the table does not hold (the same approach as Marlin's and Machete's tuned
heuristics, which are tables of measured winners per shape class).

From M = 17 the choice is also among tiled-kernel plans (tile config and K split: the 4-warp tiles, the 8-warp
ones, two m-tiles of a narrower tile) and wgmma tiles, which the planner's one-wave rule does not rank either
(NOTES.md v17); the tuner times those too, and an entry may name one.

Tables live in ``mosaic_exp/kernels/routes/*.json`` (committed, each with its device, date, commit and
command) and are matched by ``torch.cuda.get_device_name()``; ``$MOSAIC_GEMV_ROUTES`` names one more table
file (it takes precedence) or ``off`` (no table: M > 8 runs the tiled kernel).

Table format::

    {"device": "NVIDIA H100 80GB HBM3", "date": ..., "commit": ..., "command": ...,
     "routes": [{"n_pad": 4096, "k_pad": 4096, "mode": "zipper", "mb": 2, "plan": [16, 8, 2]},
                {"n_pad": 4096, "k_pad": 14336, "mode": "dense", "mb": 4, "plan": "tiled"},
                {"n_pad": 4096, "k_pad": 4096, "mode": "dense", "mb": 8, "plan": {"tiled": [8, 8]}},
                {"n_pad": 28672, "k_pad": 4096, "mode": "zipper", "mb": 8, "plan": {"wgmma": [64, 2, 1]}}, ...],
     "timings": {...}}

``mb`` is the row bucket in 8-row blocks: 2 = M 9..16, 4 = M 17..32, 8 = M 33..64. ``plan``: "tiled" (the tiled
kernel with the planner's own tile and split), [warps, kparts, splitk] (a gemv plan; mb 2 and 4 only),
{"tiled": [cfg, splitk]} (that tile config and K split) or {"wgmma": [bt, wgs, splitk]} (that wgmma tile).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

ROUTES_DIR = Path(__file__).resolve().parent / "routes"
MODES = ("dense", "zipper")
ROW_BLOCKS = (2, 4, 8)  # M 9..16, 17..32, 33..64; M <= 8 (one block) keeps the one-wave heuristic
GEMV_BLOCKS = (2, 4)  # the gemv kernel's multi-block row sizes (16 and 32 rows per CTA)
TILED_CFGS = tuple(range(13))  # native/zipper_kernels.cu Cfg<0..12>


def row_block(m: int) -> int | None:
    """The table's row bucket of M (8-row blocks: 2, 4 or 8), None outside M = 9..64."""
    return 2 if 9 <= m <= 16 else 4 if 17 <= m <= 32 else 8 if 33 <= m <= 64 else None


class RouteTableError(ValueError):
    """A route table that does not have the documented format (names the file and the bad entry)."""


def _check_plan(plan, where: str, mb: int):
    if plan == "tiled":
        return plan
    if isinstance(plan, dict):
        if len(plan) != 1 or next(iter(plan)) not in ("tiled", "wgmma"):
            raise RouteTableError(f"{where}: a plan object must be {{'tiled': [cfg, splitk]}} or "
                                  f"{{'wgmma': [bt, wgs, splitk]}}, got {plan!r}")
        (kind, v), = plan.items()
        n = 2 if kind == "tiled" else 3
        if not (isinstance(v, (list, tuple)) and len(v) == n and all(isinstance(e, int) for e in v)):
            raise RouteTableError(f"{where}: {kind} plan must be {n} integers, got {v!r}")
        if kind == "tiled" and (v[0] not in TILED_CFGS or not 1 <= v[1] <= 16):
            raise RouteTableError(f"{where}: bad tiled plan cfg={v[0]} splitk={v[1]}")
        if kind == "wgmma":
            from mosaic_exp.kernels.ops import WGMMA_TILES  # the launcher's tiles (ops imports this module)

            if tuple(v[:2]) not in WGMMA_TILES or not 1 <= v[2] <= 8:
                raise RouteTableError(f"{where}: bad wgmma plan bt={v[0]} wgs={v[1]} splitk={v[2]}")
        return kind, tuple(v)
    if mb not in GEMV_BLOCKS:
        raise RouteTableError(f"{where}: a gemv plan needs mb in {GEMV_BLOCKS}, got mb {mb}")
    if not (isinstance(plan, (list, tuple)) and len(plan) == 3 and all(isinstance(v, int) for v in plan)):
        raise RouteTableError(f"{where}: plan must be 'tiled', [warps, kparts, splitk] or a plan object, got {plan!r}")
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
        out[(n, k, mode, mb)] = _check_plan(r.get("plan"), where, mb)
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
    """The measured route for this device and shape: a (warps, kparts, splitk) gemv plan, 'tiled', ('tiled',
    (cfg, splitk)), ('wgmma', (bt, wgs, splitk)), or None (no table entry: the caller keeps its default)."""
    extra = os.environ.get("MOSAIC_GEMV_ROUTES") or None
    if extra == "off":
        return None
    for dev, table in _tables(extra):
        if dev == device_name and (n_pad, k_pad, mode, mb) in table:
            return table[(n_pad, k_pad, mode, mb)]
    return None
