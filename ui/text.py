"""Turning conversation text into safe Gradio chatbot markdown.

Gradio's Chatbot renders message content as markdown, and markdown lets HTML through. So every
text that reaches it goes through here first:

- customer text is shown exactly as typed: HTML special characters become entities and
  markdown punctuation is backslash-escaped, so ``<img src=x onerror=...>`` or ``**hi**``
  appear literally and nothing a customer types can become a tag, a link or an image;
- bot text keeps its markdown (FAQ answers use lists and bold) but any HTML in it is
  escaped too, because a generated answer may echo the customer's words.

The Chatbot's own ``sanitize_html`` stays on as a second line of defence.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from typing import Any

# Characters with a meaning in (GitHub-flavoured) markdown; '&', '<' and '>' are entities by then.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~$:])")
KIND_LABELS = {"faq": "FAQ", "dialogue": "past conversation"}


def escape_html(text: str) -> str:
    """HTML special characters as entities (quotes need no escaping outside attributes)."""
    return html.escape(text, quote=False)


def literal_markdown(text: str) -> str:
    """Markdown that renders as exactly ``text``: no HTML, no formatting, no links."""
    escaped = _MARKDOWN_SPECIAL.sub(r"\\\1", escape_html(text))
    # Keep the customer's line breaks: a markdown hard break is two spaces before the newline.
    return escaped.replace("\r\n", "\n").replace("\n", "  \n")


def bot_markdown(text: str) -> str:
    """Bot text with its markdown formatting kept and any HTML shown as text."""
    return escape_html(text)


def answer_markdown(reply_text: str, sources: Iterable[Any]) -> str:
    """An answer followed by its numbered sources (``chatbot.conversations.views.Source``)."""
    parts = [bot_markdown(reply_text)]
    lines = []
    for source in sources:
        kind = KIND_LABELS.get(getattr(source, "kind", ""), getattr(source, "kind", ""))
        title = literal_markdown(source.title or source.record_id)
        suffix = f" · *{literal_markdown(kind)}*" if kind else ""
        lines.append(f"{int(source.n)}\\. {title}{suffix}")
    if lines:
        parts.append("**Sources**  \n" + "  \n".join(lines))
    return "\n\n".join(parts)


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def millis(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} ms"


def number(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"
