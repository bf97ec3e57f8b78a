"""Typed records passed between the stages: documents, turns, hits, signals and replies.

Stages exchange these frozen dataclasses, never loose dicts, so the pipeline's contract is
visible in one place.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal, Protocol

DocKind = Literal["faq", "dialogue"]
Role = Literal["customer", "agent"]
# How urgently a person should pick up a hand-over: "high" for a frustrated customer.
Priority = Literal["normal", "high"]
PRIORITIES: tuple[Priority, ...] = ("normal", "high")


@dataclass(frozen=True)
class Turn:
    """One message of a conversation. ``route`` is set on bot turns the pipeline produced;
    ``faq_id`` on the ones that answered from an FAQ (its first cited FAQ), so suggestions skip
    what was already answered. Both are part of the turn: turns that differ in them lead to
    different replies, so they are not equal."""

    role: Role
    text: str
    route: str | None = None
    faq_id: str | None = None


@dataclass(frozen=True)
class Document:
    """One retrievable unit: an FAQ entry, or a past customer turn with the agent's reply.

    ``id`` is a hash of the content, so re-ingesting unchanged data is idempotent and an
    incremental re-index can tell what changed. ``record_id`` is the stable id from the
    source (FAQ id, or ``dlg-0001#3`` for the customer turn at index 3 of a dialogue).
    """

    id: str
    record_id: str
    kind: DocKind
    question: str
    answer: str
    category: str = ""
    alternatives: tuple[str, ...] = ()
    context: tuple[Turn, ...] = ()
    source: str = ""
    outcome: str | None = None

    @property
    def phrasings(self) -> tuple[str, ...]:
        """The texts that are embedded for this document: the question and its alternatives."""
        return (self.question, *self.alternatives)

    @staticmethod
    def content_hash(
        *,
        kind: str,
        question: str,
        answer: str,
        category: str = "",
        alternatives: Sequence[str] = (),
        context: Sequence[Turn] = (),
        record_id: str = "",
    ) -> str:
        payload = json.dumps(
            [kind, record_id, question, answer, category, list(alternatives),
             [[t.role, t.text] for t in context]],
            ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:20]


@dataclass(frozen=True)
class Hit:
    """A retrieved document with how it was found. ``rank`` is 1-based after fusion."""

    document: Document
    score: float
    rank: int
    dense_score: float | None = None
    keyword_score: float | None = None
    dense_rank: int | None = None
    keyword_rank: int | None = None
    matched: str = ""


@dataclass(frozen=True)
class Signals:
    """What one customer message says about the customer's state (read by
    ``chatbot.answering.signals.SignalReader``; defined here so replies and the policy can carry
    it without importing the reader)."""

    sentiment: float  # VADER compound of the message, -1 (negative) .. 1 (positive)
    frustration: float  # 0..1, the fitted logistic score
    frustrated: bool  # frustration >= the frustration threshold
    strongly_frustrated: bool = False  # frustrated, and the strong score >= its threshold
    # Names of the cues that fired, by their pull on the frustration score (most first;
    # "polite", which pulls the other way, last).
    cues: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "sentiment": round(self.sentiment, 4), "frustration": round(self.frustration, 4),
            "frustrated": self.frustrated, "strongly_frustrated": self.strongly_frustrated,
            "cues": list(self.cues),
        }

    def describe(self) -> str:
        """One line for a routing reason: "frustration 0.93 (anger, says_repeated)"."""
        cues = ", ".join(self.cues) or "no cue"
        return f"frustration {self.frustration:.2f} ({cues})"


# What a reader returns when the message is empty.
NO_SIGNALS = Signals(sentiment=0.0, frustration=0.0, frustrated=False)


class Route(str, Enum):  # noqa: UP042 - StrEnum would change str() of members, used in logs
    """How a reply was produced."""

    FAQ = "faq"  # an approved FAQ answer, verbatim
    GENERATED = "generated"  # a grounded generated answer citing sources
    FALLBACK = "fallback"  # "I'm not sure" with an offer of a human
    HANDOFF = "handoff"  # handed over to a human
    # A person from the support team has the conversation: the bot stayed silent (no bot
    # message is logged; the conversation service sets it, never the pipeline).
    AGENT = "agent"


@dataclass(frozen=True)
class Reply:
    """What the pipeline answers. ``sources`` are the hits the answer relies on (cited);
    ``hits`` are everything retrieval returned, for the log."""

    text: str
    route: Route
    confidence: float
    reason: str
    sources: tuple[Hit, ...] = ()
    hits: tuple[Hit, ...] = ()
    model: str | None = None
    index_version: str | None = None
    latency_ms: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)
    signals: Signals | None = None  # of the customer's message; None when not read
    priority: Priority = "normal"  # of a hand-over (route HANDOFF)
    # Questions to offer next as chips (CHATBOT_SUGGESTIONS); none after a hand-over.
    suggestions: tuple[Suggestion, ...] = ()


class AnswerPipeline(Protocol):
    """What the serving layer needs from the answer pipeline.
    ``chatbot.answering.pipeline.Pipeline``
    implements it; tests pass a small deterministic stand-in with the same methods."""

    @property
    def index_version(self) -> str | None: ...

    def ready(self) -> bool: ...

    def reload(self) -> None:
        """Switch to the active index version if it changed since it was loaded."""
        ...

    def close(self) -> None:
        """Stop what serving started (the embedder's micro-batching worker, the generator's
        connections); called on shutdown. The pipeline stays usable."""
        ...

    def read_signals(self, question: str, history: Sequence[Turn] = ()) -> Signals | None:
        """Sentiment and frustration of a customer message given the earlier turns, or None
        when signals are off. The conversation service reads them before it logs the message
        and hands them back to ``answer``/``stream``, so they are read once."""
        ...

    def answer(self, question: str, history: Sequence[Turn] = (),
               signals: Signals | None = None) -> Reply: ...

    def stream(self, question: str, history: Sequence[Turn] = (),
               signals: Signals | None = None) -> Iterator[str | Reply]:
        """Yield text deltas as they are produced, then exactly one final ``Reply``.
        ``signals`` are the message's (from ``read_signals``); None means read them here."""
        ...


@dataclass(frozen=True)
class Suggestion:
    """A question offered to the customer as a clickable chip: the FAQ it opens, and its
    question as the knowledge base words it (``chatbot.answering.suggest`` picks them)."""

    faq_id: str
    question: str
