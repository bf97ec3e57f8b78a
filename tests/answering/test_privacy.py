"""PII redaction: Luhn-valid card numbers, emails and phone numbers in many formats become
placeholders; Luhn-invalid numbers, order numbers, prices and dates stay. Property-style: the
numbers are generated from a seeded random source, hundreds per property."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from chatbot.answering.privacy import Redactor, find_cards, luhn_valid, redact
from chatbot.config import Settings

RNG_SEED = 20260
SENTENCES = ("my card is {} thanks", "{}", "paid with {}, is that ok?", "card: {}.",
             "({}) was charged twice", "number {} exp 04/27")


def _luhn_complete(body: str) -> str:
    """``body`` plus the check digit that makes it Luhn-valid."""
    for digit in "0123456789":
        if luhn_valid(body + digit):
            return body + digit
    raise AssertionError("unreachable")


def _card(rng: random.Random) -> str:
    length = rng.randint(13, 19)
    body = str(rng.randint(2, 6)) + "".join(rng.choice("0123456789") for _ in range(length - 2))
    return _luhn_complete(body)


def _formatted(rng: random.Random, digits: str) -> str:
    """The digits as people type them: plain, or in groups of 4 with spaces or dashes."""
    style = rng.choice(["plain", " ", "-"])
    if style == "plain":
        return digits
    return style.join(digits[i:i + 4] for i in range(0, len(digits), 4))


def test_luhn_matches_known_test_cards_and_rejects_a_changed_digit() -> None:
    for number in ("4111111111111111", "5555555555554444", "378282246310005",
                   "6011111111111117", "3530111333300000", "30569309025904",
                   "6200000000000005", "2223003122003222", "4012888888881881"):
        assert luhn_valid(number), number
        assert redact(f"card {number} ok") == "card [card] ok"
        changed = number[:-1] + str((int(number[-1]) + 1) % 10)
        assert not luhn_valid(changed)
        assert redact(f"card {changed} ok") == f"card {changed} ok"


def test_every_luhn_valid_card_number_is_redacted_in_any_grouping() -> None:
    rng = random.Random(RNG_SEED)
    for _ in range(400):
        card = _formatted(rng, _card(rng))
        sentence = rng.choice(SENTENCES)
        assert redact(sentence.format(card)) == sentence.format("[card]"), card


def test_luhn_invalid_sixteen_digit_numbers_are_kept() -> None:
    rng = random.Random(RNG_SEED + 1)
    for _ in range(400):
        valid = _card(rng)
        if len(valid) != 16:
            continue
        wrong = valid[:-1] + str((int(valid[-1]) + rng.randint(1, 9)) % 10)
        text = f"tracking {_formatted(rng, wrong)} please"
        assert redact(text) == text


def test_order_numbers_prices_dates_and_references_are_kept() -> None:
    rng = random.Random(RNG_SEED + 2)
    for _ in range(300):
        text = rng.choice([
            f"order PC-{rng.randint(100000, 999999)} hasn't arrived",
            f"it was ${rng.randint(1, 9999)}.{rng.randint(0, 99):02d}",
            f"ordered on 20{rng.randint(10, 30)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            f"delivered {rng.randint(1, 12)}/{rng.randint(1, 28)}/20{rng.randint(10, 30)} at "
            f"{rng.randint(0, 23)}:{rng.randint(0, 59):02d}",
            f"{rng.randint(1, 12)} items, zip {rng.randint(10000, 99999)}",
            f"reference SEC-{rng.randint(1000, 9999)}, ticket #{rng.randint(1000, 99999)}",
            f"PC-{rng.randint(10**12, 10**13 - 1)}",  # an order number with many digits
        ])
        assert redact(text) == text, text
    # A refund reference longer than any card, and a card glued to an order prefix.
    for text in ("ARN 74820016235000012345678", "PC-4111111111111111", "1Z999AA10123456784",
                 "PC-4991030932830", "SKU#5531990117799"):
        assert redact(text) == text


@pytest.mark.parametrize("email", [
    "jane@example.com", "Jane.Doe@Example.COM", "j.doe+orders@mail.example.co.uk",
    "d.okonkwo@example.com", "first_last-99@sub.domain.example.org", "x@y.io",
])
def test_emails_are_redacted(email: str) -> None:
    assert redact(f"my email is {email}.") == "my email is [email]."
    assert redact(f"<{email}>") == "<[email]>"
    assert redact(f"{email}, please") == "[email], please"


@pytest.mark.parametrize("phone", [
    "+1 415 555 2671", "(415) 555-2671", "415-555-2671", "415.555.2671", "4155552671",
    "+1 (415) 555-2671", "1-800-555-0142", "+44 20 7946 0958", "020 7946 0958",
    "00 44 20 7946 0958", "07700 900123", "+49 30 1234567", "+33 1 23 45 67 89",
    "+91 98765 43210", "+972 3 123 4567", "+55 11 91234 5678",
])
def test_phone_numbers_in_international_and_national_formats_are_redacted(phone: str) -> None:
    assert redact(f"call me on {phone} tomorrow") == "call me on [phone] tomorrow"
    assert redact(f"tel:{phone}") == "tel:[phone]"


def test_random_north_american_numbers_are_redacted_in_common_formats() -> None:
    rng = random.Random(RNG_SEED + 3)
    for _ in range(150):
        area, exchange, line = rng.choice(["415", "212", "617", "503", "312"]), \
            rng.randint(200, 999), rng.randint(0, 9999)
        text = rng.choice(["({a}) {e}-{n:04d}", "{a}-{e}-{n:04d}", "{a}.{e}.{n:04d}",
                           "+1 {a} {e} {n:04d}", "1-{a}-{e}-{n:04d}"]).format(
            a=area, e=exchange, n=line)
        assert redact(f"reach me at {text}") == "reach me at [phone]", text


def test_lists_of_numbers_and_walls_of_digits_leave_no_number_behind() -> None:
    assert redact("415 555 2671 / 617 555 1234 / +44 20 7946 0958, (212) 555-9876") == (
        "[phone] / [phone] / [phone], [phone]")
    # Past the matcher's budget the rest is redacted unread: too much rather than too little.
    for wall in ("415 555 2671 / " * 266, "415 555 2671, " * 285, "4155552671 " * 363):
        assert "2671" not in redact(wall)


def test_several_kinds_in_one_message() -> None:
    text = ("I'm jane@example.com, card 4111-1111-1111-1111, call +1 415 555 2671 about "
            "order PC-104233 ($169.00, 2024-05-03)")
    assert redact(text) == ("I'm [email], card [card], call [phone] about order PC-104233 "
                            "($169.00, 2024-05-03)")


def test_a_card_followed_by_another_number_is_cut_at_the_card() -> None:
    assert redact("card 4111 1111 1111 1111 2 items") == "card [card] 2 items"
    assert redact("4111 1111 1111 1111 04/27 cvv 123") == "[card] 04/27 cvv 123"
    assert [(f.start, f.end) for f in find_cards("x 4111 1111 1111 1111")] == [(2, 21)]


def test_configured_patterns_kept_kinds_and_settings() -> None:
    settings = Settings(redact_patterns={"account": r"ACC-\d{8}"}, store_verbatim="email",
                        _env_file=None)  # type: ignore[call-arg]
    redactor = Redactor.from_settings(settings)
    text = "ACC-12345678 jane@example.com 4111111111111111"
    assert redactor.redact(text) == "[account] jane@example.com [card]"
    assert Redactor.from_settings(settings, verbatim=False).redact(text) == (
        "[account] [email] [card]")
    keep_all = Settings(store_verbatim="all", redact_patterns={"account": r"ACC-\d{8}"},
                        _env_file=None)  # type: ignore[call-arg]
    assert Redactor.from_settings(keep_all).redact(text) == text
    none = Settings(store_verbatim="none", _env_file=None)  # type: ignore[call-arg]
    assert none.verbatim_kinds == frozenset()


@pytest.mark.parametrize("fields, match", [
    ({"store_verbatim": "emails"}, "unknown kind"),
    ({"redact_patterns": {"Bad Name": "x"}}, "not a usable name"),
    ({"redact_patterns": {"card": "x"}}, "not a usable name"),
    ({"redact_patterns": {"acct": "ACC-("}}, "bad regular expression"),
])
def test_bad_privacy_settings_say_what_is_wrong(fields: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        Settings(**fields, _env_file=None)  # type: ignore[call-arg]


def test_redact_patterns_come_from_the_environment_as_json(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATBOT_REDACT_PATTERNS", '{"account": "ACC-\\\\d{8}", "iban": '
                       '"[A-Z]{2}\\\\d{2}[A-Z0-9]{11,30}"}')
    monkeypatch.setenv("CHATBOT_STORE_VERBATIM", "phone, account")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.verbatim_kinds == {"phone", "account"}
    redactor = Redactor.from_settings(settings)
    assert redactor.redact("ACC-12345678 DE89370400440532013000 +1 415 555 2671") == (
        "ACC-12345678 [iban] +1 415 555 2671")


def test_pseudonyms_are_stable_keyed_and_distinct() -> None:
    one, other = Redactor(key=b"one"), Redactor(key=b"two")
    assert one.pseudonymise("Jane@Example.com") == one.pseudonymise("jane@example.com")
    assert one.pseudonymise("jane@example.com").startswith("[email:")
    assert one.pseudonymise("jane@example.com") != one.pseudonymise("john@example.com")
    assert one.pseudonymise("jane@example.com") != other.pseudonymise("jane@example.com")
    assert one.pseudonymise("(415) 555-2671") == one.pseudonymise("415-555-2671")
    assert one.pseudonymise("cust-7") == "cust-7" and one.pseudonymise(None) is None


def test_text_without_personal_data_is_returned_unchanged() -> None:
    for text in ("", "how long does shipping to canada take?", "Hi!\n\nThanks [1]."):
        assert redact(text) == text
