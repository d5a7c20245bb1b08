"""Text from the store is data: one place per kind of output that makes it safe there.

Anything in a store can be written by anyone who can write to it (a tag, a machine label, a
failure reason, a cell name), and it reaches three outputs that would read parts of it as
instructions:
- the terminal reads control characters (an escape sequence can rewrite the screen or the
  window title): ``printable`` shows them as ``\\x1b`` and the like, for every line that
  ``python -m benchmarks`` prints (``benchmarks/cli.py`` wraps its output streams);
- markdown reads HTML, and a newline ends a table row or a list item: ``markdown_text``
  escapes ``<``, ``>`` and ``&``, a table's ``|``, and folds newlines into spaces
  (``reports/tables.py``'s ``to_markdown`` uses it for every cell, and returns a
  ``MarkdownBlock``); ``markdown_page`` joins a document's lines, each line but those blocks
  made one line of text that holds no HTML;
- matplotlib reads text between two ``$`` as math (and fails on what is not valid math), and
  draws a control character as a missing glyph, with a warning: ``plain_figure`` turns math
  off in every text of a figure and shows control characters as ``printable`` does
  (``reports/page.py``'s ``png`` calls it for every figure, and keeps matplotlib's warning
  about a glyph missing from the font, for the tick labels made while drawing, off the
  terminal; the figures' own labels use no math).
HTML pages escape everything they show in ``reports/page.py``.
"""
from __future__ import annotations

import html
import math
import re

# C0 controls but tab and newline, DEL, C1 controls, and the Unicode line and paragraph separators
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: str) -> str:
    """``text`` with every control character but tab and newline shown as its escape."""
    return CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def one_line(value) -> str:
    """``value`` as one line of terminal text: control characters, tab and newline included,
    shown as their escapes, so that no store value can start a line of its own in a table."""
    return printable(str(value)).replace("\t", "\\t").replace("\n", "\\n")


def markdown_text(value) -> str:
    """``value`` as one line of markdown text that is never read as HTML or as table syntax."""
    text = printable(str(value).replace("\r\n", " ").replace("\n", " ").replace("\r", " "))
    return html.escape(text, quote=False).replace("|", "\\|")


class MarkdownBlock(str):
    """Markdown made safe already, line breaks included (a table from ``to_markdown``)."""


def markdown_page(lines: list[str]) -> str:
    """A markdown document of ``lines``: each one line, whatever store text it holds (newlines
    folded, ``<`` escaped so that no HTML tag can start), but ``MarkdownBlock``s as they are."""
    def line(text: str) -> str:
        if isinstance(text, MarkdownBlock):
            return text
        return printable(text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")).replace("<", "&lt;")
    return "\n".join(line(text) for text in lines)


class PrintableStream:
    """A text stream that writes through ``printable``: what a command prints never reaches
    the terminal as a control sequence. Everything else is the wrapped stream's."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(printable(text))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)



def plain_figure(fig) -> None:
    """Every text of matplotlib figure ``fig`` drawn as it is written: no math, no control character."""
    from matplotlib.text import Text
    for text in fig.findobj(Text):
        text.set_parse_math(False)
        text.set_text(printable(text.get_text()))


def at_least(slowdown: float, digits: int = 0) -> str:
    """The smallest slowdown a cell can detect, as the report, compare, regress and calibrate
    print it: ``≥ 14%``, or ``none up to 200%`` where nothing up to 200% would be seen (the
    bisection's upper end, ``reports/noise.py``). ``≥`` rather than ``>=``: markdown escapes
    ``>`` (``markdown_text``)."""
    return "none up to 200%" if math.isinf(slowdown) else f"≥ {slowdown:.{digits}%}"
