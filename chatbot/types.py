"""Typed records passed between the stages: documents, turns, hits and replies.

Stages exchange these frozen dataclasses, never loose dicts, so the pipeline's contract is
visible in one place.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal, Protocol

DocKind = Literal["faq", "dialogue"]
Role = Literal["customer", "agent"]


@dataclass(frozen=True)
class Turn:
    """One message of a conversation. ``route`` is set on bot turns the pipeline produced."""

    role: Role
    text: str
    route: str | None = None


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


class Route(str, Enum):  # noqa: UP042 - StrEnum would change str() of members, used in logs
    """How a reply was produced."""

    FAQ = "faq"  # an approved FAQ answer, verbatim
    GENERATED = "generated"  # a grounded generated answer citing sources
    FALLBACK = "fallback"  # "I'm not sure" with an offer of a human
    HANDOFF = "handoff"  # handed over to a human


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

    def answer(self, question: str, history: Sequence[Turn] = ()) -> Reply: ...

    def stream(self, question: str, history: Sequence[Turn] = ()) -> Iterator[str | Reply]:
        """Yield text deltas as they are produced, then exactly one final ``Reply``."""
        ...
