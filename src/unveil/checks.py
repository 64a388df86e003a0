"""Checks of option values shared across the package (plain numpy: importing this loads no torch).

Each returns the value in its plain Python type or raises a ValueError that names the option.
"""

from __future__ import annotations

import contextlib
import math
import re
import threading
import warnings
from collections.abc import Mapping

import numpy as np

__all__ = ["check_positive", "check_bool", "check_seed", "option_mapping", "scalar_target", "MAX_SEED"]


def check_positive(name: str, value, *, integer: bool = False, allow_zero: bool = False):
    """``value`` as an int (``integer``) or a float; a ValueError naming ``name`` unless it is a positive (or,
    with ``allow_zero``, non-negative) finite number (no bool)."""
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    ok = not isinstance(value, (bool, np.bool_)) and isinstance(value, kinds)
    ok = ok and (value >= 0 if allow_zero else value > 0)  # False for NaN
    if ok and not integer:
        try:
            ok = math.isfinite(float(value))
        except OverflowError:  # a Python int beyond any float
            ok = False
    if not ok:
        what = "int" if integer else "number"
        raise ValueError(f"{name}: expected a {'non-negative' if allow_zero else 'positive'} {what}, got {value!r}")
    return int(value) if integer else float(value)


def article(word: str) -> str:
    """``word`` with "a" or "an" before it (by its first letter: "an int", "a str")."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


#: the attribute :func:`blame_model` sets on an exception raised inside a user's model
MODEL_FAILED = "unveil_model_failed"


def blame_model(err: BaseException, name: str, what: str) -> None:
    """Mark ``err``, raised inside the user's model ``name`` while it scored ``what`` (e.g. "a batch of 8 rows
    of 5 features"), so that the command can say where it came from; its type and message stay as they are
    (the Python API re-raises it unchanged, with a note on Python 3.11+). The innermost mark wins."""
    if getattr(err, MODEL_FAILED, None) is not None:
        return
    try:
        setattr(err, MODEL_FAILED, f"{name} failed on {what}")
        if hasattr(err, "add_note"):
            err.add_note(f"(raised inside the model {name}, called on {what})")
    except (AttributeError, TypeError):  # an exception type with slots: left unmarked
        pass


#: packages whose frames are passed over when looking for the code that raised (see :func:`origin_frame`)
LIBRARIES = ("numpy", "torch", "scipy", "sklearn", "PIL", "onnxruntime", "pandas")


def _is_library(filename: str) -> bool:
    import os
    import sys

    path = os.path.abspath(filename)
    for name in LIBRARIES:
        f = getattr(sys.modules.get(name), "__file__", None)
        if f and path.startswith(os.path.dirname(os.path.abspath(f)) + os.sep):
            return True
    return False


def _in_unveil(filename: str) -> bool:
    import os

    return os.path.abspath(filename).startswith(os.path.dirname(os.path.abspath(__file__)) + os.sep)


def origin_frame(err: BaseException):
    """The frame of ``err``'s traceback where the user's code that raised it is: the deepest frame outside
    :data:`LIBRARIES` and this package (a model whose numpy or torch call failed is named, not the library).
    Without one, the error's cause is searched (this package re-raises some errors with a hint); None when
    that finds none either (e.g. an error raised in a TorchScript module's compiled code)."""
    import traceback

    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        own = [f for f in traceback.extract_tb(err.__traceback__)
               if not _is_library(f.filename) and not _in_unveil(f.filename)]
        if own:
            return own[-1]
        err = err.__cause__
    return None


def raised_by_callback(err: BaseException) -> bool:
    """True when ``err``, caught where this package called a model, came from this package's own code called
    back from inside the model (a hook of a gradient method), not from the model: the deepest frame below the
    catching one, libraries passed over, is in this package."""
    import traceback

    frames = traceback.extract_tb(err.__traceback__)[1:]
    own = [f for f in frames if not _is_library(f.filename)]
    return bool(own) and _in_unveil(own[-1].filename)


def check_bool(value, name: str) -> bool:
    """A real bool (Python or numpy); anything else (the text 'False', 0, None) is a ValueError naming ``name``."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


def option_mapping(name: str, value) -> dict:
    """An option that holds keyword options (``segmentation_options``, ``base_options``): None -> {}, a
    mapping -> a dict copy; anything else a ValueError naming ``name``."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{name}: expected a dict of keyword options (or None), got {value!r}")
    return dict(value)


