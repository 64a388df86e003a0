"""The HTML comparison report: one self-contained file (images inline as base64 PNG, no network references).

Contents: the input with the model's top-5 classes; a summary table; one section per method (overlay, top-k
mask, n_evals, seconds, deletion and insertion AUC, per target); the deletion and the insertion curves of all
methods on one plot each; with two or more targets, the classes' maps side by side.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from . import __version__
from .viz import literal_text

__all__ = ["render_html", "write_report", "png_data_uri"]

#: longest side, in pixels, of the pictures embedded in the report.
MAX_SIDE = 320

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:1.5em;margin-bottom:4px}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
h3{font-size:1.0em;margin:10px 0 4px}.meta{color:#666;font-size:.9em}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;font-size:.9em}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.row{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}figure{margin:0}figcaption{font-size:.8em;color:#555}
img{display:block;max-width:100%}.best{font-weight:bold}
"""


def _esc(text) -> str:
    return html.escape(str(text), quote=True)


def _thumbnail(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    scale = MAX_SIDE / max(h, w)
    if scale >= 1:
        return img
    from .images import resize

    return resize(img, (max(1, round(h * scale)), max(1, round(w * scale))))


def png_data_uri(img: np.ndarray | bytes) -> str:
    """``data:image/png;base64,...`` for PNG bytes or an H x W (x 3) float image in [0, 1] (shrunk to MAX_SIDE)."""
    if not isinstance(img, (bytes, bytearray)):
        from PIL import Image

        from .images import rgb_projection

        arr = np.asarray(img, dtype=np.float32)
        arr = _thumbnail(rgb_projection(arr) if arr.ndim == 3 else arr)
        arr = np.clip(np.round(arr * 255.0), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG", optimize=True)
        img = buf.getvalue()
    return "data:image/png;base64," + base64.b64encode(bytes(img)).decode("ascii")


def _img(src_array, alt: str, caption: str | None = None) -> str:
    cap = f"<figcaption>{_esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{png_data_uri(src_array)}" alt="{_esc(alt)}">{cap}</figure>'


def _mask_picture(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image where ``mask`` holds, a dark gray veil elsewhere."""
    from .images import rgb_projection

    image = rgb_projection(image)
    gray = image.mean(axis=2, keepdims=True)
    veiled = 0.15 + 0.25 * gray
    return np.where(mask[..., None], image, np.broadcast_to(veiled, image.shape)).astype(np.float32)


@literal_text
def _curves_png(cmp, kind: str, t: int) -> bytes:
    from matplotlib.figure import Figure

    from .viz import figure_to_png

    fig = Figure(figsize=(5.2, 3.6))
    ax = fig.subplots()
    for e in cmp.entries:
        r = getattr(e, kind)[t]
        ax.plot(r.x, r.y, label=f"{e.method} (AUC {r.score:.3f})", linewidth=1.6)
    if cmp.floor:
        r = cmp.floor[t][0 if kind == "deletion" else 1]
        ax.plot(r.x, r.y, "k--", label=f"random regions (AUC {r.score:.3f})", linewidth=1.0)
    first = getattr(cmp.entries[0], kind)[t]
    ax.set_xlabel(first.x_label)
    ax.set_ylabel(first.y_label)
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    better = "lower" if kind == "deletion" else "higher"
    ax.set_title(f"{kind} ({better} AUC is better): {cmp.labels[t]}", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return figure_to_png(fig)


def _fmt(v: float) -> str:
    return f"{v:.4f}"


def _summary(cmp) -> str:
    rows = []
    for t, label in enumerate(cmp.labels):
        dels = [e.deletion[t].score for e in cmp.entries]
        ins = [e.insertion[t].score for e in cmp.entries]
        for e, d, i in zip(cmp.entries, dels, ins):
            exp = e.explanations[t]
            rows.append(
                f"<tr><td><a href='#method-{_esc(e.method)}'>{_esc(e.method)}</a></td><td>{_esc(label)}</td>"
                f"<td class='num'>{exp.n_evals}</td><td class='num'>{exp.seconds:.2f}</td>"
                f"<td class='num{' best' if d == min(dels) else ''}'>{_fmt(d)}</td>"
                f"<td class='num{' best' if i == max(ins) else ''}'>{_fmt(i)}</td></tr>"
            )
        if cmp.floor:
            d, i = cmp.floor[t]
            rows.append(f"<tr><td><i>random regions</i></td><td>{_esc(label)}</td><td class='num'>-</td>"
                        f"<td class='num'>-</td><td class='num'>{_fmt(d.score)}</td>"
                        f"<td class='num'>{_fmt(i.score)}</td></tr>")
    return (
        "<table class='summary'><tr><th>method</th><th>target</th><th>n_evals</th><th>seconds</th>"
        "<th>deletion AUC (lower is better)</th><th>insertion AUC (higher is better)</th></tr>"
        + "".join(rows) + "</table>"
    )


def _method_section(cmp, e) -> str:
    from .viz import overlay

    parts = [f"<section class='method' id='method-{_esc(e.method)}'><h2>{_esc(e.method)}</h2>"]
    for t, exp in enumerate(e.explanations):
        mask = cmp.top_mask(exp)
        if exp.segments is not None and exp.weights is not None:
            what = f"top {min(cmp.top_k, len(exp.weights))} segments"
        else:
            what = f"top {cmp.top_fraction:.0%} of pixels"
        d, i = e.deletion[t], e.insertion[t]
        params = ", ".join(_option_text(k, v, exp.extras) for k, v in exp.params.items()
                           if not isinstance(v, np.ndarray))
        parts.append(
            f"<h3>target {exp.target}: {_esc(exp.label)} (p = {exp.score:.4f})</h3><div class='row'>"
            + _img(overlay(exp, max_side=MAX_SIDE), f"{e.method} overlay",
                   "overlay (red supports the target, blue opposes)")
            + _img(_mask_picture(exp.image, mask), f"{e.method} top mask", what)
            + "<table>"
            f"<tr><th>n_evals</th><td class='num'>{exp.n_evals}</td></tr>"
            f"<tr><th>seconds</th><td class='num'>{exp.seconds:.3f}</td></tr>"
            f"<tr><th>deletion AUC</th><td class='num'>{_fmt(d.score)}</td></tr>"
            f"<tr><th>insertion AUC</th><td class='num'>{_fmt(i.score)}</td></tr>"
            f"<tr><th>deletion baseline</th><td>{_esc(d.details.get('baseline', ''))}</td></tr>"
            f"<tr><th>seed</th><td class='num'>{exp.seed}</td></tr>"
            f"<tr><th>options</th><td style='max-width:380px;word-break:break-word'>{_esc(params)}</td></tr>"
            "</table></div>"
        )
    parts.append("</section>")
    return "".join(parts)


def _class_comparison(cmp) -> str:
    from .viz import overlay

    head = "".join(f"<th>{_esc(t)}: {_esc(lab)}</th>" for t, lab in zip(cmp.targets, cmp.labels))
    rows = []
    for e in cmp.entries:
        cells = "".join(f"<td>{_img(overlay(exp, max_side=MAX_SIDE), f'{e.method} {exp.label}')}</td>"
                        for exp in e.explanations)
        rows.append(f"<tr><th>{_esc(e.method)}</th>{cells}</tr>")
    return (
        "<section id='classes'><h2>Class comparison</h2><p class='meta'>The same method's maps for each class, "
        "side by side.</p><table><tr><th>method</th>" + head + "</tr>" + "".join(rows) + "</table></section>"
    )


def _deletion_to(cmp) -> str:
    """What deleted pixels became, from the deletion results: one baseline for every method, or each its own."""
    used = {str(d.details.get("baseline")) for e in cmp.entries for d in e.deletion}
    return f"to the baseline {used.pop()!r}" if len(used) == 1 else "to each method's own baseline"


def _option_text(key: str, value, extras: dict) -> str:
    """``key=value`` as asked, with what the method used when it differs (e.g. samples cut by a budget)."""
    used = extras.get(key) if isinstance(extras, dict) else None
    if used is not None and value is not None and not isinstance(used, (np.ndarray, list, dict)) and used != value:
        return f"{key}={value!r} ({used!r} used)"
    return f"{key}={value!r}"


def _left_out(cmp) -> str:
    """A list of the methods that could not run, with why (empty when all ran)."""
    failed = getattr(cmp, "failed", None) or {}
    if not failed:
        return ""
    items = "".join(f"<li><b>{_esc(name)}</b>: {_esc(why)}</li>" for name, why in failed.items())
    return f"<p class='meta'>Left out (could not run on this model or with these options):</p><ul>{items}</ul>"


def render_html(cmp) -> str:
    """The report of a :class:`unveil.compare.Comparison` as one HTML string."""
    top_rows = "".join(
        f"<tr><td class='num'>{i}</td><td>{_esc(lab)}</td><td class='num'>{p:.4f}</td></tr>" for i, lab, p in cmp.top
    )
    title = f"unveil comparison{': ' + Path(cmp.image_name).name if cmp.image_name else ''}"
    budget = "none" if cmp.budget is None else f"{cmp.budget} evaluations per perturbation method"
    curves = []
    for t, label in enumerate(cmp.labels):
        curves.append(
            "<div class='row'>"
            + _img(_curves_png(cmp, "deletion", t), f"deletion curves {label}")
            + _img(_curves_png(cmp, "insertion", t), f"insertion curves {label}")
            + "</div>"
        )
    body = [
        f"<h1>{_esc(title)}</h1>",
        f"<p class='meta'>model {_esc(cmp.model_name)} · budget {_esc(budget)} · seed {cmp.seed} · "
        f"targets {_esc(', '.join(f'{t} ({lab})' for t, lab in zip(cmp.targets, cmp.labels)))} · "
        f"unveil {_esc(__version__)}</p>",
        "<section id='input'><h2>Input</h2><div class='row'>",
        _img(cmp.image, "input image"),
        "<table><tr><th>class</th><th>label</th><th>probability</th></tr>" + top_rows + "</table></div></section>",
        "<section id='summary'><h2>Summary</h2>" + _summary(cmp) + _left_out(cmp) + "</section>",
        "<section id='curves'><h2>Deletion and insertion curves</h2><p class='meta'>Deletion removes the most "
        f"important pixels first ({_esc(_deletion_to(cmp))}); insertion adds them to a blurred copy. All "
        "methods on one plot each.</p>" + "".join(curves) + "</section>",
    ]
    if len(cmp.targets) > 1:
        body.append(_class_comparison(cmp))
    body.extend(_method_section(cmp, e) for e in cmp.entries)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
        + "\n".join(body) + "</body></html>\n"
    )


def check_report_path(path: str | Path) -> Path:
    """``path`` as a Path whose folder exists (created) and that is not a folder itself; a ValueError says
    why otherwise."""
    from .explanation import make_folder

    path = Path(path)
    if path.is_dir():
        raise ValueError(f"report path {path} is a folder; give a file name such as {path / 'report.html'}")
    make_folder(path.parent, "report folder")
    return path


def write_report(cmp, path: str | Path) -> Path:
    """Write :func:`render_html` of ``cmp`` to ``path`` (folders created); return the path."""
    path = check_report_path(path)
    path.write_text(render_html(cmp), encoding="utf-8")
    return path
