"""The rules for client text (``chatbot.answering.inputs``): a message is stripped, not blank,
not too long and free of control characters; tabs and line breaks are ordinary text."""

from __future__ import annotations

import pytest

from chatbot.answering.inputs import (
    check_message,
    check_text,
    control_problem,
    first_control_character,
)
from chatbot.errors import InvalidRequestError


def test_a_message_is_stripped_and_keeps_tabs_and_line_breaks() -> None:
    assert check_message("  where is\tmy order?\r\nOrder PC-100\n ", 100) == (
        "where is\tmy order?\r\nOrder PC-100")


@pytest.mark.parametrize("text, code", [
    ("hi\x00there", "U+0000"), ("bell\x07", "U+0007"), ("esc\x1b[31m", "U+001B"),
    ("del\x7f", "U+007F"), ("n\x85el", "U+0085"), ("lone \ud800 surrogate", "U+D800"),
    ("vertical\x0btab", "U+000B"), ("form\x0cfeed", "U+000C"),
])
def test_control_characters_are_rejected_naming_the_character_and_field(text: str,
                                                                       code: str) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        check_message(text, 100)
    assert raised.value.field == "message"
    assert f"control character ({code})" in str(raised.value)
    assert "tabs and line breaks are fine" in str(raised.value)


def test_ordinary_unicode_is_not_a_control_character() -> None:
    for text in ("émoji 👍🏽 and 日本語", "zero\u200bwidth", "rtl \u202e mark", "line\u2028sep"):
        assert first_control_character(text) is None
        assert check_message(text, 100) == text


def test_blank_and_too_long_messages_say_what_to_do() -> None:
    with pytest.raises(InvalidRequestError, match="the message is empty"):
        check_message(" \n\t ", 100)
    with pytest.raises(InvalidRequestError, match="6 characters, more than the 5 allowed"):
        check_message("abcdef", 5)
    with pytest.raises(InvalidRequestError, match="the message is empty"):
        check_message(None, 5)


def test_other_fields_may_be_blank_but_are_limited_and_clean() -> None:
    assert check_text("", 10, field="comment") == ""
    assert check_text("  as typed ", 20, field="comment") == "  as typed "
    with pytest.raises(InvalidRequestError) as raised:
        check_text("x" * 11, 10, field="reason")
    assert raised.value.field == "reason" and "11 characters" in str(raised.value)
    with pytest.raises(InvalidRequestError, match="customer_ref contains a control"):
        check_text("acct\x00", 10, field="customer_ref")
    assert control_problem("fine", "x") is None
    assert control_problem("a\x00", "path") == (
        "the path contains a control character (U+0000) at position 1: remove it "
        "(tabs and line breaks are fine)")
