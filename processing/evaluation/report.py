"""report.html of predict.py: one self-contained page a person can read, offline.

The page holds the model and the decision used, the counts, a histogram of the image scores with
the threshold drawn (a PNG made with matplotlib beside the page) and a gallery of overlays, most
suspicious first, each linking to the full image. Every link is relative, there is no script and
nothing is fetched from the network, so the folder can be zipped and opened anywhere (the links to
the original images hold as long as the images stay where they were, relative to the folder).

Everything written into the page is untrusted (file names, CSV values, settings): text and attribute
values go through :func:`html.escape` (attributes always double-quoted), and every ``src``/``href``
is a relative URL made by :func:`url_of` (percent-encoded, starting with ``./`` or ``../``), so a
file named ``x" onerror="....png`` or ``javascript:....png`` is shown as its name and nothing runs.
"""

from __future__ import annotations

import html
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np

from autoencoder.folders import write_bytes_atomic

#: Colours of the histogram: good and defective verdicts, and the threshold.
GOOD_COLOR = "#4c9a6a"
DEFECT_COLOR = "#c8433a"
THRESHOLD_COLOR = "#222222"


@dataclass
class GalleryItem:
    path: str  # as in predictions.csv
    score: float
    defective: bool
    thumbnail: str | None  # URL (url_of) relative to the report's folder
    link: str | None  # URL of the full overlay (or the original image), relative to the report's folder
    image_link: str | None  # URL of the original image, relative to the report's folder
    area: int | None = None
    heatmap: str | None = None  # URL of the heat-map thumbnail (the anomaly map, the threshold's contour in white)


@dataclass
class ReportData:
    title: str
    model: list[tuple[str, str]]  # (what, value) rows about the model
    decision: list[tuple[str, str]]  # (what, value) rows about the decision
    counts: dict[str, int]  # images, defective, good, failed
    histogram: str | None  # URL (url_of) of the histogram PNG
    gallery: list[GalleryItem] = field(default_factory=list)
    gallery_of: int = 0  # how many scored images the gallery picks from
    failures: list[tuple[str, str]] = field(default_factory=list)  # (path, error), the first few
    links: list[tuple[str, str]] = field(default_factory=list)  # (label, URL made by url_of)
    notes: list[str] = field(default_factory=list)


def url_of(relative: str | os.PathLike) -> str:
    """A relative path as a URL for href/src that can only ever name a file: every character but
    letters, digits, ``/`` and ``_.-~`` percent-encoded (no ``javascript:`` or other scheme survives,
    no quote or ``<`` either), and ``./`` in front unless it starts with ``../`` (never an absolute or
    a network ``//host`` URL)."""
    text = quote(Path(relative).as_posix(), safe="/")
    return text if text.startswith(("./", "../")) else "./" + text


def relative_link(target: str | os.PathLike, folder: str | os.PathLike) -> str:
    """The URL (:func:`url_of`) of `target` relative to `folder`."""
    return url_of(os.path.relpath(os.path.abspath(target), os.path.abspath(folder)))


def _attr(value) -> str:
    """A double-quoted attribute value."""
    return '"' + html.escape(str(value), quote=True) + '"'


def score_histogram(scores: np.ndarray, defective: np.ndarray, threshold: float | None, path: Path, bins: int = 40) -> Path:
    """A histogram of the image scores, good and defective verdicts stacked, the threshold as a line."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    scores = np.asarray(scores, dtype=np.float64)
    defective = np.asarray(defective, dtype=bool)
    finite = np.isfinite(scores)
    scores, defective = scores[finite], defective[finite]
    figure = Figure(figsize=(8, 3.2), dpi=100)
    axes = figure.add_subplot()
    if len(scores):
        low, high = float(scores.min()), float(scores.max())
        if threshold is not None and math.isfinite(threshold):
            low, high = min(low, threshold), max(high, threshold)
        if high <= low:
            low, high = low - 0.5, high + 0.5
        edges = np.linspace(low, high, bins + 1)
        axes.hist([scores[~defective], scores[defective]], bins=edges, stacked=True,
                  color=[GOOD_COLOR, DEFECT_COLOR], label=[f"good ({int((~defective).sum())})", f"defective ({int(defective.sum())})"])
    if threshold is not None and math.isfinite(threshold):
        axes.axvline(threshold, color=THRESHOLD_COLOR, linestyle="--", linewidth=1.5, label=f"threshold {threshold:.4g}")
    axes.set_xlabel("image score (higher = more anomalous)")
    axes.set_ylabel("images")
    from matplotlib.ticker import MaxNLocator

    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.legend(loc="best", frameon=True, framealpha=0.9)
    axes.spines[["top", "right"]].set_visible(False)
    figure.tight_layout()
    from io import BytesIO

    buffer = BytesIO()
    figure.savefig(buffer, format="png")
    return write_bytes_atomic(path, buffer.getvalue())


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px auto; max-width: 1200px;
       color: #222; padding: 0 16px; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.sub { color: #666; margin-top: 0; }
.cols { display: flex; gap: 32px; flex-wrap: wrap; }
table.kv { border-collapse: collapse; font-size: 0.92em; }
table.kv td { padding: 2px 12px 2px 0; vertical-align: top; }
table.kv td:first-child { color: #666; white-space: nowrap; }
.counts { display: flex; gap: 16px; flex-wrap: wrap; margin: 8px 0; }
.count { border: 1px solid #ddd; border-radius: 6px; padding: 8px 16px; min-width: 90px; }
.count b { display: block; font-size: 1.6em; }
.count.defective b { color: #c8433a; } .count.good b { color: #2f7a4d; } .count.failed b { color: #a36a00; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 12px; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 6px; font-size: 0.8em; overflow-wrap: anywhere; }
.card.defective { border-color: #c8433a; box-shadow: inset 0 3px 0 #c8433a; }
.card img { width: 100%; height: 170px; object-fit: contain; background: #f4f4f4; display: block; }
.pair { display: flex; gap: 4px; } .pair > * { flex: 1 1 50%; min-width: 0; }
.card .score { font-weight: 600; font-size: 1.1em; }
.verdict { float: right; } .card.defective .verdict { color: #c8433a; font-weight: 600; } .card .verdict { color: #2f7a4d; }
.missing { height: 170px; display: flex; align-items: center; justify-content: center; background: #f4f4f4; color: #999; }
table.failures { border-collapse: collapse; font-size: 0.85em; } table.failures td { padding: 2px 12px 2px 0; }
.note { color: #666; font-size: 0.9em; }
"""