def scalar_target(target):
    """A one-element integer array or tensor (what ``logits.argmax()`` returns) as an int; anything else is
    returned as it is (class numbers and names are checked where the classes are known). A one-element float
    one is a TypeError."""
    if hasattr(target, "item") and hasattr(target, "dtype") and getattr(target, "ndim", None) is not None:
        if int(np.prod(getattr(target, "shape", ()))) == 1:
            value = target.item()
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"target: expected a class number or name, got a {target.dtype} value")
            return value
    return target


#: The largest float32 magnitude: scores and libsvm values are handled in float32.
FLOAT32_MAX = float(np.finfo(np.float32).max)

#: Seeds go to numpy and to torch.Generator.manual_seed, which takes at most 64 bits.
MAX_SEED = 2**63 - 1


def check_seed(seed) -> int:
    """``seed`` as an int; a ValueError unless it is an int in [0, MAX_SEED]."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed: expected an int from 0 to 2**63 - 1, got {seed!r}")
    return int(seed)


def integer_text(text: str) -> int | None:
    """The int a target's text spells in ASCII digits ("7", " -2 "), else None ("²", "٣" and names)."""
    t = text.strip()
    digits = t[1:] if t.startswith("-") else t
    return int(t) if digits.isascii() and digits.isdigit() else None


_SHOWN_LABEL = re.compile(r"\s*class[\s_]+(\d+)\s*", re.IGNORECASE)


def shown_label_index(text: str) -> int | None:
    """N for "class N", the label shown for an output that has no class name; else None."""
    found = _SHOWN_LABEL.fullmatch(text)
    return int(found.group(1)) if found else None


def name_key(name) -> str:
    """A class name compared loosely: case, underscores for spaces and runs of spaces ignored."""
    return " ".join(str(name).replace("_", " ").split()).casefold()


def match_class_name(target: str, labels) -> int | None:
    """The index of the class called ``target`` among ``labels``: the exact name first, then the same name
    up to case, underscores for spaces and repeated spaces ("egyptian_cat" finds "Egyptian cat" and
    "Egyptian_cat"); None when no label matches."""
    if labels is None:
        return None
    names = [str(lab) for lab in labels]
    if target in names:
        return names.index(target)
    key = name_key(target)
    keys = [name_key(n) for n in names]
    return keys.index(key) if key in keys else None


def check_labels(labels) -> list[str] | None:
    """``labels`` as a list of str (one per class; ints become their text), or None; a TypeError for a single
    string, a mapping or anything that is not a sequence of names."""
    if labels is None:
        return None
    if isinstance(labels, (str, bytes)) or isinstance(labels, Mapping):
        raise TypeError(f"labels: expected a list of class names (one str per class), got {type(labels).__name__}"
                        + ("; a dict's values in class order: list(labels.values())" if isinstance(labels, Mapping)
                           else ""))
    try:
        out = list(labels)
    except TypeError:
        raise TypeError(f"labels: expected a list of class names, got {type(labels).__name__}") from None
    bad = [lab for lab in out if isinstance(lab, (bool, np.bool_))
           or not isinstance(lab, (str, np.str_, int, np.integer))]
    if bad:
        raise TypeError(f"labels: every class name must be a str (or an int, taken as its text); got {bad[:3]!r}")
    return [str(lab) for lab in out]


_WARNINGS_LOCK = threading.RLock()


@contextlib.contextmanager
def scoped_warnings():
    """``warnings.catch_warnings()`` taken under one lock: before Python 3.14 it saves and restores the
    process-wide filter list, so two threads inside it at once can leave one's filters (an "ignore all")
    installed for good. Every use in unveil goes through here."""
    with _WARNINGS_LOCK, warnings.catch_warnings():
        yield
