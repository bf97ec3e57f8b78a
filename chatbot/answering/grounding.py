"""Grounding: whether a generated answer is backed by its numbered sources, sentence by sentence.

This module owns the support check, in one implementation used two ways:

- ``SentenceGate`` (incremental): the pipeline feeds it the generated text as it streams and
  shows only the sentences it releases; the first unsupported sentence ends the answer
  (streamed and non-streamed answers alike; training data keeps the supported prefix of an agent
  answer the same way).
- ``support_check`` (whole text): the groundedness metric of answer evaluation, i.e. the share of
  claim sentences that are supported, which sentences were not, and which sources were cited.

Both cut the text at the same sentence boundaries (``next_boundary``) and judge each sentence
with the same rule (``judge``), so a verdict does not depend on how the text arrived. The rule:
a sentence with fewer than ``MIN_CONTENT_WORDS`` content words makes no claim; a sentence that
echoes the prompt's source blocks (``Q:``/``A:``) or cites a source that was not given fails; a
number the sources lack fails; otherwise the share of its content words (computed without the
``[n]`` markers) found in the sources and the question must reach the support threshold.
Word normalisation (stemmer, stopwords) is ``chatbot.retrieval.text``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from chatbot.answering import prompt
from chatbot.retrieval.text import content_words, is_number
from chatbot.types import Hit

MIN_CONTENT_WORDS = 2  # shorter sentences ("Happy to help!") carry no claim to check
# A small model sometimes copies the prompt's source blocks ("[4] Q: ... A: ...") instead of
# answering: every word is then "in the sources" although the text answers nothing (and may
# describe another case). Such echoes, and citations of sources that were not given, fail.
_PROMPT_ECHO = re.compile(r"(^|\n|\]\s*)(Q|A):", re.IGNORECASE)
_VALID_CITATION = "\x00cite{}"  # vocabulary marker of a citable source number

# A sentence ends after . ! or ? plus any citations that follow it ("... days. [1]"), or before
# the spaces and line break that end a line; either way only once the next whitespace has
# arrived. That whitespace starts the next sentence, so no sentence ends in whitespace.
_SENTENCE_END = re.compile(
    rf"(?:(?<=[.!?])(?:\s*{prompt.CITATION.pattern})*|(?<!\s)(?=[^\S\n]*\n))(?=\s)")
# What may still grow into more citations of the sentence before it: whitespace, whole markers
# and the start of one ("[", "[1"). A boundary followed only by this is not final while streaming.
_OPEN_CITATIONS = re.compile(rf"(?:\s*{prompt.CITATION.pattern})*\s*(?:\[\d{{0,2}})?")


@dataclass(frozen=True)
class SupportCheck:
    """How well a generated answer is backed by its sources."""

    supported: bool
    groundedness: float  # share of content sentences supported by the sources
    sentences: int  # content sentences checked
    unsupported: tuple[str, ...] = ()
    cited: tuple[int, ...] = ()  # source numbers the answer cites (1-based)


# --- sentences --------------------------------------------------------------------------------


def next_boundary(text: str, *, final: bool = True) -> int | None:
    """Where the first sentence of ``text`` ends (None if no sentence is complete yet). With
    ``final=False`` the text is still growing: a boundary followed only by what may become more
    citations ("days. [" -> "days. [1]") waits, so streamed text is cut exactly as whole text."""
    for match in _SENTENCE_END.finditer(text):
        end = match.end()
        if not text[:end].strip():
            continue  # leading whitespace is not a sentence
        if not final and _OPEN_CITATIONS.fullmatch(text, end):
            return None
        return end
    return None


def sentences(text: str) -> list[str]:
    """The sentences of a whole text, stripped, cut where ``SentenceGate`` cuts them."""
    out: list[str] = []
    while (end := next_boundary(text)) is not None:
        out.append(text[:end])
        text = text[end:]
    out.append(text)
    return [s.strip() for s in out if s.strip()]


# --- judging one sentence ----------------------------------------------------------------------


def source_vocabulary(sources: Sequence[Hit], question: str = "") -> set[str]:
    """Content words of the sources (questions and answers) and of the customer's question (an
    answer may restate the question without that being a claim), plus the citable numbers."""
    texts = [question] + [f"{h.document.question} {h.document.answer}" for h in sources]
    citable = {_VALID_CITATION.format(n) for n in range(1, len(sources) + 1)}
    return {w for t in texts for w in content_words(t)} | citable


def sentence_coverage(sentence: str, vocabulary: set[str]) -> float | None:
    """Share of the sentence's content words found in ``vocabulary``; 0 for an echo of the
    prompt, a citation of a source that was not given, or a number the sources do not contain
    (a wrong number is a wrong policy); None for a sentence that makes no claim."""
    claim = prompt.strip_citations(sentence)
    if _PROMPT_ECHO.search(claim) or any(
        _VALID_CITATION.format(int(n)) not in vocabulary
        for n in prompt.CITATION.findall(sentence)
    ):
        return 0.0
    words = content_words(claim)
    if len(words) < MIN_CONTENT_WORDS:
        return None
    if any(is_number(w) and w not in vocabulary for w in words):
        return 0.0
    return sum(w in vocabulary for w in words) / len(words)


def judge(sentence: str, vocabulary: set[str], threshold: float) -> bool | None:
    """True when the sentence's claim is supported, False when not, None when it makes none."""
    coverage = sentence_coverage(sentence, vocabulary)
    return None if coverage is None else coverage >= threshold


