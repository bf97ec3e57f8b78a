"""ui.text: what reaches Gradio's markdown renderer can never be HTML or formatting typed by a
customer. (The browser tests check the rendered page; these check the strings, fast.)"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from ui.text import (
    answer_markdown,
    bot_markdown,
    literal_markdown,
    millis,
    percent,
    transcript_messages,
)


@pytest.mark.parametrize(
    "typed",
    ["<img src=x onerror=alert(1)>", "<script>alert(1)</script>", "</p><iframe src=//evil>",
     "a < b > c & d"],
)
def test_customer_text_has_no_tag_left(typed: str) -> None:
    out = literal_markdown(typed)
    assert "<" not in out and ">" not in out
    assert "&lt;" in out or "<" not in typed


@pytest.mark.parametrize(
    "typed, expected",
    [("**bold**", r"\*\*bold\*\*"),
     ("[x](javascript:alert(1))", r"\[x\]\(javascript\:alert\(1\)\)"),
     ("![i](http://e/x.png)", r"\!\[i\]\(http\://e/x\.png\)"),
     ("# heading", r"\# heading"), ("`code`", r"\`code\`"), ("$$x$$", r"\$\$x\$\$")],
)
def test_customer_markdown_is_escaped(typed: str, expected: str) -> None:
    assert literal_markdown(typed) == expected


def test_customer_line_breaks_are_kept() -> None:
    assert literal_markdown("line one\nline two") == "line one  \nline two"


def test_bot_markdown_keeps_formatting_but_not_html() -> None:
    out = bot_markdown("**Yes.** <b onclick=x>We ship</b> to Canada")
    assert out.startswith("**Yes.**")
    assert "<b" not in out and "&lt;b onclick=x&gt;" in out


@dataclass
class _Source:
    n: int
    record_id: str
    title: str
    kind: str


def test_answer_lists_numbered_sources_with_their_kind() -> None:
    out = answer_markdown(
        "Standard shipping takes 3-5 business days.",
        [_Source(1, "ship-001", "How long does shipping take?", "faq"),
         _Source(2, "dlg-0001#0", "my order <b>hasnt</b> arrived", "dialogue")],
    )
    answer, sources = out.split("\n\n", 1)
    assert answer == "Standard shipping takes 3-5 business days."
    assert sources.startswith("**Sources**")
    assert "1\\. How long does shipping take? · *FAQ*" in sources
    assert "2\\. my order &lt;b&gt;hasnt&lt;/b&gt; arrived · *past conversation*" in sources


def test_answer_without_sources_is_just_the_answer() -> None:
    assert answer_markdown("I'm not sure.", []) == "I'm not sure."


def test_missing_numbers_read_not_available() -> None:
    assert percent(None) == "n/a" and millis(None) == "n/a"
    assert percent(0.125) == "12.5%" and millis(1234.4) == "1,234 ms"


def test_transcript_shows_the_words_as_written_and_how_the_bot_answered() -> None:
    def message(role: str, text: str, **facts: object) -> SimpleNamespace:
        blank = dict(route=None, confidence=None, latency_ms=None, hits=(), rating=None,
                     reason=None, agent_name=None)
        return SimpleNamespace(role=role, text=text, **{**blank, **facts})

    view = SimpleNamespace(messages=[
        message("customer", "**help** <b>now</b>"),
        message("bot", "**Sure.**", route="faq", confidence=0.91, latency_ms=12.4,
                hits=(SimpleNamespace(record_id="ship-001", cited=True),
                      SimpleNamespace(record_id="ret-001", cited=False)),
                rating="up", reason="a close FAQ"),
        message("agent", "*Sam* <i>here</i>", agent_name="Sam <b>"),
    ])
    customer, bot, agent = transcript_messages(view)
    assert customer == {"role": "user", "content": r"\*\*help\*\* &lt;b&gt;now&lt;/b&gt;"}
    assert bot["content"].startswith("**Sure.**\n\n*")
    for fact in ("route faq", "confidence 0\\.91", "12 ms", "sources ship\\-001", "rated up",
                 "why\\: a close FAQ"):
        assert fact in bot["content"]
    assert "ret" not in bot["content"]  # only the cited sources
    assert agent["content"] == r"**Sam &lt;b&gt;** (agent): \*Sam\* &lt;i&gt;here&lt;/i&gt;"
