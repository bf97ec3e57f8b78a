"""Personal data in text: card numbers, email addresses, phone numbers and configured patterns,
found and replaced by typed placeholders (``[card]``, ``[email]``, ``[phone]``, ``[name]``).

Owns the one redaction rule, used wherever personal data would be kept or passed on:

- the conversation log (``chatbot.conversations.service``) stores customer messages, customer
  references, feedback comments, hand-over reasons and generated replies redacted, and the
  export (``chatbot.conversations.queries``) redacts again (rows written before, or under
  another setting). ``CHATBOT_STORE_VERBATIM`` names the kinds kept verbatim there;
- a past dialogue put into a grounded prompt (``chatbot.answering.prompt``) and fine-tuning
  data (``chatbot.training.data``) are always redacted, whatever that setting says: a model
  that saw a past customer's email can repeat it to anyone.

What is found, in this order (a span found earlier is not looked at again):

1. configured patterns (``CHATBOT_REDACT_PATTERNS``, name -> regular expression), as ``[name]``;
2. email addresses;
3. card numbers: 13-19 digits, plain or grouped as cards are written (one kind of separator,
   a space or a dash, every group but the last of 4 digits or more), starting with 2-6
   (every major network: Mastercard 2-series and 5, Amex, Diners and JCB 3, Visa 4, Discover,
   UnionPay and Maestro 6) and passing the Luhn check. A 16-digit number that fails Luhn, a
   longer unbroken digit run (a 23-digit refund reference) or digits glued to a word by a dash
   (``PC-4111111111111111``) is not a card. In a longer run of digit groups the groups that
   form a card are taken ("4111 1111 1111 1111 04/27" loses the card, keeps the 04/27);
4. phone numbers: python-phonenumbers (Google's libphonenumber; the ``phonenumberslite``
   package, without the geocoding data) at leniency VALID, for numbers written
   internationally (``+44 20 7946 0958``) and the national formats of ``PHONE_REGIONS``
   (``(415) 555-2671``, ``415.555.2671``, ``1-800-555-0142``, ``020 7946 0958``). Its matcher
   skips dates, times and prices; on top of it a number must have 7 to 15 digits (E.164) and
   must not be glued to a word by a dash, slash or # (``PC-4991030932830`` is an order number
   although its digits read as a German phone number). A 7-digit local number without its area
   code is not recognised. The matcher is slow on long runs of digits, so a run longer than
   any written-out number, and every run past the first 16 of a text, is redacted as a phone
   number unread (bounded time; too much redacted rather than too little).

Why not Presidio: presidio-analyzer installs spaCy (about 390 MB with its dependencies, 3 s to
import) and, even when only its pattern recognizers are used, its email recognizer asks the
network for the public suffix list (tldextract) at run time, which breaks offline-by-default.
Its card recognizer is a regular expression plus Luhn and its phone recognizer is
python-phonenumbers with these regions: this module does the same with no model and no network.

A customer reference is an identifier by purpose (the OpenAI-compatible endpoint continues a
``user``'s conversation by it), so ``pseudonymise`` replaces personal data in it with a keyed
hash (``[email:1f0c2a9b7d]``): the same customer keeps the same reference, and the reference no
longer says who it is.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import phonenumbers

from chatbot.config import REDACTION_KINDS, Settings

# Presidio's PhoneRecognizer regions less CA (US reads every +1 number, Canada's included).
# International (+/00) numbers are found in any region; these add their national formats.
PHONE_REGIONS = ("US", "GB", "DE", "FR", "IL", "IN", "BR")
CARD_DIGITS = (13, 19)
_MIN_PHONE_DIGITS = 7  # no phone number has fewer (a local number without its area code)
_MAX_PHONE_DIGITS = 15  # E.164: country code and number together
# Digits with what phone numbers are written with in between; the phone matcher checks them.
_PHONE_CANDIDATE = re.compile(r"[+(]?\d[\d ().\-/]{5,}\d")
_CONTEXT = 4  # characters either side of a candidate the matcher sees (the "PC-" of an order)
_LONGEST_PHONE = 32  # characters of a written-out number: "+1 (415) 555-2671" is 17
_MAX_PHONE_WINDOWS = 16  # per text: at most about 60-100 ms of matching
_LIST_GAP = re.compile(r"\s+/\s+|\s{2,}")  # between the numbers of a list
_UP_TO_A_DIGIT, _FROM_A_DIGIT = re.compile(r"^.*\d"), re.compile(r"\d.*$")
# A date is no phone (the matcher knows that too, but this costs nothing).
_DATE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}")
# What may stand right before an identifier's digits but not before a phone number: a word and
# a dash, slash or # ("PC-4991030932830" is an order, though its digits read as a German phone).
_GLUED = re.compile(r"\w[-/#]$")

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}(?![\w-])"
)
# Digit groups separated by one space or dash, not glued to a word or a dash before them.
_DIGIT_RUN = re.compile(r"(?<![\w-])\d+(?:[ -]\d+)*(?!\w)")
_GROUP = re.compile(r"\d+")


@dataclass(frozen=True)
class Found:
    """A span of personal data: ``text[start:end]`` is of ``kind``."""

    start: int
    end: int
    kind: str


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum every payment card number carries (ISO/IEC 7812)."""
    if not digits.isdigit():
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _is_card(digits: str) -> bool:
    return (CARD_DIGITS[0] <= len(digits) <= CARD_DIGITS[1] and digits[0] in "23456"
            and luhn_valid(digits))


