"""HTML building blocks of the reports: one self-contained page, every text escaped, images as data URIs.

No JavaScript and nothing fetched from the network: the page opens from a file on any machine. Long content
(the config, the log) sits in ``<details>`` elements, which browsers fold without scripts.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from PIL import Image

__all__ = ["Page", "data_uri", "esc", "fmt_number", "image_data_uri", "img_tag", "table"]

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;color:#1d232a;
background:#f6f7f9;font-size:14px;line-height:1.4}
header{background:#1f3b57;color:#fff;padding:14px 24px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#c9d6e3}
main{padding:8px 24px 40px;max-width:1400px}
section{background:#fff;border:1px solid #dde2e8;border-radius:6px;margin:14px 0;padding:10px 16px}
h2{font-size:18px;margin:4px 0 10px;color:#1f3b57}h3{font-size:15px;margin:12px 0 6px}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border:1px solid #dde2e8;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eef2f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.best td{background:#e7f5e9}.note{color:#6a737d;font-style:italic}.warn{color:#a15c00}
.grid{display:flex;flex-wrap:wrap;gap:10px}.grid figure{margin:0;text-align:center;font-size:12px}
.grid figcaption{max-width:260px;overflow-wrap:anywhere}
img{max-width:100%;height:auto}pre{background:#f3f5f7;padding:8px;overflow:auto;font-size:12px;max-height:480px}
details summary{cursor:pointer;font-weight:600;margin:4px 0}.kv td:first-child{font-weight:600;background:#f8f9fb}
nav a{color:#c9d6e3;margin-right:12px;font-size:13px}
"""


def esc(value: Any) -> str:
    """``str(value)`` escaped for HTML text and attribute values."""
    return html.escape("" if value is None else str(value), quote=True)


def fmt_number(value: Any, digits: int = 4) -> str:
    """A number for a table: ints as ints, floats with ``digits`` significant decimals, NaN/None as a dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3g}"
        return f"{value:.{digits}f}".rstrip("0").rstrip(".") if abs(value) < 1e4 else f"{value:.1f}"
    return str(value)


def data_uri(payload: bytes, mime: str) -> str:
    """``data:<mime>;base64,...`` for ``payload``."""
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


def image_data_uri(image: Image.Image, *, max_side: int | None = None, photo: bool = False) -> str:
    """A PIL image as a data URI: PNG, or JPEG (quality 85) for photos (``photo=True``), much smaller for those.

    ``max_side`` shrinks the image (aspect kept) so that its longer side is at most that many pixels.
    """
    image = image.convert("RGB") if image.mode not in ("RGB", "L", "RGBA") or photo else image
    if max_side is not None and max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if photo:
        image.convert("RGB").save(buffer, format="JPEG", quality=85, optimize=True)
        return data_uri(buffer.getvalue(), "image/jpeg")
    image.save(buffer, format="PNG", optimize=True)
    return data_uri(buffer.getvalue(), "image/png")


def img_tag(uri: str, alt: str, *, width: int | None = None) -> str:
    """An ``<img>`` for a data URI with escaped alt text (and a display width in CSS pixels)."""
    size = f' width="{int(width)}"' if width else ""
    return f'<img src="{esc(uri)}" alt="{esc(alt)}"{size}>'


def table(header: Sequence[Any], rows: Iterable[Sequence[Any]], *, numeric: bool = True,
          row_classes: Sequence[str] | None = None, css_class: str = "") -> str:
    """An HTML table; cells are escaped, numbers formatted with :func:`fmt_number` and right-aligned."""
    parts = [f'<table class="{esc(css_class)}">' if css_class else "<table>", "<tr>"]
    parts += [f"<th>{esc(cell)}</th>" for cell in header]
    parts.append("</tr>")
    for index, row in enumerate(rows):
        css = f' class="{esc(row_classes[index])}"' if row_classes and row_classes[index] else ""
        parts.append(f"<tr{css}>")
        for cell in row:
            if numeric and isinstance(cell, (int, float)) and not isinstance(cell, bool):
                parts.append(f'<td class="num">{esc(fmt_number(cell))}</td>')
            else:
                parts.append(f"<td>{esc(cell)}</td>")
        parts.append("</tr>")
    parts.append("</table>")
    return "".join(parts)


def key_value_table(items: Mapping[str, Any]) -> str:
    """A two-column table of ``key: value`` (values formatted, escaped)."""
    return table(["", ""], [(key, fmt_number(value) if isinstance(value, float) else value)
                            for key, value in items.items()], numeric=False, css_class="kv").replace(
        "<tr><th></th><th></th></tr>", "")


class Page:
    """Collects sections and renders one HTML document."""

    def __init__(self, title: str, subtitle: str = "") -> None:
        self.title = title
        self.subtitle = subtitle
        self.sections: list[tuple[str, str, str]] = []

    def section(self, heading: str, body: str, anchor: str | None = None) -> None:
        """Add ``<section><h2>heading</h2>body</section>``; ``body`` is trusted HTML built from escaped parts."""
        anchor = anchor or "".join(ch if ch.isalnum() else "-" for ch in heading.lower()).strip("-")
        self.sections.append((anchor, heading, body))

    def render(self) -> str:
        nav = "".join(f'<a href="#{esc(anchor)}">{esc(heading)}</a>' for anchor, heading, _ in self.sections)
        body = "".join(f'<section id="{esc(anchor)}"><h2>{esc(heading)}</h2>{content}</section>'
                       for anchor, heading, content in self.sections)
        subtitle = f"<p>{esc(self.subtitle)}</p>" if self.subtitle else ""
        return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">'
                f"<title>{esc(self.title)}</title><style>{CSS}</style></head><body>"
                f"<header><h1>{esc(self.title)}</h1>{subtitle}<nav>{nav}</nav></header><main>{body}</main>"
                f"</body></html>\n")


def note(text: str, css: str = "note") -> str:
    """A paragraph in the muted note style (or ``css="warn"``)."""
    return f'<p class="{esc(css)}">{esc(text)}</p>'


def details(summary: str, content_html: str, *, open_: bool = False) -> str:
    """A folded ``<details>`` block."""
    return f"<details{' open' if open_ else ''}><summary>{esc(summary)}</summary>{content_html}</details>"


def pre(text: str) -> str:
    """Preformatted, escaped text."""
    return f"<pre>{esc(text)}</pre>"
