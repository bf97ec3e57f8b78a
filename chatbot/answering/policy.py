"""Routing policy: FAQ verbatim, grounded generation, fallback or hand-over, each with a reason.

Decisions, in order:

1. **Hand-over** when the customer asks for a person ("can I talk to a human", "agent please",
   "representative"), says yes right after the bot offered a human, or when this turn would be
   one fallback too many (``settings.handoff_after_fallbacks`` consecutive fallbacks already).
2. **FAQ verbatim** when the top FAQ hit's dense cosine reaches ``thresholds.faq``.
3. **Grounded generation** when the top hit's dense cosine reaches ``thresholds.answer``; the
   generated text is then checked by ``support_check`` and replaced by a fallback when it is not
   supported by the sources.
4. **Fallback** otherwise: an honest "I'm not sure" with an offer of a human.

Why the dense cosine of the best phrasing: on CLINC150 (val, MiniLM) it separates in-scope from
out-of-scope better than a top-5 label vote or the margin to the next label (at 90% of in-scope
answered, out-of-scope fallback was 0.89 for the cosine, 0.77 for the vote, 0.38 for the
margin); on the demo knowledge base, adding the top-1/top-2 margin lowered the share answered at
the same precision. It is comparable across queries, unlike BM25 or the per-query-normalised
fused score.

Thresholds come from ``chatbot calibrate`` (``chatbot.answering.calibrate``), stored in the index
manifest. ``DEFAULT_THRESHOLDS`` is used until then; its provenance is recorded in it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

from chatbot.answering import prompt
from chatbot.config import Settings
from chatbot.retrieval.index import keyword_stemmer
from chatbot.types import Hit, Route, Turn


@dataclass(frozen=True)
class Thresholds:
    """Routing thresholds. ``answer`` and ``faq`` are dense cosines of the top hit; ``support``
    is the share of a sentence's content words that must appear in the sources."""

    answer: float
    faq: float
    support: float
    source: str = ""  # where these numbers came from (calibration run, data, date)
    metrics: Mapping[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "metrics": dict(self.metrics)}

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any] | None) -> Thresholds:
        """The calibrated thresholds stored with the index, else the documented defaults."""
        raw = (manifest or {}).get("thresholds")
        if not isinstance(raw, Mapping):
            return DEFAULT_THRESHOLDS
        try:
            return cls(
                answer=float(raw["answer"]), faq=float(raw["faq"]),
                support=float(raw.get("support", DEFAULT_THRESHOLDS.support)),
                source=str(raw.get("source", "index manifest")),
                metrics={k: float(v) for k, v in (raw.get("metrics") or {}).items()},
            )
        except (KeyError, TypeError, ValueError):
            return DEFAULT_THRESHOLDS


# Not hand-set: the output of `chatbot calibrate --dry-run` (chatbot.answering.calibrate) on the demo
# knowledge base (knowledge_base/: 558 held-out FAQ phrasings in 3 folds, 141 out-of-scope
# questions, shipped MiniLM, target precision 0.85 = the default, class-balanced), 2026-11-28.
# At these values 55% of the held-out paraphrases are answered and 98% of the out-of-scope
# questions fall back (at 0.95: 16% and 100%); the binding constraint is retrieval picking the
# wrong FAQ for hard paraphrases, not off-topic questions. Used only until `chatbot calibrate`
# stores thresholds with the index (`make run` does that).
DEFAULT_THRESHOLDS = Thresholds(
    answer=0.7034, faq=0.8672, support=0.2792,
    source="defaults from `chatbot calibrate` on the demo knowledge base (558 held-out "
    "phrasings, 141 out-of-scope questions, target precision 0.85); run `chatbot calibrate` "
    "to calibrate on your own data",
)


@dataclass(frozen=True)
class Decision:
    """What to do with a question. ``text`` is set for every route except GENERATED, whose text
    the generator produces; ``sources`` are the hits the reply relies on."""

    route: Route
    reason: str
    confidence: float
    sources: tuple[Hit, ...] = ()
    text: str | None = None