# --- whole text ---------------------------------------------------------------------------------


def support_check(answer: str, sources: Sequence[Hit], threshold: float,
                  question: str = "") -> SupportCheck:
    """An answer is supported when it makes at least one claim and every sentence that makes a
    claim is supported (``judge``); the same verdict ``SentenceGate`` reaches on the same text."""
    vocabulary = source_vocabulary(sources, question)
    checked = 0
    bad: list[str] = []
    for sentence in sentences(answer):
        verdict = judge(sentence, vocabulary, threshold)
        if verdict is None:
            continue
        checked += 1
        if not verdict:
            bad.append(sentence)
    grounded = (checked - len(bad)) / checked if checked else 0.0
    cited = tuple(prompt.cited_numbers(answer, len(sources)))
    return SupportCheck(checked > 0 and not bad, grounded, checked, tuple(bad), cited)


# --- streaming ----------------------------------------------------------------------------------


class SentenceGate:
    """Lets a streamed answer through one sentence at a time, only once the sentence is checked.

    A sentence that makes a claim is released when it is supported; sentences without a claim
    ("Happy to help!") wait for the next supported claim. The first unsupported sentence closes
    the gate: the answer is cut there, so what the customer saw streaming is exactly the final
    text, and every claim in it is supported."""

    def __init__(self, sources: Sequence[Hit], threshold: float, question: str = "") -> None:
        self.vocabulary = source_vocabulary(sources, question)
        self.threshold = threshold
        self.released: list[str] = []
        self.claims = 0  # supported claim sentences released
        self.rejected: str | None = None  # the first unsupported sentence, if any
        self._buffer = ""
        self._pending: list[str] = []  # no-claim sentences waiting for a supported claim

    @property
    def closed(self) -> bool:
        return self.rejected is not None

    @property
    def supported(self) -> bool:
        """After ``finish``: the whole text passed (what ``support_check`` calls supported)."""
        return self.claims > 0 and not self.closed

    @property
    def text(self) -> str:
        return "".join(self.released)

    def feed(self, delta: str) -> list[str]:
        """Add generated text; returns the pieces that may be shown now."""
        if self.closed:
            return []
        self._buffer += delta
        return self._drain(final=False)

    def finish(self) -> list[str]:
        """The end of generation: judge what is left; no-claim text is released only after at
        least one supported claim."""
        if self.closed:
            return []
        out = self._drain(final=True)
        rest, self._buffer = self._buffer.rstrip(), ""  # no claim hides in trailing whitespace
        if rest.strip() and not self.closed:
            out += self._judge(rest)
        if self.claims and self._pending and not self.closed:
            # Trailing citations or a closing courtesy after supported claims are fine.
            out += self._pending
            self.released += self._pending
            self._pending = []
        return out

    def _drain(self, *, final: bool) -> list[str]:
        out: list[str] = []
        while not self.closed:
            end = next_boundary(self._buffer, final=final)
            if end is None:
                break
            # The whitespace after a sentence starts the next piece, so no released piece
            # ends in whitespace and the streamed pieces join to exactly ``text``.
            sentence, self._buffer = self._buffer[:end], self._buffer[end:]
            out += self._judge(sentence)
        return out

    def _judge(self, sentence: str) -> list[str]:
        verdict = judge(sentence, self.vocabulary, self.threshold)
        if verdict is None:
            self._pending.append(sentence)
            return []
        if not verdict:
            self.rejected = sentence.strip()
            return []
        self.claims += 1
        out = [*self._pending, sentence]
        self._pending = []
        if not self.released:
            out[0] = out[0].lstrip()
        self.released += out
        return out
