"""Explanation methods, one module each, registered by name (see :mod:`unveil.methods.registry`).

Every module in this package is imported on first use of the registry, so adding a method is one new
module (plus its tests); ``explain``, the CLI, the docs table and the conformance tests all read the registry.
"""

from __future__ import annotations

import importlib
import pkgutil

from .registry import Context, MethodResult, MethodSpec, get_method, method_names, method_specs, register

__all__ = ["Context", "MethodResult", "MethodSpec", "get_method", "method_names", "method_specs", "register"]

_loaded = False


def _discover() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for info in pkgutil.iter_modules(__path__):
        if info.name != "registry" and not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
