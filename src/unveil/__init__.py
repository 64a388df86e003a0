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
import importlib.util
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
    "compare": None,  # the module, callable as the function (see unveil.compare)
    "explain_tabular": ".tabular_explain",
    "tabular_methods": ".tabular_explain",
}


def __getattr__(name: str):
    if name not in _EXPORTS:  # a submodule (unveil.streak, unveil.tabular, ...): imported on first use
        if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
            return importlib.import_module(f".{name}", __name__)
        raise AttributeError(f"module 'unveil' has no attribute {name!r}")
    where = _EXPORTS[name]
    value = importlib.import_module(f".{name}" if where is None else where, __name__)
    if where is not None:
        value = getattr(value, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


class _Methods:
    """``unveil.methods()``: the names of the registered explanation methods. ``unveil.methods.<module>``: that
    module of the subpackage (``unveil.methods.meaningful.explain_batch``, ``unveil.methods.modified_rules``),
    imported on first use, as ``from unveil.methods.<module> import ...`` would."""

    def __call__(self) -> list[str]:
        from .methods.registry import method_names

        return method_names()

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return importlib.import_module(f"{__name__}.methods.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.methods.{name}":
                raise  # a module that exists but whose own imports fail
            raise AttributeError(f"unveil.methods has no module {name!r}") from None

    def __dir__(self) -> list[str]:
        import pkgutil

        package = importlib.import_module(f"{__name__}.methods")
        return sorted(i.name for i in pkgutil.iter_modules(package.__path__) if not i.name.startswith("_"))

    def __repr__(self) -> str:
        return "<unveil.methods: call it for the registered method names>"


methods = _Methods()


class _Package(types.ModuleType):
    """This package's module type: when the subpackage ``unveil.methods`` is first imported (lazily, maybe long
    after this module ran), the import system would bind it to the name ``methods`` here, hiding the callable
    above; the callable keeps the name (and reaches the subpackage's modules as its attributes). The module
    ``unveil.compare`` needs no such care: it is callable itself, as the function."""

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
