"""Lazy loader of the compiled ZipperEngine module (native/build/_mosaic_native*.so).

Nothing is loaded at import time; :func:`load_native` loads once and caches the module or the
reason it is unavailable. ``MOSAIC_NATIVE_PATH`` may point at the .so file or its directory.
"""

from __future__ import annotations

import importlib.util
import os
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD_DIR = ROOT / "native" / "build"
MODULE = "_mosaic_native"
ABI_VERSION = 10

_state: dict = {}


class NativeUnavailable(RuntimeError):
    """The native module is not built / not loadable here."""


def _candidates() -> list[Path]:
    env = os.environ.get("MOSAIC_NATIVE_PATH")
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    dirs = []
    if env:
        p = Path(env)
        if p.is_file():
            return [p]
        dirs.append(p)
    dirs.append(BUILD_DIR)
    return [d / f"{MODULE}{suffix}" for d in dirs]


def load_native():
    """Return the native module or raise :class:`NativeUnavailable` with the reason."""
    if "module" in _state:
        return _state["module"]
    if "error" in _state:
        raise NativeUnavailable(_state["error"])
    tried = _candidates()
    path = next((p for p in tried if p.exists()), None)
    if path is None:
        _state["error"] = (f"native module not built (looked for {', '.join(map(str, tried))}; "
                           f"build it with `python scripts/build_native.py`)")
        raise NativeUnavailable(_state["error"])
    try:
        spec = importlib.util.spec_from_file_location(MODULE, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    except Exception as e:
        _state["error"] = f"native module at {path} failed to load: {type(e).__name__}: {e}"
        raise NativeUnavailable(_state["error"]) from e
    if getattr(mod, "ABI_VERSION", None) != ABI_VERSION:
        _state["error"] = f"native module at {path} has ABI {getattr(mod, 'ABI_VERSION', None)}, want {ABI_VERSION}: rebuild"
        raise NativeUnavailable(_state["error"])
    _state["module"] = mod
    _state["path"] = str(path)
    return mod


def native_status() -> tuple[bool, str]:
    """(available, reason or path)."""
    try:
        load_native()
        return True, _state["path"]
    except NativeUnavailable as e:
        return False, str(e)


def reset() -> None:
    """Forget a cached load failure (e.g. after building in-process)."""
    _state.clear()
