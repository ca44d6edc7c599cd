"""User text is escaped for Markdown and for Plotly."""
from __future__ import annotations

import re

from ui.text import md, md_list, plain

HOSTILE = ["[click](http://evil.example)", "![x](http://evil.example/a.png)", "$x^2$", ":red[alarm]",
           ":material/home:", "<img src=http://evil.example/x.png>", "**bold**", "# heading", "a_b_c", "`code`",
           "line\nbreak", "~~gone~~", "1. item", "- item", "| a | b |", "&amp;"]


def test_md_escapes_every_markup_character():
    for text in HOSTILE:
        escaped = md(text)
        unescaped = re.sub(r"\\.", "", escaped)  # what is left once every escaped character is taken out
        assert not re.search(r"[\[\]()!$*_`#:<>~|&-]", unescaped), (text, escaped)
        assert "\n" not in escaped
        assert re.sub(r"\\(.)", r"\1", escaped) == text.replace("\n", " ")  # nothing lost: it reads back as typed


def test_plain_escapes_tags_for_charts():
    assert plain("<a href='http://evil.example'>x</a>") == "&lt;a href='http://evil.example'&gt;x&lt;/a&gt;"
    assert plain("cats & dogs") == "cats &amp; dogs" and plain("seven") == "seven"


def test_md_list():
    assert md_list(["a_b", "c"], limit=1) == "a\\_b …" and md_list(["x", "y"]) == "x, y"