def _rows(rows: list[tuple[str, str]]) -> str:
    return "\n".join(f"<tr><td>{html.escape(str(key))}</td><td>{html.escape(str(value))}</td></tr>" for key, value in rows)


def render(data: ReportData) -> str:
    """The page as a string."""
    counts = data.counts
    total = max(counts.get("images", 0), 1)
    boxes = []
    for key, label in (("images", "images"), ("defective", "defective"), ("good", "good"), ("failed", "failed")):
        value = counts.get(key, 0)
        share = "" if key == "images" else f" ({100 * value / total:.1f}%)"
        boxes.append(f'<div class="count {key}"><b>{value}</b>{label}{share}</div>')
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(data.title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(data.title)}</h1>",
        '<p class="sub">' + " · ".join(f"<a href={_attr(href)}>{html.escape(label)}</a>" for label, href in data.links) + "</p>",
        '<div class="counts">' + "".join(boxes) + "</div>",
        '<div class="cols">',
        f'<div><h2>Model</h2><table class="kv">{_rows(data.model)}</table></div>',
        f'<div><h2>Decision</h2><table class="kv">{_rows(data.decision)}</table></div>',
        "</div>",
        "<h2>Image scores</h2>",
    ]
    if data.histogram:
        parts.append(f'<img src={_attr(data.histogram)} alt="histogram of the image scores with the threshold" style="max-width:100%">')
    else:
        parts.append('<p class="note">No image was scored.</p>')
    for note in data.notes:
        parts.append(f'<p class="note">{html.escape(note)}</p>')
    parts.append(f"<h2>Most suspicious first ({len(data.gallery)} of {data.gallery_of} scored images)</h2>")
    if data.gallery:
        parts.append('<div class="gallery">')
        for item in data.gallery:
            verdict = "defective" if item.defective else "good"
            if item.thumbnail:
                picture = f'<img src={_attr(item.thumbnail)} alt={_attr("overlay of " + item.path)} loading="lazy">'
                if item.link:
                    picture = f"<a href={_attr(item.link)}>{picture}</a>"
                if item.heatmap:
                    heat = f'<img src={_attr(item.heatmap)} alt={_attr("heat map of " + item.path)} loading="lazy">'
                    picture = f'<div class="pair">{picture}<a href={_attr(item.heatmap)}>{heat}</a></div>'
            else:
                picture = '<div class="missing">image not readable now</div>'
            name = html.escape(item.path)
            if item.image_link:
                name = f"<a href={_attr(item.image_link)}>{name}</a>"
            area = f"<br>defect area {int(item.area)} px" if item.area else ""
            parts.append(
                f'<div class="card {verdict}">{picture}<div><span class="score">{float(item.score):.4g}</span>'
                f'<span class="verdict">{verdict}</span></div>{name}{area}</div>'
            )
        parts.append("</div>")
    else:
        parts.append('<p class="note">No image was scored.</p>')
    if data.failures:
        shown = len(data.failures)
        failed = counts.get("failed", shown)
        more = f" (the first {shown}; all are in predictions.csv)" if failed > shown else ""
        parts.append(f"<h2>Failed images: {failed}{more}</h2>")
        parts.append('<table class="failures">' + _rows(data.failures) + "</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(path: str | os.PathLike, data: ReportData) -> Path:
    """Write the page through a temporary file and rename it: a reader never sees half of it."""
    return write_bytes_atomic(path, render(data).encode("utf-8"))