@dataclass(frozen=True)
class SupportCheck:
    """How well a generated answer is backed by its sources."""

    supported: bool
    groundedness: float  # share of content sentences supported by the sources
    sentences: int  # content sentences checked
    unsupported: tuple[str, ...] = ()
    cited: tuple[int, ...] = ()  # source numbers the answer cites (1-based)


# --- asking for a human --------------------------------------------------------------------------

_HUMAN = re.compile(
    r"\b(human|humans|real person|live (?:agent|person|chat|support)|representative|rep\b|"
    r"operator|customer service agent|someone real)\b"
    r"|\b(?:talk|speak|chat|connect|transfer|put) (?:me )?(?:to|with|through to) "
    r"(?:an? |the |your |some )?(?:agent|person|someone|somebody|staff|support team|manager|"
    r"team member|employee|supervisor)\b"
    r"|^\s*(?:agent|human|operator|representative)\s*(?:please|pls|now)?\s*[.!?]*\s*$",
    re.IGNORECASE,
)
_YES = re.compile(
    r"^\s*(?:yes|yeah|yep|yup|sure|ok|okay|please|yes please|please do|go ahead|do it)\b"
    r"[\s,.!]*(?:please|thanks|thank you|connect me)?[\s.!]*$",
    re.IGNORECASE,
)


def asks_for_human(text: str) -> bool:
    return bool(_HUMAN.search(text))


# --- support check --------------------------------------------------------------------------------

_STOPWORD_TEXT = (
    "a an the and or but if of to in on at for from by with about as into than then so is are "
    "was were be been being am do does did have has had i you we they he she it me my your "
    "our their this that these those there here what which who whom when where why how can "
    "could would should will shall may might must not no yes just also very too only any some "
    "all each more most other such own same up down out over again further once its it's i'm "
    "you're we're don't can't please thanks thank hi hello sure let know get got us them him "
    "her "
    # Courtesy carries no claim to check ("Happy to help!", "Sorry about that.").
    "happy glad help assist sorry apologize apologies welcome great course anything else "
    "today question questions hope okay ok"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_WORD = re.compile(r"[a-z0-9]+(?:[.,/-][a-z0-9]+)*")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_NUMBER = re.compile(r"\d")
MIN_CONTENT_WORDS = 2  # shorter sentences ("Happy to help!") carry no claim to check
# A small model sometimes copies the prompt's source blocks ("[4] Q: ... A: ...") instead of
# answering: every word is then "in the sources" although the text answers nothing (and may
# describe another case). Such echoes, and citations of sources that were not given, fail.
_PROMPT_ECHO = re.compile(r"(^|\n|\]\s*)(Q|A):", re.IGNORECASE)
_CITED = re.compile(r"\[(\d{1,2})\]")
_VALID_CITATION = "\x00cite{}"  # vocabulary marker of a citable source number


@lru_cache(maxsize=1)
def _shared_stemmer() -> Any:
    """The keyword index's English stemmer, built once (the gate runs on every sentence)."""
    return keyword_stemmer()


def content_words(text: str) -> list[str]:
    """Stemmed words that carry meaning; numbers are kept whole ("3-5", "$6.95" -> "6.95")."""
    words = [w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS]
    stemmer = _shared_stemmer()
    return [w if _NUMBER.search(w) else stemmer.stemWord(w) for w in words]


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(prompt.strip_citations(text)) if s.strip()]


def sentence_coverage(sentence: str, vocabulary: set[str]) -> float | None:
    """Share of the sentence's content words found in ``vocabulary``; 0 when it states a number
    the sources do not contain (a wrong number is a wrong policy); None for no-claim sentences."""
    if _PROMPT_ECHO.search(sentence) or any(
        _VALID_CITATION.format(n) not in vocabulary for n in _CITED.findall(sentence)
    ):
        return 0.0
    words = content_words(sentence)
    if len(words) < MIN_CONTENT_WORDS:
        return None
    if any(_NUMBER.search(w) and w not in vocabulary for w in words):
        return 0.0
    return sum(w in vocabulary for w in words) / len(words)


