"""ui.text: what reaches Gradio's markdown renderer can never be HTML or formatting typed by a
customer. (The browser tests check the rendered page; these check the strings, fast.)"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ui.text import answer_markdown, bot_markdown, literal_markdown, millis, percent


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
