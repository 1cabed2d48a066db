"""Text that comes from data (a spec's name, a class label) shown in a figure. Plotly renders a subset of HTML in
titles, legends and hover text (bold, links, line breaks): such text is escaped so it shows as written."""

from __future__ import annotations

from html import escape


def plain(text: object) -> str:
    """`text` as plotly should show it, character for character."""
    return escape(str(text), quote=False)