def find_cards(text: str) -> list[Found]:
    """Card numbers: within each run of digit groups, the longest groups in a row that form a
    card written as cards are (one kind of separator, every group but the last of 4 digits or
    more: 4-4-4-4, 4-6-5), so "4111 1111 1111 1111 2 items" finds the card and leaves the 2,
    and dates in a row ("2024-05-03 2024-05-09") are no card."""
    found: list[Found] = []
    for run in _DIGIT_RUN.finditer(text):
        groups = [(m.start() + run.start(), m.end() + run.start(), m.group())
                  for m in _GROUP.finditer(run.group())]
        i = 0
        while i < len(groups):
            best, digits = None, ""
            for j in range(i, len(groups)):
                if j > i and (len(groups[j - 1][2]) < 4
                              or text[groups[j - 1][1]] != text[groups[i][1]]):
                    break
                digits += groups[j][2]
                if len(digits) > CARD_DIGITS[1]:
                    break
                if _is_card(digits):
                    best = j
            if best is None:
                i += 1
                continue
            found.append(Found(groups[i][0], groups[best][1], "card"))
            i = best + 1
    return found


def find_emails(text: str) -> list[Found]:
    return [Found(m.start(), m.end(), "email") for m in _EMAIL.finditer(text)]


def find_phones(text: str) -> list[Found]:
    """Phone numbers. The matcher reads each stretch of digits that could be one (split at
    " / " and wider gaps, which join numbers in a list) in a short window, not the whole text:
    it costs about 4 ms a window but 2 s on 4000 characters of digits. The window keeps a few
    characters either side so the matcher still sees what a number is glued to
    ("PC-1042331234" is no phone). A stretch longer than any written-out number, or any past
    the first ``_MAX_PHONE_WINDOWS``, is taken for a phone number unread."""
    spans: dict[tuple[int, int], Found] = {}
    budget = _MAX_PHONE_WINDOWS
    for first, last in _stretches(text):
        value = text[first:last]
        if sum(c.isdigit() for c in value) < _MIN_PHONE_DIGITS or _DATE.fullmatch(value):
            continue
        if budget <= 0 or len(value) > _LONGEST_PHONE:
            spans.setdefault((first, last), Found(first, last, "phone"))
            continue
        budget -= 1
        # Context without digits: a neighbour in a list must not become part of this number.
        before = _UP_TO_A_DIGIT.sub("", text[max(0, first - _CONTEXT):first])
        after = _FROM_A_DIGIT.sub("", text[last:last + _CONTEXT])
        start = first - len(before)
        window = before + value + after
        for match_start, match_end in _phones_in(window, value.startswith("+")):
            span = (start + match_start, start + match_end)
            spans.setdefault(span, Found(*span, "phone"))
    return _merged(sorted(spans.values(), key=lambda f: f.start))


def _stretches(text: str) -> list[tuple[int, int]]:
    """(start, end) of the candidate stretches, each candidate split where a list of numbers
    would be ("415 555 2671 / 617 555 1234")."""
    out = []
    for candidate in _PHONE_CANDIDATE.finditer(text):
        first = candidate.start()
        for gap in _LIST_GAP.finditer(candidate.group()):
            out.append((first, candidate.start() + gap.start()))
            first = candidate.start() + gap.end()
        out.append((first, candidate.end()))
    return out


def _merged(found: list[Found]) -> list[Found]:
    """Sorted spans of one kind with overlapping ones joined (overlapping windows, and a
    number found by one window and the unread rest of its stretch)."""
    out: list[Found] = []
    for f in found:
        if out and f.start < out[-1].end:
            out[-1] = Found(out[-1].start, max(out[-1].end, f.end), f.kind)
        else:
            out.append(f)
    return out


@functools.lru_cache(maxsize=4096)
def _phones_in(window: str, international: bool) -> tuple[tuple[int, int], ...]:
    """(start, end) of the numbers the matcher finds in ``window`` in any of ``PHONE_REGIONS``
    (cached: about 1 ms a window, and the same numbers and dates come back in a conversation).
    An ``international`` number (written with +) reads the same in every region: one will do."""
    regions = PHONE_REGIONS[:1] if international else PHONE_REGIONS
    found: list[tuple[int, int]] = []
    for region in regions:
        for match in phonenumbers.PhoneNumberMatcher(window, region,
                                                     leniency=phonenumbers.Leniency.VALID):
            # A short "valid" number (4 digits in Germany) inside a longer one is no phone, and
            # neither is one longer than E.164 allows (a 16-digit number starting 49 or 55,
            # Germany's and Brazil's country codes, reads as "valid" in those regions).
            digits = sum(c.isdigit() for c in match.raw_string)
            raw = window[match.start:match.end]
            start = match.start + len(raw) - len(raw.lstrip())  # it may start with a space
            end = match.end - len(raw) + len(raw.rstrip())
            if (_MIN_PHONE_DIGITS <= digits <= _MAX_PHONE_DIGITS
                    and not _GLUED.search(window, 0, start) and (start, end) not in found):
                found.append((start, end))
    return tuple(found)


