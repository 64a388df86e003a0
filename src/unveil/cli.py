"""The ``unveil`` command."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import warnings
from pathlib import Path

from ._defaults import DEFAULT_METHOD, DEFAULT_TABULAR_METHOD

__all__ = ["main", "build_parser"]


def _evals(n: int) -> str:
    return f"{n} evaluation{'' if n == 1 else 's'}"


def _positive_int(text: str, also: str = "") -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive int{also}, got {text!r}")
    return value


def _seed(text: str) -> int:
    from .checks import check_seed  # loaded only when --seed is given (the parser itself loads no numpy)

    try:
        return check_seed(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int from 0 to 2**63 - 1, got {text!r}") from None


def _batch_size(text: str):
    return "auto" if text == "auto" else _positive_int(text, " or 'auto'")


#: Python's spellings of the JSON constants, accepted in -o KEY=VALUE too.
_PY_CONSTANTS = {"True": True, "False": False, "None": None}


def _option(text: str):
    """KEY=VALUE; VALUE is read as JSON when it parses (numbers, true/false, null, lists) or as Python's
    True/False/None, else kept as text."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    if value.strip() in _PY_CONSTANTS:
        return key.strip(), _PY_CONSTANTS[value.strip()]
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return key.strip(), parsed


#: What --samples sets, per method: the first of these options the method has (LIME's, KernelSHAP's and
#: SmoothGrad's n_samples, RISE's n_masks, Shapley sampling's n_permutations).
SAMPLE_OPTIONS = ("n_samples", "n_masks", "n_permutations")


SAMPLES_HELP = ("the sample count of each chosen method that has one: LIME's, KernelSHAP's and SmoothGrad's "
                "n_samples, RISE's n_masks, Shapley's n_permutations (-o sets one method's own)")


def _sample_option(method: str) -> str | None:
    from .methods.registry import get_method

    known = get_method(method).options
    return next((k for k in SAMPLE_OPTIONS if k in known), None)


def method_options(method: str, args) -> dict:
    """The options given on the command line that ``method`` takes (--samples: its sample count, see
    :data:`SAMPLE_OPTIONS`; an explicit -o of the same option wins)."""
    from .methods.registry import get_method

    known = get_method(method).options
    options = {k: v for k, v in (args.option or []) if k in known}
    key = _sample_option(method)
    if getattr(args, "samples", None) is not None and key is not None:
        options.setdefault(key, args.samples)
    return options


def check_repeated_options(args) -> None:
    """-o KEY=VALUE given twice for one KEY is an error (which one was meant is not guessed)."""
    seen: dict[str, object] = {}
    for key, value in args.option or []:
        if key in seen:
            raise ValueError(f"-o {key}: given twice ({seen[key]!r} and {value!r}); give it once")
        seen[key] = value


class _Once(argparse._StoreAction):
    """A flag that takes one value and may be given once: a second ``--target b`` is an error, not a silent
    replacement of the first."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = namespace.__dict__.setdefault("_given_once", set())
        if self.dest in given:
            parser.error(f"{option_string}: given twice; give it once")
        given.add(self.dest)
        setattr(namespace, self.dest, values)


class _Parser(argparse.ArgumentParser):
    """The command's parsers: flags that take one value may be given once (see :class:`_Once`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register("action", None, _Once)
        self.register("action", "store", _Once)


def check_options(methods, args) -> None:
    """Every --option must belong to at least one of the chosen methods, and --samples and --budget must
    apply to at least one (a flag no chosen method takes is an error, not silently dropped)."""
    from .methods.registry import get_method

    check_repeated_options(args)
    for key, _ in args.option or []:
        if not any(key in get_method(m).options for m in methods):
            raise ValueError(f"--option {key}: none of the methods {', '.join(methods)} has this option")
    if getattr(args, "samples", None) is not None:
        samplers = [m for m in methods if _sample_option(m)]
        if not samplers:
            takers = [m for m in _all_methods() if _sample_option(m)]
            raise ValueError(f"--samples: none of the methods {', '.join(methods)} draws samples (those that do: "
                             f"{', '.join(takers)}); set their own options with -o KEY=VALUE")
        given = {k for k, _ in args.option or []}
        if all(_sample_option(m) in given for m in samplers):
            raise ValueError(f"--samples {args.samples}: every chosen method's sample count is already set with -o "
                             f"({', '.join(sorted({_sample_option(m) for m in samplers}))}); give one or the other")
    if getattr(args, "budget", None) is not None and not any(get_method(m).uses_budget for m in methods):
        takers = [m for m in _all_methods() if get_method(m).uses_budget]
        raise ValueError(f"--budget: none of the methods {', '.join(methods)} takes a budget (the perturbation "
                         f"methods do: {', '.join(takers)})")


