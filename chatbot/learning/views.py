"""The read models of the learning loop: suggestions and the content-gap report.

One pydantic model per record, also the admin API's responses (``chatbot.web.improve``) and what
the Improve tab shows, so the three never disagree about a field.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from chatbot.conversations.jobs import ReindexStatus
from chatbot.conversations.views import ReadModel, UtcDatetime


class SuggestionSource(ReadModel):
    """A customer question behind a suggestion and the agent's answer to it."""

    conversation_id: str
    message_id: str
    question: str
    answer: str
    created_at: UtcDatetime


class Suggestion(ReadModel):
    """A suggested FAQ in the review queue. ``phrasings`` are the distinct customer questions
    behind it (they become the entry's alternatives, or the linked FAQ's new phrasings)."""

    id: int
    question: str
    answer: str
    category: str
    status: str = Field(description="pending | approved | rejected | merged_into_faq")
    count: int = Field(description="Conversations that asked it.")
    linked_faq_id: str | None = Field(
        description="An existing FAQ that missed these phrasings: approving adds them to it.")
    link_score: float | None = Field(description="The cosine that linked it (question or answer).")
    record_id: str | None = Field(description="The knowledge entry it became (sug-N or the FAQ).")
    created_at: UtcDatetime
    updated_at: UtcDatetime
    approved_at: UtcDatetime | None
    phrasings: list[str]
    sources: list[SuggestionSource]


class Review(ReadModel):
    """A suggestion after the admin's action, and the re-index it started (None: the index is
    not affected, e.g. a pending suggestion edited or rejected)."""

    suggestion: Suggestion
    reindex: ReindexStatus | None


class SuggestionPage(ReadModel):
    total: int
    limit: int
    offset: int
    items: list[Suggestion]


class GapTopic(ReadModel):
    """A cluster of questions the bot could not answer, labelled by its most typical one."""

    rank: int
    label: str = Field(description="The question closest to the topic's centre.")
    questions: int
    conversations: int
    fallbacks: int
    handoffs: int
    thumbs_down: int
    examples: list[str] = Field(description="The most typical questions, label first.")
    conversation_ids: list[str] = Field(description="Newest first (at most 20).")
    first_at: UtcDatetime
    last_at: UtcDatetime


class GapReport(ReadModel):
    """Unanswered questions clustered by topic, most asked first."""

    since: datetime | None
    questions: int = Field(description="Questions clustered (the most recent ones, capped).")
    distance_threshold: float
    topics: list[GapTopic]
