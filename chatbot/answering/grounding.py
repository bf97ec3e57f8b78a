"""Grounding: whether a generated answer is backed by its numbered sources, sentence by sentence.

This module owns the support check, in one implementation used two ways:

- ``SentenceGate`` (incremental): the pipeline feeds it the generated text as it streams and
  shows only the sentences it releases; the first unsupported sentence ends the answer
  (streamed and non-streamed answers alike; training data keeps the supported prefix of an agent
  answer the same way).
- ``support_check`` (whole text): the metrics of answer evaluation, i.e. the share of claim
  sentences that pass the gate (``groundedness``) and the lexical first pass alone (``lexical``:
  "lexical support"), which sentences failed, and which sources were cited.

Both cut the text at the same sentence boundaries (``next_boundary``) and judge each sentence
with the same rule (``check_sentence``), so a verdict does not depend on how the text arrived.
The rule has two passes:

1. Lexical (``judge``, cheap): a sentence with fewer than ``MIN_CONTENT_WORDS`` content words
   makes no claim; a sentence that echoes the prompt's source blocks (``Q:``/``A:``) or cites a
   source that was not given fails; a number the sources lack fails; otherwise the share of its
   content words (computed without the ``[n]`` markers) found in the sources and the question
   must reach the support threshold. Shared words are not meaning: this pass ignores negation
   ("not" is a stopword), conditions and which number goes with what.
2. Meaning (optional, ``chatbot.answering.verify``): a claim that passed the lexical pass must
   also be entailed by the sources' answers (``evidence``), as judged by the trained verifier.
   The customer's question is never evidence here: restating it is not a claim the sources make.

Word normalisation (stemmer, stopwords) is ``chatbot.retrieval.text``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

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


class Entailment(Protocol):
    """The meaning pass (``chatbot.answering.verify.Verifier``, or a stand-in in tests)."""

    def supports(self, sentence: str, sources: Sequence[str]) -> bool: ...


@dataclass(frozen=True)
class SupportCheck:
    """How well a generated answer is backed by its sources."""

    supported: bool
    groundedness: float  # share of content sentences that pass the gate (both passes)
    sentences: int  # content sentences checked
    unsupported: tuple[str, ...] = ()
    cited: tuple[int, ...] = ()  # source numbers the answer cites (1-based)
    lexical: float = 0.0  # share of content sentences that pass the lexical pass alone


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
    """The lexical pass: True when the sentence's claim is supported, False when not, None when
    it makes none."""
    coverage = sentence_coverage(sentence, vocabulary)
    return None if coverage is None else coverage >= threshold


def evidence(sources: Sequence[Hit]) -> list[str]:
    """What the meaning pass reads: each source's answer (an FAQ answer, a past agent's reply),
    never a question (an FAQ's question or a past customer's turn states no policy)."""
    return [h.document.answer for h in sources]


def check_sentence(sentence: str, vocabulary: set[str], threshold: float,
                   verifier: Entailment | None = None,
                   texts: Sequence[str] = ()) -> tuple[bool | None, bool | None]:
    """(lexical verdict, gate verdict) of one sentence: the lexical pass (``judge``), then, for
    a claim it lets through, the verifier on ``texts`` (``evidence``) when there is one."""
    lexical = judge(sentence, vocabulary, threshold)
    if not lexical or verifier is None:
        return lexical, lexical
    return lexical, verifier.supports(prompt.strip_citations(sentence).strip(), texts)


# --- whole text ---------------------------------------------------------------------------------


def support_check(answer: str, sources: Sequence[Hit], threshold: float,
                  question: str = "", verifier: Entailment | None = None) -> SupportCheck:
    """An answer is supported when it makes at least one claim and every sentence that makes a
    claim passes (``check_sentence``); the same verdict ``SentenceGate`` reaches on the same
    text. Every claim is checked (the gate stops at the first failure)."""
    vocabulary = source_vocabulary(sources, question)
    texts = evidence(sources)
    checked = lexical_ok = 0
    bad: list[str] = []
    for sentence in sentences(answer):
        lexical, verdict = check_sentence(sentence, vocabulary, threshold, verifier, texts)
        if verdict is None:
            continue
        checked += 1
        lexical_ok += bool(lexical)
        if not verdict:
            bad.append(sentence)
    grounded = (checked - len(bad)) / checked if checked else 0.0
    cited = tuple(prompt.cited_numbers(answer, len(sources)))
    return SupportCheck(checked > 0 and not bad, grounded, checked, tuple(bad), cited,
                        lexical_ok / checked if checked else 0.0)


# --- streaming ----------------------------------------------------------------------------------


class SentenceGate:
    """Lets a streamed answer through one sentence at a time, only once the sentence is checked.

    A sentence that makes a claim is released when it is supported; sentences without a claim
    ("Happy to help!") wait for the next supported claim. The first unsupported sentence closes
    the gate: the answer is cut there, so what the customer saw streaming is exactly the final
    text, and every claim in it is supported. A sentence is judged once it is complete, by the
    same rule as ``support_check`` (``check_sentence``, with the verifier when given)."""

    def __init__(self, sources: Sequence[Hit], threshold: float, question: str = "",
                 verifier: Entailment | None = None) -> None:
        self.vocabulary = source_vocabulary(sources, question)
        self.threshold = threshold
        self.verifier = verifier
        self._evidence = evidence(sources)
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
        verdict = check_sentence(sentence, self.vocabulary, self.threshold, self.verifier,
                                 self._evidence)[1]
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
