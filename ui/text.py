"""User-made text (file and folder names, labels, CSV values, class names) shown as text, never as Markup.

Streamlit reads Markdown in messages, captions, headings and widget labels — links, images the browser
fetches, LaTeX maths, `:red[…]` colours and `:icon:` shortcodes — and Plotly reads HTML tags in chart text.
Every user-derived string goes through `md` (Markdown places) or `plain` (chart text) before it is shown.
"""
from __future__ import annotations

import html
import re

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>$~:=&])")
_LINE_BREAKS = re.compile(r"[\r\n\t\v\f]+")


def md(value: object) -> str:
    """`value` as literal text inside Markdown: every character Markdown, maths or a directive could read is escaped."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", _LINE_BREAKS.sub(" ", str(value)))


def plain(value: object) -> str:
    """`value` as literal text in a Plotly chart (tick labels, legends, hover text): tags and entities escaped."""
    return html.escape(_LINE_BREAKS.sub(" ", str(value)), quote=False)


def md_list(values, limit: int | None = None, sep: str = ", ") -> str:
    """Several user strings joined for Markdown, each escaped (the first `limit`, then '…')."""
    values = list(values)
    shown = values if limit is None else values[:limit]
    return sep.join(md(v) for v in shown) + (" …" if limit is not None and len(values) > limit else "")
