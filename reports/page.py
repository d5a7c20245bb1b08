"""The skeleton of every HTML page the project writes (the session report, compare, history and
machines side by side): one self-contained file, its style in its head and its figures embedded
as PNG data, so that a page opens anywhere, without the folder it was written into.

A page's style is made of the pieces below, each page taking the ones it needs."""
from __future__ import annotations

import base64
import html
import io
import warnings

from reports.text import plain_figure

TEXT = "body{font-family:sans-serif;margin:2em}"
TABLE = (" table.cells{border-collapse:collapse;font-size:12px}"
         " .cells td,.cells th{border:1px solid #ccc;padding:3px 6px}")
NUMBERS = " .cells td,.cells th{text-align:right}"      # a table of figures: right-aligned cells
WIDE = " body{max-width:1600px} img{max-width:100%}"   # a page of wide tables and figures


def png(fig, dpi: int = 110) -> bytes:
    """The PNG of a matplotlib figure, its texts drawn as written (``reports/text.py``)."""
    plain_figure(fig)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Glyph .* missing from font", UserWarning)
        fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def img(alt: str, data: bytes, style: str = "") -> str:
    """An ``<img>`` that carries its PNG ``data`` in the page."""
    styled = f" style=\"{style}\"" if style else ""
    return (f"<img alt=\"{html.escape(alt)}\"{styled} "
            f"src=\"data:image/png;base64,{base64.b64encode(data).decode()}\">")


def page(title: str, body: list[str], style: str) -> str:
    """The whole page: ``title`` in its head, ``style`` (pieces above and the page's own rules),
    ``body`` (HTML fragments, in order)."""
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>")