def _all_methods() -> list[str]:
    from .methods.registry import method_names

    return list(method_names())


def _name_list(text: str, what: str) -> list[str]:
    """NAME,NAME,...: the names, stripped; an empty entry (``a,,b``) or a name listed twice is an error."""
    names = [m.strip() for m in text.split(",")]
    if len(names) > 1 and not all(names):
        raise argparse.ArgumentTypeError(f"an empty {what} name in {text!r}")
    twice = sorted({m for m in names if names.count(m) > 1})
    if twice:
        raise argparse.ArgumentTypeError(f"{what} {', '.join(twice)} listed twice in {text!r}")
    return [m for m in names if m]


def _method_list(text: str) -> list[str]:
    from .methods.registry import method_names

    names = _name_list(text, "method")
    known = method_names()
    bad = [m for m in names if m not in known]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown method {', '.join(bad) or '(empty)'}; available: {', '.join(known)}"
        )
    return names


def model_from_object(obj, batch_size="auto"):
    """A :class:`Model` from what ``module:attribute`` named: a Model is used as it is (``--batch-size`` applied
    when given explicitly), a torch module or callable is wrapped with the adapter's defaults."""
    from .models import Model

    if isinstance(obj, Model):
        if batch_size != "auto":
            obj.batch_size = batch_size
        return obj
    return Model(obj, batch_size=None if batch_size == "auto" else batch_size)


#: what --outputs may say the model returns (see unveil.Model's ``outputs``)
OUTPUT_KINDS = ("logits", "probabilities", "scores")
OUTPUTS_HELP = ("what the model returns: logits (a softmax is applied), probabilities or scores (explained as "
                "they are); default: the model's own setting (logits for torch modules and ONNX files, "
                "probabilities for functions)")


def _with_outputs(model, outputs):
    """``model`` with ``outputs`` set when --outputs gave it."""
    if outputs is not None:
        model.outputs = outputs
    return model


def load_cli_model(spec: str, batch_size="auto"):
    """``default`` (the embedded model); ``module:attribute`` or ``file.py:attribute`` (a user's Model, torch
    module, callable or factory: see :mod:`unveil.models.loading`); or a saved ImageNet classifier taking
    normalized 224 x 224 input: a ``torch.export`` program (.pt2, exported with a dynamic batch dimension), a
    TorchScript file or an ONNX file (.onnx, run by ONNX Runtime; the graph's image size when it fixes one)."""
    from . import load_model
    from .models.loading import PICKLES, is_object_spec, load_object

    if spec in ("default", "efficientnet-lite0"):
        return load_model(batch_size=batch_size)
    path = Path(spec)
    if (not path.is_file() and is_object_spec(spec)) or spec.lower().endswith(PICKLES):  # a pickle: refused there
        return model_from_object(load_object(spec), batch_size)
    if not path.is_file():
        raise ValueError(f"--model: {spec!r} is neither 'default', 'module:attribute' nor an existing model file "
                         "(.pt2, TorchScript or .onnx)")
    if path.suffix.lower() == ".py":
        raise ValueError(f"--model {spec!r}: a Python file needs ':attribute' naming the model in it (an "
                         f"unveil.Model, a torch module or its class, a function, or a factory), e.g. {spec}:build")
    import torch

    from .models import Model
    from .models.default import IMAGENET_MEAN, IMAGENET_STD, INPUT_SIZE

    if path.suffix.lower() == ".onnx":
        try:
            model = Model.from_onnx(path, batch_size=batch_size)  # ImageNet's mean/std for 3 channels, none else
        except ImportError as err:
            raise ValueError(f"--model {spec!r}: {err}") from None
        if model.input_size is None:  # the graph leaves the image size open
            model.input_size = INPUT_SIZE
        return _imagenet_names_if_1000(model, model.fn.num_outputs)
    try:
        if path.suffix == ".pt2":
            module = torch.export.load(str(path)).module()
        else:
            module = torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as err:  # torch raises many kinds here
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(f"--model: cannot load {path} as a .pt2 (torch.export) or TorchScript file, nor is it "
                         f".onnx ({type(err).__name__}: {first})") from None
    model = Model(module, input_size=INPUT_SIZE, mean=IMAGENET_MEAN, std=IMAGENET_STD, batch_size=batch_size,
                  name=path.stem)
    return _imagenet_names_if_1000(model, None)


