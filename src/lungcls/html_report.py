"""``lungcls report``: one self-contained HTML page for a run, a bundle, the demo or the study.

Everything is embedded (figures as PNG data URIs, tables as HTML), nothing is fetched and no
JavaScript is needed to read it, so the page can be mailed, archived or opened offline. It shows
what the folder holds, in this order: the model card's warnings, learning curves, the reference
tables (``eval_*.md``) with per-source accuracy, confusion matrices, reliability diagrams, stage-1
outline grids with Dice, Grad-CAM grids with in-lung shares, and any other figure.
"""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

from .atomic import write_text
from .errors import LungclsError
from .model_card import warnings_for
from .output_policy import check_file
from .plots import curves_figure, figure_png

#: figure file patterns, in the order they appear on the page, with their section titles
SECTIONS = (
    ("Learning curves", ("curves*.png",)),
    ("Confusion matrices", ("confusion*.png",)),
    ("Calibration (reliability diagrams)", ("reliability*.png",)),
    (
        "Stage 1: lung outlines (green predicted, red ground truth)",
        ("outlines*.png", "segmentation*.png", "stage1*.png"),
    ),
    ("Grad-CAM", ("gradcam*.png", "cam_*.png", "test_grid*.png")),
)
CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #444}h2{margin-top:2em;border-bottom:1px solid #bbb}h3{margin-top:1.4em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #bbb;padding:.25em .6em;text-align:right}
td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #ddd;margin:.4em 0}
.warn{background:#fff3cd;border:1px solid #e0b000;padding:.6em 1em}.note{color:#555;font-size:.9em}
figure{margin:1em 0}figcaption{color:#555;font-size:.9em}"""


def write_html_report(
    folder: str | Path, out: str | Path | None = None, title: str | None = None, force: bool = False
) -> Path:
    """Write the page for ``folder`` (default ``folder/report.html``) and return its path; an existing page is
    replaced only with ``force`` (see :mod:`lungcls.output_policy`).

    Raises:
        LungclsError: ``folder`` holds nothing to report (no figures, tables, history or config), or the page
            is in the way.
    """
    folder = Path(folder)
    out = check_file(Path(out) if out is not None else folder / "report.html", force)
    write_text(out, render(folder, title))
    return out


def render(folder: Path, title: str | None = None) -> str:
    """The page's HTML for ``folder`` (and the run folders directly inside it)."""
    folders = [folder] + sorted(p for p in folder.iterdir() if p.is_dir() and _interesting(p))
    body: list[str] = []
    for f in folders:
        part = _folder_section(f, top=f == folder)
        if part:
            body.append(part)
    if not body:
        raise LungclsError(
            f"{folder}: nothing to report (expects a run folder, a bundle, the demo's or the study's output)"
        )
    heading = html.escape(title or f"lungcls report: {folder.resolve().name}")
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{heading}</title><style>{CSS}</style>"
        f"</head><body><h1>{heading}</h1><p class='note'>Research use only: lungcls is not a diagnostic device. "
        "All figures and tables below are embedded in this file.</p>" + "".join(body) + "</body></html>\n"
    )


def _interesting(p: Path) -> bool:
    return (
        any(p.glob("*.png"))
        or any(p.glob("eval_*.md"))
        or (p / "config.json").is_file()
        or (p / "report.md").is_file()
        or (p / "decisions.md").is_file()
    )


def _folder_section(folder: Path, top: bool) -> str:
    parts: list[str] = []
    card = folder / "MODEL_CARD.md"
    config = _json(folder / "config.json")
    if card.is_file():
        warnings = [line.strip("> ").strip("*") for line in card.read_text().splitlines() if "WARNING" in line]
        parts += [f"<p class='warn'>{html.escape(w)}</p>" for w in warnings]
    elif config.get("kind") in ("segmenter", "classifier"):
        parts += [f"<p class='warn'>WARNING: {html.escape(w)}.</p>" for w in warnings_for(config, config["kind"])]
    if config:
        parts.append(_config_summary(config))
    for md in ("report.md", "decisions.md"):
        if (folder / md).is_file():
            parts.append(markdown_to_html((folder / md).read_text(), skip_title=md == "report.md"))
    history = _json_list(folder / "history.json")
    if history and not list(folder.glob("curves*.png")):
        parts.append(_figure(figure_png(curves_figure({folder.name: history})), "learning curves (from history.json)"))
    for md in sorted(folder.glob("eval_*.md")):
        parts.append(f"<h3>{html.escape(md.stem)}</h3>" + markdown_to_html(md.read_text()))
    shown: set[Path] = set()
    for section, patterns in SECTIONS:
        pngs = [p for pat in patterns for p in sorted(folder.glob(pat)) if p not in shown]
        if pngs:
            parts.append(f"<h3>{section}</h3>" + "".join(_figure(p.read_bytes(), p.name) for p in pngs))
            shown.update(pngs)
    others = [p for p in sorted(folder.glob("*.png")) if p not in shown]
    if others:
        parts.append("<h3>Other figures</h3>" + "".join(_figure(p.read_bytes(), p.name) for p in others))
    if not parts:
        return ""
    name = "" if top else f"<h2>{html.escape(folder.name)}</h2>"
    return name + "".join(parts)


def _config_summary(config: dict) -> str:
    kind = config.get("kind", "?")
    model, data, train = config.get("model", {}), config.get("data", {}), config.get("train", {})
    arch = model.get("arch") if model.get("arch") != "unet" else f"U-Net ({model.get('encoder_name')})"
    rows = [
        ("kind", kind),
        ("model", f"{arch} at {model.get('image_size')} px" + (f", input {model['mode']}" if "mode" in model else "")),
        ("data", ", ".join(data.get("sources", [])) or "?"),
        ("images", ", ".join(f"{k[:-7]} {v}" for k, v in data.items() if k.endswith("_images"))),
        (
            "training",
            f"{train.get('epochs', '?')} epochs, batch {train.get('batch_size', '?')}, lr {train.get('lr', '?')}, "
            f"seed {train.get('seed', '?')}",
        ),
        (
            "best",
            ", ".join(
                f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in config.get("metrics", {}).items()
            ),
        ),
    ]
    return (
        "<table>"
        + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
        + "</table>"
    )


def _figure(png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def markdown_to_html(text: str, skip_title: bool = False) -> str:
    """The Markdown lungcls writes (headings, paragraphs, lists, pipe tables, bold, code) as HTML."""
    out, table, para = [], [], []

    def flush() -> None:
        if table:
            out.append(_table(table))
            table.clear()
        if para:
            out.append("<p>" + " ".join(para) + "</p>")
            para.clear()

    for line in text.splitlines():
        s = line.strip()
        if s.startswith("|"):
            if para:
                flush()
            table.append(s)
            continue
        flush()
        if not s:
            continue
        m = re.match(r"(#{1,4})\s+(.*)", s)
        if m:
            if skip_title and len(m.group(1)) == 1:
                continue
            level = min(4, len(m.group(1)) + 1)
            out.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
        elif s.startswith(("- ", "* ")):
            out.append(f"<ul><li>{_inline(s[2:])}</li></ul>")
        else:
            para.append(_inline(s.lstrip("> ")))
    flush()
    return "".join(out).replace("</ul><ul>", "")


def _table(lines: list[str]) -> str:
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    rows = [r for r in rows if not all(re.fullmatch(r":?-{3,}:?", c) for c in r if c)]
    if not rows:
        return ""
    head, body = rows[0], rows[1:]
    return (
        "<table><tr>"
        + "".join(f"<th>{_inline(c)}</th>" for c in head)
        + "</tr>"
        + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body)
        + "</table>"
    )


def _inline(s: str) -> str:
    s = html.escape(s)
    s = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", s)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", s)


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _json_list(path: Path) -> list:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, list) else []
    except (OSError, ValueError):
        return []