def source_vocabulary(sources: Sequence[Hit], question: str = "") -> set[str]:
    """Content words of the sources (questions and answers) and of the customer's question: an
    answer may restate the question without that being a claim."""
    texts = [question] + [f"{h.document.question} {h.document.answer}" for h in sources]
    citable = {_VALID_CITATION.format(n) for n in range(1, len(sources) + 1)}
    return {w for t in texts for w in content_words(t)} | citable


def support_check(answer: str, sources: Sequence[Hit], threshold: float,
                  question: str = "") -> SupportCheck:
    """An answer is supported when every sentence that makes a claim has at least
    ``threshold`` of its content words in the sources (and no number they lack)."""
    vocabulary = source_vocabulary(sources, question)
    checked = unsupported = 0
    bad: list[str] = []
    for sentence in sentences(answer):
        coverage = sentence_coverage(sentence, vocabulary)
        if coverage is None:
            continue
        checked += 1
        if coverage < threshold:
            unsupported += 1
            bad.append(sentence)
    grounded = (checked - unsupported) / checked if checked else 0.0
    cited = tuple(prompt.cited_numbers(answer, len(sources)))
    # Sentences are judged without their [n] markers; a citation of a source that was not
    # given is checked on the whole answer.
    invented = any(not 1 <= int(n) <= len(sources) for n in _CITED.findall(answer))
    supported = checked > 0 and unsupported == 0 and not invented
    return SupportCheck(supported, grounded, checked, tuple(bad), cited)


class SentenceGate:
    """Lets a streamed answer through one sentence at a time, only once the sentence is checked.

    A sentence that makes a claim is released when its coverage reaches the threshold; sentences
    without a claim ("Happy to help!") wait for the next supported claim. The first unsupported
    sentence closes the gate: the answer is cut there, so what the customer saw streaming is
    exactly the final text, and every claim in it is supported."""

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
    def text(self) -> str:
        return "".join(self.released)

    def feed(self, delta: str) -> list[str]:
        """Add generated text; returns the pieces that may be shown now."""
        if self.closed:
            return []
        self._buffer += delta
        out: list[str] = []
        while not self.closed:
            end = next((m.end() for m in _SENTENCE_END.finditer(self._buffer)
                        if self._buffer[: m.end()].strip()), None)
            if end is None:
                break
            # The whitespace after a sentence starts the next piece, so released text never
            # ends in a space and the streamed pieces join to exactly ``text``.
            sentence, self._buffer = self._buffer[:end], self._buffer[end:]
            out += self._judge(sentence)
        return out

    def finish(self) -> list[str]:
        """The end of generation: judge what is left; no-claim text is released only after at
        least one supported claim."""
        if self.closed:
            return []
        rest, self._buffer = self._buffer, ""
        out = self._judge(rest) if rest.strip() else []
        if self.claims and self._pending and not self.closed:
            # Trailing citations or a closing courtesy after supported claims are fine.
            self._pending[-1] = self._pending[-1].rstrip()
            out += self._pending
            self.released += self._pending
            self._pending = []
        return out

    def _judge(self, sentence: str) -> list[str]:
        coverage = sentence_coverage(prompt.strip_citations(sentence), self.vocabulary)
        if coverage is None:
            self._pending.append(sentence)
            return []
        if coverage < self.threshold:
            self.rejected = sentence.strip()
            return []
        self.claims += 1
        out = [*self._pending, sentence]
        self._pending = []
        if not self.released:
            out[0] = out[0].lstrip()
        self.released += out
        return out


_SENTENCE_END = re.compile(r"(?:(?<=[.!?])(?:\s*\[\d{1,2}\])*|(?=\n))(?=\s)")