def _imagenet_names_if_1000(model, n_classes: int | None):
    """``model`` with ImageNet's class names when it scores 1000 classes (``n_classes``, or one pass on a blank
    input when that is not known); else its classes stay numbered."""
    import torch

    from .models import imagenet_labels

    if n_classes is None:
        blank = torch.zeros(1, model.channels or 3, *model.input_size)
        n_classes = model.probabilities(blank, batch_size=1).shape[1]
    if n_classes == len(imagenet_labels()):
        model.labels = list(imagenet_labels())
    return model


def _print_top(model, path: str, image) -> None:
    print(f"{path}:")
    for idx, label, p in model.predict(image, k=5):
        print(f"  {idx:4d}  {label:<28s} {p:.4f}")


def output_stems(paths) -> list[str]:
    """One output name per input: the file's stem, or, for different files that share a stem (a/cat.jpg,
    b/cat.png), the stem with the extension (cat_jpg) and, if that still repeats, a counter (cat_jpg_2), so
    that no file's results overwrite another's. The same file given twice keeps one name."""
    given = {}  # one entry per file (a link and its target are one file), named as first given
    for p in paths:
        given.setdefault(Path(p).resolve(), Path(p))
    stems = [f.stem for f in given.values()]
    names = [f"{f.stem}_{f.suffix.lstrip('.')}" if stems.count(f.stem) > 1 and f.suffix else f.stem
             for f in given.values()]
    taken = set(names)
    seen: set[str] = set()
    named = {}
    for f, n in zip(given, names):
        if n in seen:  # a counter no other input's name already uses
            i = 2
            while f"{n}_{i}" in taken:
                i += 1
            n = f"{n}_{i}"
            taken.add(n)
        seen.add(n)
        named[f] = n
    return [named[Path(p).resolve()] for p in paths]


def cmd_explain(args) -> int:
    from . import explain
    from .explanation import make_folder
    from .images import load_image
    from .methods.registry import check_model_for, get_method

    check_options(args.method, args)
    model = _with_outputs(load_cli_model(args.model, args.batch_size), args.outputs)
    check_model_for(model, args.method)  # a model without gradients fails before any method runs
    out = make_folder(Path(args.out), "--out")
    images = []
    for path in args.images:  # check every input first: a bad file fails before any long work
        images.append((path, load_image(path, channels=model.channels, alpha=model.alpha,
                                        background=model.background)))
    for (path, image), stem in zip(images, output_stems(args.images)):
        _print_top(model, path, image)
        for method in args.method:
            budget = args.budget if get_method(method).uses_budget else None
            exp = explain(model, image, method=method, target=args.target, seed=args.seed, budget=budget,
                          progress=not args.no_progress, **method_options(method, args))
            base = out / f"{stem}_{method}"
            exp.save(f"{base}.npz")  # the results first: a failing plot loses nothing
            exp.plot(f"{base}.png")
            print(
                f"  {method}: target {exp.target} '{exp.label}' p={exp.score:.4f}, {_evals(exp.n_evals)}, "
                f"{exp.seconds:.1f} s -> {base}.png/.npz/.json"
            )
    return 0


def _json_default(value):
    """An option's default as a JSON value (numbers, strings, booleans, null, lists of them); anything else
    (a callable, an object) as its Python repr, a string."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value if not isinstance(value, float) or math.isfinite(value) else repr(value)
    if isinstance(value, (list, tuple)) and all(v is None or isinstance(v, (bool, int, float, str)) for v in value):
        return list(value)
    return repr(value)


def cmd_methods(args) -> int:
    if args.tables:
        from .tabular_explain import TABULAR_METHODS

        specs = [TABULAR_METHODS[name] for name in sorted(TABULAR_METHODS)]
    else:
        from .methods.registry import method_specs

        specs = method_specs()
    if args.json:
        print(json.dumps([
            {"name": s.name, "family": s.family, "needs_gradients": s.needs_gradients,
             "description": s.description, "options": {k: _json_default(v) for k, v in s.options.items()}}
            for s in specs
        ], indent=2))
        return 0
    width = max(len(s.name) for s in specs)
    for s in specs:
        print(f"{s.name:<{width}}  {s.family:<12s} {s.description}")
    return 0


def _float_or_int(text: str):
    """A fraction (contains '.' or 'e') or an int number of pixels."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a fraction or an int, got {text!r}") from None


def _box(text: str):
    try:
        box = [float(v) for v in text.split(",")]
    except ValueError:
        box = []
    if len(box) != 4:
        raise argparse.ArgumentTypeError(f"expected x0,y0,x1,y1 (pixels), got {text!r}")
    return box