_BUILT_IN = {"email": find_emails, "card": find_cards, "phone": find_phones}
_Replacement = Callable[[Found, str], str]  # (the span, its text) -> what replaces it


class Redactor:
    """Finds personal data and replaces it by ``[kind]``, except the kinds in ``keep``.

    ``patterns``: extra kinds, name -> regular expression (checked by ``Settings``).
    ``key``: the HMAC key of ``pseudonymise``.
    """

    def __init__(self, patterns: Mapping[str, str] | None = None, keep: Iterable[str] = (),
                 key: bytes = b"") -> None:
        self.patterns = {name: re.compile(rx) for name, rx in (patterns or {}).items()}
        self.keep = frozenset(keep)
        self.key = key

    @classmethod
    def from_settings(cls, settings: Settings, *, verbatim: bool = True) -> Redactor:
        """The redactor for ``settings``; ``verbatim=False`` ignores CHATBOT_STORE_VERBATIM
        (prompts and training data redact every kind)."""
        keep = settings.verbatim_kinds if verbatim else frozenset()
        # Keyed by the admin token: a secret in production, so a pseudonym cannot be reversed
        # by hashing guessed emails or every phone number.
        key = hashlib.sha256(b"chatbot customer_ref\0" + settings.admin_token.encode()).digest()
        return cls(settings.redact_patterns, keep, key)

    @property
    def kinds(self) -> tuple[str, ...]:
        return (*self.patterns, *REDACTION_KINDS)

    def find(self, text: str) -> list[Found]:
        """Every span of personal data (kept kinds included), in text order, not overlapping."""
        found: list[Found] = []
        shadow = text  # found spans blanked out (same length), so later kinds skip them
        for name, pattern in self.patterns.items():
            found += [Found(m.start(), m.end(), name) for m in pattern.finditer(shadow)
                      if m.end() > m.start()]
            shadow = _blank(shadow, found)
        for kind in ("email", "card", "phone"):
            found += _BUILT_IN[kind](shadow)
            shadow = _blank(shadow, found)
        found.sort(key=lambda f: f.start)
        return _without_overlaps(found)

    def redact(self, text: str) -> str:
        """``text`` with each span of a kind not kept replaced by ``[kind]``."""
        return self._replace(text, lambda found, _value: f"[{found.kind}]")

    def redact_optional(self, text: str | None) -> str | None:
        return None if text is None else self.redact(text)

    def pseudonymise(self, text: str | None) -> str | None:
        """``text`` with each span of a kind not kept replaced by ``[kind:hash]``, the hash
        keyed by ``key`` over the normalised value: the same email or number always gives the
        same pseudonym, so a reference still identifies its customer without naming them."""
        if text is None:
            return None

        def pseudonym(found: Found, value: str) -> str:
            digest = hmac.new(self.key, _normalised(found.kind, value).encode(), hashlib.sha256)
            return f"[{found.kind}:{digest.hexdigest()[:10]}]"

        return self._replace(text, pseudonym)

    def _replace(self, text: str, replacement: _Replacement) -> str:
        if not text or self.keep.issuperset(self.kinds):  # nothing to replace: find nothing
            return text
        out: list[str] = []
        last = 0
        for found in self.find(text):
            if found.kind in self.keep:
                continue
            out += [text[last:found.start], replacement(found, text[found.start:found.end])]
            last = found.end
        return "".join(out) + text[last:] if out else text


def _normalised(kind: str, value: str) -> str:
    if kind == "email":
        return value.lower()
    if kind in ("card", "phone"):
        return "".join(c for c in value if c.isdigit())
    return value


def _blank(text: str, found: list[Found]) -> str:
    chars = list(text)
    for f in found:
        chars[f.start:f.end] = " " * (f.end - f.start)
    return "".join(chars)


def _without_overlaps(found: list[Found]) -> list[Found]:
    """Sorted spans without overlaps (the phone matcher's regions may find the same number
    with different edges): the first one wins."""
    out: list[Found] = []
    for f in found:
        if out and f.start < out[-1].end:
            continue
        out.append(f)
    return out


DEFAULT = Redactor()  # built-in kinds only, nothing kept


def redact(text: str) -> str:
    """Every card number, email address and phone number in ``text`` replaced by its
    placeholder (no configured patterns, nothing kept)."""
    return DEFAULT.redact(text)
