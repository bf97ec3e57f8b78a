"""Turning conversation text into safe Gradio chatbot markdown.

Gradio's Chatbot renders message content as markdown, and markdown lets HTML through. So every
text that reaches it goes through here first:

- customer text is shown exactly as typed: HTML special characters become entities and
  markdown punctuation is backslash-escaped, so ``<img src=x onerror=...>`` or ``**hi**``
  appear literally and nothing a customer types can become a tag, a link or an image;
- bot text keeps its markdown (FAQ answers use lists and bold) but any HTML in it is
  escaped too, because a generated answer may echo the customer's words;
- a support-team member's words are shown exactly as written, like the customer's.

``transcript_messages`` is a logged conversation as the team reads it (Admin, Inbox, Improve).

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


def transcript_messages(view: Any) -> list[dict[str, Any]]:
    """A logged conversation (``chatbot.conversations.views.ConversationView``) as Chatbot
    messages for the team: the customer's and agents' words as written (agents with their
    names), the bot's answers with how they came about (route, confidence, latency, cited
    sources, rating, the policy's reason)."""
    messages: list[dict[str, Any]] = []
    for m in view.messages:
        if m.role == "customer":
            messages.append({"role": "user", "content": literal_markdown(m.text)})
        elif m.role == "agent":
            name = literal_markdown(m.agent_name or "Support team")
            messages.append({"role": "assistant",
                             "content": f"**{name}** (agent): {literal_markdown(m.text)}"})
        else:
            facts = " · ".join(_answer_facts(m))
            meta = f"\n\n*{literal_markdown(facts)}*" if facts else ""
            messages.append({"role": "assistant", "content": bot_markdown(m.text) + meta})
    return messages


def _answer_facts(m: Any) -> list[str]:
    facts = [f"route {m.route}"] if m.route else []
    if m.confidence is not None:
        facts.append(f"confidence {m.confidence:.2f}")
    if m.latency_ms is not None:
        facts.append(f"{m.latency_ms:.0f} ms")
    cited = [h.record_id for h in m.hits if h.cited]
    if cited:
        facts.append("sources " + ", ".join(cited))
    if m.rating:
        facts.append(f"rated {m.rating}")
    if m.reason:
        facts.append(f"why: {m.reason}")
    return facts


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def millis(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} ms"


def number(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"