# --- the policy --------------------------------------------------------------------------


def _top_dense(hits: Sequence[Hit]) -> float:
    return max((h.dense_score or 0.0 for h in hits), default=0.0)


def consecutive_fallbacks(history: Sequence[Turn]) -> int:
    """Bot turns routed to fallback since the last bot turn that was not (customer turns skip)."""
    count = 0
    for turn in reversed(history):
        if turn.role != "agent":
            continue
        if turn.route != Route.FALLBACK.value:
            break
        count += 1
    return count


def _last_agent_route(history: Sequence[Turn]) -> str | None:
    return next((t.route for t in reversed(history) if t.role == "agent"), None)


class Policy:
    """Turns retrieval hits (and later the generated text) into a routing ``Decision``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def decide(self, question: str, hits: Sequence[Hit], history: Sequence[Turn] = (),
               thresholds: Thresholds = DEFAULT_THRESHOLDS) -> Decision:
        hits = tuple(hits)
        top = _top_dense(hits)
        if asks_for_human(question):
            return Decision(Route.HANDOFF, "customer asked for a human", 1.0,
                            text=prompt.HANDOFF_TEXT)
        if _last_agent_route(history) == Route.FALLBACK.value and _YES.match(question):
            return Decision(Route.HANDOFF, "customer accepted the offer of a human", 1.0,
                            text=prompt.HANDOFF_TEXT)

        faq_hits = [h for h in hits if h.document.kind == "faq"]
        best_faq = max(faq_hits, key=lambda h: h.dense_score or 0.0, default=None)
        if best_faq is not None and (best_faq.dense_score or 0.0) >= thresholds.faq:
            score = best_faq.dense_score or 0.0
            return Decision(
                Route.FAQ,
                f"FAQ {best_faq.document.record_id} matched with cosine {score:.3f} >= "
                f"faq threshold {thresholds.faq:.3f}",
                score, sources=(best_faq,), text=best_faq.document.answer,
            )
        if hits and top >= thresholds.answer:
            return Decision(
                Route.GENERATED,
                f"evidence cosine {top:.3f} >= answer threshold {thresholds.answer:.3f} but "
                f"below the faq threshold {thresholds.faq:.3f}: grounded generation",
                top, sources=hits[: prompt.MAX_SOURCES],
            )
        reason = (f"weak evidence: best cosine {top:.3f} < answer threshold "
                  f"{thresholds.answer:.3f}") if hits else "retrieval found nothing"
        return self._fallback(reason, top, history)

    def finish_generated(self, decision: Decision, text: str, claims: int,
                         history: Sequence[Turn] = (), note: str = "") -> Decision:
        """The generated answer after the support gate (``SentenceGate``): kept when it carries
        at least one supported claim, else replaced by a fallback. ``note`` says what the gate
        cut or why nothing passed."""
        if claims == 0 or not text.strip():
            return self._fallback(f"generated answer rejected: {note or 'no supported claim'}",
                                  decision.confidence, history, text=prompt.UNSUPPORTED_TEXT)
        cited = [decision.sources[n - 1] for n in prompt.cited_numbers(text, len(decision.sources))]
        reason = f"{decision.reason}; {claims} claim(s) supported by the sources"
        if note:
            reason += f"; {note}"
        return Decision(Route.GENERATED, reason, decision.confidence,
                        tuple(cited) or decision.sources, text)

    def _fallback(self, reason: str, confidence: float, history: Sequence[Turn],
                  text: str = prompt.FALLBACK_TEXT) -> Decision:
        previous = consecutive_fallbacks(history)
        if previous >= self.settings.handoff_after_fallbacks:
            return Decision(
                Route.HANDOFF,
                f"{reason}; {previous} fallbacks in a row already: handing over",
                confidence, text=prompt.HANDOFF_AFTER_FALLBACKS_TEXT,
            )
        return Decision(Route.FALLBACK, reason, confidence, text=text)
