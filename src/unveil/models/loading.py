"""Loading a user's model from a ``module:attribute`` reference (the CLI's ``--model pkg.mod:name``).

The rule for what the attribute may be:

* a :class:`unveil.Model`, a ``torch.nn.Module`` instance, or a callable taking one argument (a numpy batch
  N x H x W x C in [0, 1] for images, N x features for tables) is used as it is;
* an object with a ``predict_proba`` or ``predict`` method (a fitted scikit-learn estimator; for tables) is
  used as it is;
* a ``torch.nn.Module`` subclass, or a callable that takes no required argument (a factory), is called once
  with no arguments and its result is used by the rule above.

``module`` is an importable module name (``mypkg.models``) or a path to a ``.py`` file
(``models/net.py:build``); a file's folder is put first on ``sys.path`` while it is imported, so it can import
its neighbours.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path

from ..checks import article

__all__ = ["load_object", "is_object_spec"]


def is_object_spec(spec: str) -> bool:
    """Whether ``spec`` looks like ``module:attribute`` (and not a Windows drive letter or a plain file)."""
    if ":" not in spec:
        return False
    module, _, attr = spec.rpartition(":")
    return bool(module) and bool(attr) and attr.replace(".", "_").isidentifier() and len(module) > 1


def _import(module: str, spec: str):
    if module.endswith(".py") or "/" in module or "\\" in module:
        path = Path(module)
        if not path.is_file():
            raise ValueError(f"--model {spec!r}: no such Python file: {path}")
        name = f"_unveil_user_{path.stem}"
        mod_spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(mod_spec)
        folder = str(path.resolve().parent)
        sys.path.insert(0, folder)
        try:
            sys.modules[name] = mod
            mod_spec.loader.exec_module(mod)
        except Exception as err:
            sys.modules.pop(name, None)
            raise ValueError(f"--model {spec!r}: importing {path} failed ({type(err).__name__}: {err})") from err
        finally:
            if sys.path and sys.path[0] == folder:
                sys.path.pop(0)
        return mod
    top = module.split(".")[0]
    try:
        try:
            return importlib.import_module(module)
        except ModuleNotFoundError as err:
            here = os.getcwd()
            if err.name != top or here in sys.path:
                raise
            # the current folder, first on sys.path as under `python -m` (the console script's sys.path lacks
            # it); it stays there once the module came from it, so the module's own later imports of its
            # neighbours work too
            sys.path.insert(0, here)
            try:
                return importlib.import_module(module)
            except BaseException:
                if here in sys.path:
                    sys.path.remove(here)
                raise
    except ModuleNotFoundError as err:
        where = f"a file {top}.py" if top == module else f"a package folder {top}/"
        hint = "" if err.name != top else (
            f"; {where} must be in the current folder or on PYTHONPATH"
            + (f", or give its path ({top}.py:...)" if top == module else ""))
        raise ValueError(f"--model {spec!r}: cannot import module {module!r} ({err}{hint})") from None
    except Exception as err:
        raise ValueError(f"--model {spec!r}: importing {module!r} failed ({type(err).__name__}: {err})") from err


def _required_args(fn) -> int | None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature: treat as a model function
        return None
    return sum(
        1
        for p in sig.parameters.values()
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    )


def _is_estimator(obj) -> bool:
    return not inspect.isclass(obj) and any(callable(getattr(obj, a, None)) for a in ("predict_proba", "predict"))


#: file endings of pickled objects (scikit-learn models saved with pickle or joblib)
PICKLES = (".pkl", ".pickle", ".joblib")


def load_object(spec: str):
    """Return the model object named by ``module:attribute`` (see the module rule); ValueError on failure."""
    import torch

    from .base import Model

    if isinstance(spec, str) and spec.lower().endswith(PICKLES):
        raise ValueError(f"--model {spec!r}: pickles are not loaded here (loading one runs any code it holds); load "
                         f"it in a Python file you trust, e.g. model.py with `import joblib; model = "
                         f"joblib.load({spec!r})`, and pass model.py:model")
    if not isinstance(spec, str) or not is_object_spec(spec):
        raise ValueError(f"--model: expected 'module:attribute' or 'path/file.py:attribute', got {spec!r}")
    module, _, attr = spec.rpartition(":")
    obj = _import(module, spec)
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"--model {spec!r}: {module!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if isinstance(obj, (Model, torch.nn.Module)) or (_is_estimator(obj) and not callable(obj)):
        return obj
    if inspect.isclass(obj) and issubclass(obj, torch.nn.Module):
        factory = True
    elif callable(obj):
        factory = _required_args(obj) == 0
    else:
        raise ValueError(f"--model {spec!r}: {attr!r} is {article(type(obj).__name__)}, not a model, module or "
                         f"callable")
    if not factory:
        return obj
    try:
        made = obj()
    except Exception as err:
        raise ValueError(f"--model {spec!r}: calling the factory {attr}() failed "
                         f"({type(err).__name__}: {err})") from err
    if isinstance(made, (Model, torch.nn.Module)) or callable(made) or _is_estimator(made):
        return made
    raise ValueError(
        f"--model {spec!r}: the factory {attr}() returned {article(type(made).__name__)}, not a model, module or "
        f"callable"
    )
