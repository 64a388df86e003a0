"""Explanation methods, one module each, registered by name (see :mod:`unveil.methods.registry`).

Every module in this package is imported on first use of the registry, so adding a method is one new
module (plus its tests); ``explain``, the CLI, the docs table and the conformance tests all read the registry.
"""

from __future__ import annotations

import importlib
import pkgutil
import threading

from .registry import Context, MethodResult, MethodSpec, get_method, method_names, method_specs, register

__all__ = ["Context", "MethodResult", "MethodSpec", "get_method", "method_names", "method_specs", "register"]

_loaded = False
_loading = False
_lock = threading.RLock()


def _discover() -> None:
    """Import every method module once. Marked done only when every import succeeded (an interrupted first
    call, Ctrl-C during the imports, is tried again next time); other threads wait for it; a call from inside
    one of the imports (the same thread) returns at once."""
    global _loaded, _loading
    if _loaded:
        return
    with _lock:
        if _loaded or _loading:
            return
        _loading = True
        try:
            for info in pkgutil.iter_modules(__path__):
                if info.name != "registry" and not info.name.startswith("_"):
                    importlib.import_module(f"{__name__}.{info.name}")
            _loaded = True
        finally:
            _loading = False