def _metric_list(text: str) -> list[str]:
    from .metrics import METRICS

    names = _name_list(text, "metric")
    bad = [m for m in names if m not in METRICS and m != "pointing_game"]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown metric {', '.join(bad) or '(empty)'}; available: {', '.join([*METRICS, 'pointing_game'])}"
        )
    return names


def cmd_compare(args) -> int:
    from .compare import compare
    from .images import load_image
    from .report import check_report_path

    check_options(args.methods, args)
    load_image(args.image, channels=None)  # a bad file fails before the model loads
    check_report_path(args.out)
    model = _with_outputs(load_cli_model(args.model, args.batch_size), args.outputs)
    options = {m: method_options(m, args) for m in args.methods}
    options = {m: o for m, o in options.items() if o}
    cmp = compare(model, args.image, methods=args.methods, budget=args.budget, targets=args.target,
                  seed=args.seed, options=options, step=args.step, progress=not args.no_progress,
                  deletion_baseline=None if args.deletion_baseline == "own" else args.deletion_baseline)
    path = cmp.save(args.out)
    if args.json:
        print(json.dumps({"image": args.image, "report": str(path), "top": cmp.top, "rows": cmp.table()}, indent=2))
        return 0
    print(f"{args.image}:")
    for idx, label, p in cmp.top:
        print(f"  {idx:4d}  {label:<28s} {p:.4f}")
    print(f"  {'method':<22s} {'target':<24s} {'evals':>6s} {'seconds':>8s} {'deletion':>9s} {'insertion':>9s}")
    for r in cmp.table():
        print(f"  {r['method']:<22s} {str(r['target']) + ' ' + r['label']:<24.24s} {r['n_evals']:>6d} "
              f"{r['seconds']:>8.2f} {r['deletion_auc']:>9.4f} {r['insertion_auc']:>9.4f}")
    print(f"report -> {path}")
    return 0


def mask_from_image(img):
    """An object mask from a mask picture (H x W x C in [0, 1]): with transparent parts (alpha under 0.5
    somewhere: the object drawn on a transparent background), where it is more opaque than halfway between
    its least and most opaque pixels; else where its colour is light (mean over the colour channels > 0.5:
    white on black)."""
    channels = img.shape[2]
    alpha = img[..., -1] if channels in (2, 4) else None
    if alpha is not None and (alpha < 0.5).any():
        lo, hi = float(alpha.min()), float(alpha.max())
        _warn_if_not_two_toned((alpha - lo) / (hi - lo) if hi > lo else alpha, "opacity")
        return alpha > (lo + hi) / 2
    colour = img[..., : channels - 1] if channels in (2, 4) else img
    light = colour.mean(axis=2)
    _warn_if_not_two_toned(light, "brightness")
    return light > 0.5


#: A mask picture is two-toned: more than this share of pixels halfway between its tones (neither object nor
#: background: a quarter to three quarters of the way) suggests another kind of picture, e.g. a photo.
MIXED_SHARE = 0.2


def _warn_if_not_two_toned(level, what: str) -> None:
    mixed = float(((level > 0.25) & (level < 0.75)).mean())
    if mixed > MIXED_SHARE:
        warnings.warn(f"--mask: {mixed:.0%} of its pixels are of middle {what}, neither object nor background; "
                      f"it is read as a mask all the same (object where the {what} is over halfway): is it a "
                      "mask picture?", UserWarning, stacklevel=3)


