"""A deterministic stand-in for the answer pipeline (chatbot.types.AnswerPipeline).

Serving tests (API, OpenAI-compatible endpoint, browser tests) pass this through the factory
(``create_app(settings, pipeline=StandInPipeline())``) so they test OUR serving code without
loading models or building an index. It answers the five FAQs of the tiny test knowledge base
verbatim (route FAQ) when the question shares enough words with one of their phrasings, hands
over when the customer asks for a human, and falls back otherwise. Its suggestions are the FAQs
that follow the answered one in ``FAQS`` (cyclically; the first ones after a fallback), never
one the history answered (``Turn.faq_id``); none after a hand-over; ``opening`` ranks by the
recent counts, then ``FAQS`` order. ``stream`` yields the reply
word by word, then the Reply, like the real pipeline. ``read_signals`` is the real
``SignalReader`` (cheap, no model), so the service logs real signals; the answers ignore them.

Import it from tests as ``from standin import StandInPipeline`` (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from chatbot.answering.signals import SignalReader
from chatbot.types import Document, Hit, Reply, Route, Signals, Suggestion, Turn

INDEX_VERSION = "standin-v1"
MODEL = "standin"

# (record_id, category, question, answer, alternatives): the same FAQs as tests/conftest.py.
FAQS: tuple[tuple[str, str, str, str, tuple[str, ...]], ...] = (
    ("ship-001", "shipping", "How long does standard shipping take?",
     "Standard shipping takes 3-5 business days.",
     ("how long is delivery", "when will my package arrive")),
    ("ship-002", "shipping", "Do you ship to Canada?",
     "Yes. We ship to all Canadian provinces in 5-8 business days.",
     ("can you deliver to canada", "shipping to toronto")),
    ("ret-001", "returns", "How do I return an item?",
     "Start a return from Orders in your account within 60 days and print the free label.",
     ("how can i send something back", "return process")),
    ("pay-001", "payments", "Which payment methods do you accept?",
     "We accept Visa, Mastercard, American Express, PayPal and gift cards.",
     ("can i pay with paypal", "what cards do you take")),
    ("acc-001", "account", "How do I reset my password?",
     "Click Forgot password on the sign-in page and follow the emailed link.",
     ("forgot my password", "cant log in password reset")),
)

FALLBACK_TEXT = (
    "I'm not sure I can answer that correctly. Would you like me to connect you with a person?"
)
HANDOFF_TEXT = "I'm passing you to a member of our support team; they will reply here shortly."
_HUMAN_WORDS = {"human", "agent", "person", "representative"}
_SIGNALS = SignalReader()
SUGGESTIONS = 3  # per reply, like CHATBOT_SUGGESTIONS' default
_STOP = {"a", "an", "the", "do", "does", "i", "you", "to", "my", "is", "how", "can", "what",
         "which", "will", "in", "of", "it", "me", "with", "take", "on", "for"}


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOP}


def _documents() -> list[Document]:
    docs = []
    for record_id, category, question, answer, alternatives in FAQS:
        doc_id = Document.content_hash(
            kind="faq", question=question, answer=answer, category=category,
            alternatives=alternatives, record_id=record_id,
        )
        docs.append(Document(
            id=doc_id, record_id=record_id, kind="faq", question=question, answer=answer,
            category=category, alternatives=alternatives, source="faq.csv",
        ))
    return docs


class StandInPipeline:
    """Deterministic AnswerPipeline: word-overlap matching over five FAQs, no models."""

    def __init__(self) -> None:
        self._docs = _documents()
        self._ready = True
        self.reloads = 0  # how many times reload() was called (the admin reindex test reads it)
        self.closed = 0  # how many times close() was called (the server's shutdown calls it)
        self.calls: list[tuple[str, tuple[Turn, ...]]] = []  # (question, history) per answer

    @property
    def index_version(self) -> str | None:
        return INDEX_VERSION

    def ready(self) -> bool:
        return self._ready

    def set_ready(self, ready: bool) -> None:
        """Tests flip this to check that /health reports 503 while not ready."""
        self._ready = ready

    def reload(self) -> None:
        self.reloads += 1

    def close(self) -> None:
        self.closed += 1

    def _hits(self, question: str) -> list[Hit]:
        asked = _words(question)
        scored = []
        for doc in self._docs:
            best = 0.0
            for phrasing in doc.phrasings:
                words = _words(phrasing)
                if words:
                    best = max(best, len(asked & words) / len(words | asked))
            scored.append((best, doc))
        scored.sort(key=lambda pair: (-pair[0], pair[1].record_id))
        return [
            Hit(document=doc, score=round(score, 4), rank=rank, dense_score=round(score, 4),
                keyword_score=float(len(asked & _words(doc.question))), matched=doc.question)
            for rank, (score, doc) in enumerate(scored[:3], start=1)
        ]

    def read_signals(self, question: str, history: Sequence[Turn] = ()) -> Signals | None:
        return _SIGNALS.read(question, history)

    def _suggest(self, answered: str | None, history: Sequence[Turn]) -> tuple[Suggestion, ...]:
        ids = [doc.record_id for doc in self._docs]
        start = ids.index(answered) + 1 if answered in ids else 0
        seen = {answered, *(t.faq_id for t in history)}
        ordered = [self._docs[(start + i) % len(ids)] for i in range(len(ids))]
        return tuple(Suggestion(d.record_id, d.question) for d in ordered
                     if d.record_id not in seen)[:SUGGESTIONS]

    def opening(self, recent_counts: dict[str, int] | None = None) -> list[Suggestion]:
        counts = recent_counts or {}
        ranked = sorted(enumerate(self._docs), key=lambda p: (-counts.get(p[1].record_id, 0), p[0]))
        return [Suggestion(d.record_id, d.question) for _, d in ranked[:SUGGESTIONS]]

    def answer(self, question: str, history: Sequence[Turn] = (),
               signals: Signals | None = None) -> Reply:
        self.calls.append((question, tuple(history)))
        hits = tuple(self._hits(question))
        common = dict(hits=hits, model=MODEL, index_version=INDEX_VERSION, latency_ms=1.0)
        if _words(question) & _HUMAN_WORDS:
            return Reply(HANDOFF_TEXT, Route.HANDOFF, 1.0, "customer asked for a human", **common)
        top = hits[0]
        if top.score >= 0.5:
            return Reply(top.document.answer, Route.FAQ, top.score,
                         f"matched FAQ {top.document.record_id}", sources=(top,),
                         suggestions=self._suggest(top.document.record_id, history), **common)
        return Reply(FALLBACK_TEXT, Route.FALLBACK, top.score, "no FAQ matched well enough",
                     suggestions=self._suggest(None, history), **common)

    def stream(self, question: str, history: Sequence[Turn] = (),
               signals: Signals | None = None) -> Iterator[str | Reply]:
        reply = self.answer(question, history, signals)
        words = reply.text.split(" ")
        for i, word in enumerate(words):
            yield word if i == 0 else " " + word
        yield reply
