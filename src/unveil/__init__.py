"""unveil: explain why a neural network made a prediction.

    import unveil
    model = unveil.load_model()
    exp = unveil.explain(model, "cat.jpg", method="lime", seed=0)
    row = unveil.explain_tabular(clf.predict_proba, X[0], background=X, method="kernelshap")

The names below are imported on first use, so ``import unveil`` itself loads neither torch nor scikit-image;
the command-line entry point uses that to set up its process before torch starts (see :mod:`unveil.process`).
"""

from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

#: public name -> the submodule that defines it (None: the name is that submodule).
_EXPORTS = {
    "explain": ".api",
    "DEFAULT_METHOD": ".api",
    "Explanation": ".explanation",
    "load_image": ".images",
    "method_names": ".methods.registry",
    "method_specs": ".methods.registry",
    "register": ".methods.registry",
    "Model": ".models",
    "as_model": ".models",
    "imagenet_labels": ".models",
    "load_model": ".models",
    "tune_cpu": ".tuning",
    "metrics": None,
    "compare": ".compare",
    "explain_tabular": ".tabular_explain",
    "tabular_methods": ".tabular_explain",
}


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'unveil' has no attribute {name!r}")
    where = _EXPORTS[name]
    value = importlib.import_module(f".{name}" if where is None else where, __name__)
    if where is not None:
        value = getattr(value, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


def methods() -> list[str]:
    """Names of the registered explanation methods."""
    from .methods.registry import method_names

    return method_names()


class _Package(types.ModuleType):
    """This package's module type: when the subpackage ``unveil.methods`` is first imported (lazily, maybe long
    after this module ran), the import system would bind it to the name ``methods`` here, hiding the function
    above; the function keeps the name (the subpackage stays importable as ``unveil.methods.*``)."""

    def __setattr__(self, name, value):
        if name == "methods" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__all__ = [
    "explain",
    "explain_tabular",
    "tabular_methods",
    "compare",
    "metrics",
    "Explanation",
    "Model",
    "as_model",
    "load_model",
    "load_image",
    "imagenet_labels",
    "methods",
    "method_specs",
    "register",
    "tune_cpu",
    "DEFAULT_METHOD",
    "__version__",
]