def cmd_evaluate(args) -> int:
    import numpy as np

    from . import explain
    from .images import load_image
    from .methods.registry import check_model_for, get_method
    from .metrics import evaluate, object_mask

    if len(args.method) != 1:
        raise ValueError(f"--method: evaluate takes one method, got {', '.join(args.method)}")
    method = args.method[0]
    check_options(args.method, args)
    image = load_image(args.image, channels=None)
    if args.box is not None and args.mask is not None:
        raise ValueError("--box and --mask: give one ground truth, not both")
    truth = args.box
    if args.mask is not None:
        truth = mask_from_image(load_image(args.mask, name="--mask", channels=None))
        if truth.shape != image.shape[:2]:
            raise ValueError(f"--mask: shape {truth.shape} differs from the image's {image.shape[:2]}")
    metrics = list(args.metrics)
    if truth is None and "pointing_game" in metrics:
        raise ValueError("--metrics pointing_game needs --box or --mask")
    if truth is not None:
        try:
            object_mask(truth, *image.shape[:2])  # a bad box or mask fails before any long work
        except ValueError as err:
            message = str(err).removeprefix("truth: ")
            raise ValueError(f"{'--box' if args.mask is None else '--mask'}: {message}") from None
    model = _with_outputs(load_cli_model(args.model, args.batch_size), args.outputs)
    check_model_for(model, [method])
    budget = args.budget if get_method(method).uses_budget else None
    exp = explain(model, image, method=method, target=args.target, seed=args.seed, budget=budget,
                  progress=not args.no_progress, **method_options(method, args))
    results = evaluate(model, image, exp, [m for m in metrics if m != "pointing_game"], truth=truth,
                       step=args.step, seed=args.seed, progress=not args.no_progress)
    if args.json:
        print(json.dumps({
            "image": args.image, "method": exp.method, "target": exp.target, "label": exp.label,
            "score": exp.score, "n_evals": exp.n_evals, "seconds": exp.seconds, "seed": exp.seed,
            "budget": budget, "metrics": {k: v.to_dict() for k, v in results.items()},
        }, indent=2))
        return 0
    print(f"{args.image}: {exp.method}, target {exp.target} '{exp.label}' p={exp.score:.4f}, "
          f"{_evals(exp.n_evals)}, {exp.seconds:.1f} s")
    print(f"  {'metric':<15s} {'score':>8s}  {'better':<7s} {'evals':>6s}  notes")
    for name, r in results.items():
        notes = ""
        if name == "stability":
            notes = f"top-{r.details['top_fraction']:.0%} IoU {r.details['top_iou']:.4f}"
        elif name == "randomization":
            notes = ("SSIM " + " ".join(f"{v:.3f}" for v in np.asarray(r.details["ssim"])[1:])
                     if "ssim" in r.details else "undefined: the map is constant")
        elif name in ("deletion", "insertion"):
            notes = f"baseline {r.details['baseline']}"
        elif name == "pointing_game":
            notes = f"max at (row {r.details['point'][0]}, col {r.details['point'][1]}), {r.details['distance']:.1f} px"
        better = "higher" if r.higher_is_better else "lower"
        print(f"  {name:<15s} {r.score:>8.4f}  {better:<7s} {r.n_evals:>6d}  {notes}")
    return 0


def _table_method(text: str) -> str:
    from .tabular_explain import tabular_methods

    if text not in tabular_methods():
        raise argparse.ArgumentTypeError(f"unknown method {text!r}; available: {', '.join(tabular_methods())}")
    return text


#: what explain-table suggests when the columns do not fit the model and no --label-column was given
LABEL_HINT = "if one of the CSV's columns is the label, drop it with --label-column NAME"


def _label_hint(args) -> str:
    return "" if args.label_column is not None else f"; {LABEL_HINT}"


def _model_columns(model, data, names, background, args):
    """The CSV's columns as the model was fitted on them: an estimator fitted on a DataFrame (its
    ``feature_names_in_``) gets the columns by name, in its order, as a DataFrame (where pandas is installed);
    one that knows only its column count (``n_features_in_``) must get that many. Returns (data, names,
    background)."""
    import numpy as np

    est = getattr(model, "__self__", model)  # a bound method such as clf.predict_proba
    fitted = getattr(est, "feature_names_in_", None)
    count = getattr(est, "n_features_in_", None)
    if fitted is not None:
        fitted = [str(c) for c in fitted]
        missing = [c for c in fitted if c not in names]
        extra = [c for c in names if c not in fitted]
        if missing or extra:
            diff = "; ".join(part for part in (f"{args.csv} lacks {missing}" if missing else "",
                                               f"{args.csv} has {extra} besides" if extra else "") if part)
            raise ValueError(f"the model was fitted on the columns {fitted}; {diff}{_label_hint(args)}")
        order = [names.index(c) for c in fitted]
        data, background = data[:, order], background[:, order]
        try:
            import pandas as pd
        except ImportError:  # the numbers in the fitted order
            return data, fitted, background
        return data, fitted, pd.DataFrame(background, columns=fitted)
    if isinstance(count, (int, np.integer)) and count != len(names):
        raise ValueError(f"the model takes {count} features (its n_features_in_) but {args.csv} has {len(names)} "
                         f"columns {names}{_label_hint(args)}")
    return data, names, background


#: explain_tabular's own arguments, each set by a flag of explain-table or by the CSV (not by -o)
TABLE_ARGUMENTS = {"seed": "--seed", "method": "--method", "budget": "--budget", "target": "--target",
                   "batch_size": "--batch-size", "progress": "--no-progress", "x": "--row",
                   "background": "--background-rows", "feature_names": "the CSV's header", "model_fn": "--model"}


def check_table_options(args) -> None:
    """-o KEY=VALUE for explain-table: a method option or ``categorical_features``/``class_names``; keys that
    a flag sets are refused, naming the flag."""
    check_repeated_options(args)
    for key, _ in args.option or []:
        if key in TABLE_ARGUMENTS:
            raise ValueError(f"-o {key}: set by {TABLE_ARGUMENTS[key]}, not by -o")


def cmd_explain_table(args) -> int:
    """Explain one row of a CSV file against the other rows (the background)."""
    import numpy as np

    from .explanation import make_folder
    from .models.loading import load_object
    from .tabular_explain import explain_tabular, load_csv

    check_table_options(args)
    data, names = load_csv(args.csv, args.label_column, header=not args.no_header)
    out = make_folder(Path(args.out), "--out")  # before the work: a folder that cannot be made loses nothing
    n = len(data)
    if n < 2:
        raise ValueError(f"{args.csv}: one data row; the other rows are the background, so at least 2 are needed")
    if not 0 <= args.row < n:
        raise ValueError(f"--row {args.row}: the file has {n} data rows (0..{n - 1}, the header not counted)")
    background = np.delete(data, args.row, axis=0)
    if args.background_rows is not None:
        if args.background_rows < 1:
            raise ValueError(f"--background-rows: expected a positive int, got {args.background_rows}")
        if args.background_rows < len(background):
            pick = np.random.default_rng(args.seed).choice(len(background), args.background_rows, replace=False)
            background = background[np.sort(pick)]
    model = load_object(args.model)
    data, names, background = _model_columns(model, data, names, background, args)
    exp = explain_tabular(model, data[args.row], background=background, method=args.method, target=args.target,
                          feature_names=names, seed=args.seed, budget=args.budget, batch_size=args.batch_size,
                          progress=not args.no_progress, **dict(args.option or []))
    base = out / f"{Path(args.csv).stem}_row{args.row}_{exp.method}"
    exp.save(f"{base}.npz")
    exp.plot(f"{base}.png")
    order = np.argsort(-np.abs(exp.weights), kind="stable")
    if args.json:
        print(json.dumps({
            "csv": args.csv, "row": args.row, "method": exp.method, "target": exp.target, "label": exp.label,
            "score": exp.score, "base_value": exp.extras.get("base_value"), "n_evals": exp.n_evals,
            "seconds": exp.seconds, "seed": exp.seed, "background_rows": len(background),
            "features": [{"name": names[i], "value": float(exp.values[i]), "weight": float(exp.weights[i])}
                         for i in order],
            "files": [f"{base}{s}" for s in (".png", ".npz", ".json")],
        }, indent=2))
        return 0
    print(f"{args.csv} row {args.row}: {exp.method}, target {exp.target} '{exp.label}' score={exp.score:.4g}, "
          f"{_evals(exp.n_evals)}, {exp.seconds:.2f} s, {len(background)} background rows")
    width = max(len(names[i]) for i in order[: args.top])
    for i in order[: args.top]:
        print(f"  {names[i]:<{width}s} = {exp.values[i]:<12.6g} {exp.weights[i]:+.6g}")
    print(f"  -> {base}.png/.npz/.json")
    return 0


MAX_PIXELS_HELP = ("decode image files of up to N pixels (default: Pillow's decompression-bomb limit, about 89 "
                   "million); for a large file you trust")


@contextlib.contextmanager
def _image_limit(args):
    """``--max-pixels``: Pillow's decompression-bomb limit for this command's image files (the previous limit
    back afterwards, for a program that calls :func:`main`)."""
    if getattr(args, "max_pixels", None) is None:
        yield
        return
    from PIL import Image

    before, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, args.max_pixels
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = before


MODEL_HELP = ("'default' (EfficientNet-Lite0), module:attribute (your Model, torch module, callable or factory), or "
              "a .pt2 (torch.export), TorchScript or .onnx (ONNX Runtime) file")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="unveil", description="Explain why a neural network made a prediction.")
    parser.add_argument("--version", action="version", version=f"unveil {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("explain", help="explain images; writes PNG + .npz + .json per image and method")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--method", type=_method_list, default=[DEFAULT_METHOD],
                   help=f"method or comma-separated methods (default {DEFAULT_METHOD}, as unveil.explain)")
    p.add_argument("--model", default="default", help=MODEL_HELP)
    p.add_argument("--outputs", choices=OUTPUT_KINDS, default=None, help=OUTPUTS_HELP)
    p.add_argument("--target", default=None, help="class number or name (default: top class)")
    p.add_argument("--samples", type=_positive_int, default=None, help=SAMPLES_HELP)
    p.add_argument("--budget", type=_positive_int, default=None, help="most model evaluations per perturbation method")
    p.add_argument("--option", "-o", type=_option, action="append", metavar="KEY=VALUE",
                   help="a method option, e.g. -o n_features=30 -o surrogate=tree (repeatable)")
    p.add_argument("--seed", type=_seed, default=0, help="random seed, an int from 0 to 2**63 - 1 (default 0)")
    p.add_argument("--batch-size", type=_batch_size, default="auto", help="int or 'auto' (default)")
    p.add_argument("--out", default="results", help="output folder (default results/)")
    p.add_argument("--max-pixels", type=_positive_int, default=None, metavar="N", help=MAX_PIXELS_HELP)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("methods", help="list the registered methods")
    p.add_argument("--json", action="store_true", help="names, families, descriptions and options with defaults")
    p.add_argument("--tables", action="store_true", help="the table methods (unveil explain-table) instead")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser("compare", help="compare methods on one image; writes a self-contained HTML report")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--methods", type=_method_list, default=["lime", "occlusion"],
                   help="comma-separated methods (default lime,occlusion)")
    p.add_argument("--model", default="default", help=MODEL_HELP)
    p.add_argument("--outputs", choices=OUTPUT_KINDS, default=None, help=OUTPUTS_HELP)
    p.add_argument("--target", action="append", default=None,
                   help="class number or name (repeatable: two targets show the classes side by side)")
    p.add_argument("--budget", type=_positive_int, default=None, help="most model evaluations per perturbation method")
    p.add_argument("--samples", type=_positive_int, default=None, help=SAMPLES_HELP)
    p.add_argument("--option", "-o", type=_option, action="append", metavar="KEY=VALUE",
                   help="a method option, given to every chosen method that has it (repeatable)")
    p.add_argument("--deletion-baseline", default="mean", metavar="NAME",
                   help="what deleted pixels become for every method (default mean: the image's mean colour; a "
                        "baseline name or image file; 'own': each method's own baseline)")
    p.add_argument("--step", type=_float_or_int, default=1 / 50,
                   help="deletion/insertion step: fraction of the image or int pixels (default 0.02)")
    p.add_argument("--seed", type=_seed, default=0, help="random seed, an int from 0 to 2**63 - 1 (default 0)")
    p.add_argument("--batch-size", type=_batch_size, default="auto", help="int or 'auto' (default)")
    p.add_argument("--out", default="report.html", help="the HTML report (default report.html)")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.add_argument("--max-pixels", type=_positive_int, default=None, metavar="N", help=MAX_PIXELS_HELP)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("evaluate", help="explain one image and print the metrics (deletion, insertion, ...)")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--method", type=_method_list, default=[DEFAULT_METHOD],
                   help=f"the method (default {DEFAULT_METHOD}, as unveil.explain)")
    p.add_argument("--metrics", type=_metric_list, default=["deletion", "insertion"],
                   help="comma-separated: deletion,insertion,randomization,stability,pointing_game "
                        "(default deletion,insertion)")
    p.add_argument("--model", default="default", help=MODEL_HELP)
    p.add_argument("--outputs", choices=OUTPUT_KINDS, default=None, help=OUTPUTS_HELP)
    p.add_argument("--target", default=None, help="class number or name (default: top class)")
    p.add_argument("--budget", type=_positive_int, default=None, help="most model evaluations (perturbation methods)")
    p.add_argument("--samples", type=_positive_int, default=None, help=SAMPLES_HELP)
    p.add_argument("--option", "-o", type=_option, action="append", metavar="KEY=VALUE",
                   help="a method option, e.g. -o n_features=30 (repeatable)")
    p.add_argument("--step", type=_float_or_int, default=1 / 50,
                   help="deletion/insertion step: fraction of the image or int pixels (default 0.02)")
    p.add_argument("--box", type=_box, default=None, metavar="X0,Y0,X1,Y1",
                   help="object box in image pixels: adds the pointing game")
    p.add_argument("--mask", default=None, help="object mask image (white = object; with transparency, opaque = "
                   "object): adds the pointing game")
    p.add_argument("--seed", type=_seed, default=0, help="random seed, an int from 0 to 2**63 - 1 (default 0)")
    p.add_argument("--batch-size", type=_batch_size, default="auto", help="int or 'auto' (default)")
    p.add_argument("--json", action="store_true", help="print the results as JSON (curves included)")
    p.add_argument("--max-pixels", type=_positive_int, default=None, metavar="N", help=MAX_PIXELS_HELP)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("explain-table", help="explain one row of a CSV file (the other rows are the background)")
    p.add_argument("csv", metavar="CSV", help="header row = feature names, then one row of numbers per line")
    p.add_argument("--no-header", action="store_true",
                   help="the CSV has no header row: every line is data and the features are named x0, x1, ...")
    p.add_argument("--row", type=int, required=True, help="the data row to explain (0 = the first after the header)")
    p.add_argument("--model", required=True,
                   help="module:attribute or file.py:attribute: a callable rows -> scores, an estimator with "
                        "predict_proba/predict, a torch module, or a factory returning one")
    p.add_argument("--method", type=_table_method, default=DEFAULT_TABULAR_METHOD,
                   help=f"a tabular method (default {DEFAULT_TABULAR_METHOD}; unveil methods --tables lists them)")
    p.add_argument("--target", default=None,
                   help="class name or output number (default: top); a class name wins, so for an estimator with "
                        "classes 1 and 2, --target 2 is the class named 2 (output 1)")
    p.add_argument("--label-column", default=None, metavar="NAME",
                   help="a column to drop (e.g. the label); with --no-header x0, x1, ...")
    p.add_argument("--background-rows", type=_positive_int, default=None, metavar="K",
                   help="use K of the other rows as background, drawn with --seed (default: all of them)")
    p.add_argument("--budget", type=_positive_int, default=None, help="most model evaluations (rows), the row included")
    p.add_argument("--option", "-o", type=_option, action="append", metavar="KEY=VALUE",
                   help="a method option, e.g. -o num_samples=2000 -o baseline=background, or -o "
                        "categorical_features=[0,3] / -o 'class_names=[\"no\",\"yes\"]' (repeatable)")
    p.add_argument("--seed", type=_seed, default=0, help="random seed, an int from 0 to 2**63 - 1 (default 0)")
    p.add_argument("--batch-size", type=_positive_int, default=None, help="most rows in one call of the model (an int)")
    p.add_argument("--top", type=_positive_int, default=10,
                   help="features printed, largest |weight| first (default 10)")
    p.add_argument("--out", default="results", help="output folder (default results/)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_explain_table)
    return parser


@contextlib.contextmanager
def _plain_warnings():
    """Warnings printed as ``unveil: warning: ...`` (not with a line of the library's source); a recording
    ``catch_warnings`` (tests) still records them."""
    formatted = warnings.formatwarning

    def plain(message, category, filename, lineno, line=None):
        return f"unveil: warning: {message}\n"

    warnings.formatwarning = plain
    try:
        yield
    finally:
        warnings.formatwarning = formatted


def _innermost(err: BaseException) -> str:
    """", at file:line" where the model raised ``err`` (see :func:`unveil.checks.origin_frame`: numpy, torch
    and the like passed over), or "" when no such frame is known."""
    from .checks import origin_frame

    frame = origin_frame(err)
    return f", at {frame.filename}:{frame.lineno}" if frame else ""


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .tuning import tune_cpu

    tune_cpu()  # the command owns its process: take the fast allocator path
    try:
        with _plain_warnings(), _image_limit(args):
            return args.func(args)
    except BrokenPipeError:  # the reader went away (`unveil methods | head`): stop quietly, as other tools do
        import os

        try:  # no second error when the interpreter flushes stdout at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):  # a stdout with no file descriptor
            pass
        return 1
    except Exception as err:
        return _report(err, args)


def _report(err: Exception, args) -> int:
    """The command's one-line error for ``err`` and its exit status (an unexpected exception is re-raised)."""
    from .checks import MODEL_FAILED

    blamed = getattr(err, MODEL_FAILED, None)
    if blamed is not None:  # raised inside the user's model
        hint = f" ({LABEL_HINT})" if args.command == "explain-table" and args.label_column is None else ""
        print(f"unveil: error: the model {blamed}{_innermost(err)}: {type(err).__name__}: {err}{hint}",
              file=sys.stderr)
        return 1
    if isinstance(err, (ValueError, TypeError)):
        print(f"unveil: error: {err}", file=sys.stderr)
        return 2
    if isinstance(err, OSError):  # writing results: no space, no permission, ...
        where = f" {err.filename}" if err.filename else ""
        print(f"unveil: error:{where} {err.strerror or err}", file=sys.stderr)
        return 1
    raise err


if __name__ == "__main__":
    sys.exit(main())
