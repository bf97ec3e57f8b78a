"""Topics for the team's monitoring: what customers ask about, how often, and how they feel.

Owns the topic report: the questions the bot answered (an FAQ or a generated reply) grouped by
the category of the knowledge entry it answered from, ranked by volume and by the customers'
average sentiment (most negative first), and how many questions it could not answer (a
fallback or a hand-over). Clusters of those unanswered questions are the content-gap report
(``chatbot.learning.gaps``, ``GET /api/v1/admin/gaps``): clustering needs the embedder, which
this layer neither loads nor imports.

What counts (since ``since``, by the time of the bot's reply):
- an answered question is a bot message with route ``faq`` or ``generated``; its topic is the
  category of its first-ranked cited retrieval hit, so each answer has one topic and the volumes
  add up to the answered questions. Retrieval hits store the record id, not the category: the
  caller passes ``categories`` (record id -> category), read from the serving index with
  ``categories_from(pipeline)``. An entry no longer in the index, or one without a category,
  counts as ``uncategorised``.
- a question's sentiment and frustration are those of the customer message it answered: the
  conversation's latest customer message written at or before the reply.
The grouping by knowledge entry runs in SQL (one row per entry, not per message); folding
entries into categories happens here, since the categories live in the index, not the database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import Field
from sqlalchemy import ColumnElement, Engine, case, func, select
from sqlalchemy.orm import aliased

from chatbot.conversations.models import Message, RetrievalHit
from chatbot.conversations.views import ReadModel, UtcDatetime, to_utc
from chatbot.errors import ChatbotError

ANSWERED = ("faq", "generated")
UNANSWERED = ("fallback", "handoff")
UNCATEGORISED = "uncategorised"
TOP_ENTRIES = 3  # knowledge entries named per topic


class Topic(ReadModel):
    """A category of the knowledge base and the answered questions that fell into it."""

    topic: str = Field(description="The FAQ category (or 'uncategorised').")
    questions: int = Field(description="Answered questions in this category.")
    share: float = Field(description="Of all answered questions.")
    sentiment_avg: float | None = Field(
        description="Mean sentiment (-1..1) of the customer messages answered; null without "
        "signals.")
    frustrated: int = Field(description="Questions asked by a customer flagged frustrated.")
    frustrated_rate: float | None = Field(description="frustrated over questions with signals.")
    entries: list[str] = Field(description="Its most answered knowledge entries (record ids).")


class TopicReport(ReadModel):
    """Answered questions by topic, twice ranked, and the unanswered ones in total."""

    since: UtcDatetime | None
    answered: int
    unanswered: int = Field(description="Fallbacks and hand-overs: the questions clustered by "
                            "the content-gap report (/api/v1/admin/gaps).")
    unanswered_sentiment_avg: float | None
    unanswered_frustrated: int
    by_volume: list[Topic] = Field(description="Most questions first.")
    by_sentiment: list[Topic] = Field(
        description="Topics with signals and at least min_questions questions, most negative "
        "average sentiment first.")


def categories_from(pipeline: Any) -> dict[str, str]:
    """record id -> category of the serving index's documents (the pipeline's retriever);
    empty when the pipeline has no retriever or no index is loaded."""
    retriever = getattr(pipeline, "retriever", None)
    try:
        documents = getattr(retriever, "documents", None) or []
    except ChatbotError:  # no index yet: every topic is uncategorised, the report still works
        return {}
    return {d.record_id: d.category for d in documents if getattr(d, "category", "")}


@dataclass
class _Tally:
    questions: int = 0
    with_signals: int = 0
    sentiment_sum: float = 0.0
    frustrated: int = 0
    entries: dict[str, int] = field(default_factory=dict)

    def add(self, record_id: str | None, n: int, with_signals: int, sentiment: float | None,
            frustrated: int) -> None:
        self.questions += n
        self.with_signals += with_signals
        self.sentiment_sum += (sentiment or 0.0) * with_signals  # a mean back into a sum
        self.frustrated += frustrated
        if record_id is not None:
            self.entries[record_id] = self.entries.get(record_id, 0) + n

    def topic(self, name: str, answered: int) -> Topic:
        top = sorted(self.entries.items(), key=lambda item: (-item[1], item[0]))[:TOP_ENTRIES]
        return Topic(
            topic=name, questions=self.questions, share=self.questions / answered,
            sentiment_avg=(round(self.sentiment_sum / self.with_signals, 4)
                           if self.with_signals else None),
            frustrated=self.frustrated,
            frustrated_rate=self.frustrated / self.with_signals if self.with_signals else None,
            entries=[record_id for record_id, _ in top])


def _signal_columns(customer: Any) -> list[ColumnElement[Any]]:
    return [func.count(), func.avg(customer.sentiment), func.count(customer.sentiment),
            func.sum(case((customer.frustrated.is_(True), 1), else_=0))]


def topic_report(engine: Engine, categories: Mapping[str, str], *,
                 since: datetime | None = None, min_questions: int = 1) -> TopicReport:
    """The report (see the module docstring). ``min_questions`` keeps topics with fewer answered
    questions out of the sentiment ranking, where one unhappy customer would top it."""
    since = to_utc(since)
    bot = aliased(Message, name="bot")
    asked = aliased(Message, name="asked")
    customer = aliased(Message, name="customer")
    # The customer message a reply answered: correlated to the reply, one indexed lookup
    # (messages are indexed by conversation and time).
    question = (select(asked.id)
                .where(asked.conversation_id == bot.conversation_id, asked.role == "customer",
                       asked.created_at <= bot.created_at)
                .order_by(asked.created_at.desc(), asked.id.desc()).limit(1)
                .correlate(bot).scalar_subquery())
    replies = [bot.role == "bot"] + ([bot.created_at >= since] if since is not None else [])
    # One row per answer: its first-ranked cited hit (rank, then id, breaks any tie).
    answers = (
        select(RetrievalHit.record_id.label("record_id"), question.label("question_id"),
               func.row_number().over(partition_by=RetrievalHit.message_id,
                                      order_by=(RetrievalHit.rank, RetrievalHit.id)).label("n"))
        .join(bot, bot.id == RetrievalHit.message_id)
        .where(RetrievalHit.cited.is_(True), bot.route.in_(ANSWERED), *replies)
        .subquery())
    failures = (select(question.label("question_id")).select_from(bot)
                .where(bot.route.in_(UNANSWERED), *replies).subquery())
    with engine.connect() as connection:
        by_entry = connection.execute(
            select(answers.c.record_id, *_signal_columns(customer))
            .select_from(answers)
            .outerjoin(customer, customer.id == answers.c.question_id)
            .where(answers.c.n == 1).group_by(answers.c.record_id)).all()
        answered = int(connection.scalar(
            select(func.count()).select_from(bot).where(bot.route.in_(ANSWERED), *replies))
            or 0)
        unanswered = connection.execute(
            select(*_signal_columns(customer)).select_from(failures)
            .outerjoin(customer, customer.id == failures.c.question_id)).one()

    tallies: dict[str, _Tally] = {}
    for record_id, n, sentiment, with_signals, frustrated in by_entry:
        name = categories.get(record_id) or UNCATEGORISED
        tallies.setdefault(name, _Tally()).add(
            record_id, int(n), int(with_signals or 0),
            None if sentiment is None else float(sentiment), int(frustrated or 0))
    missing = answered - sum(t.questions for t in tallies.values())
    if missing > 0:  # answered without a cited hit (not logged that way today): still counted
        tallies.setdefault(UNCATEGORISED, _Tally()).add(None, missing, 0, None, 0)
    topics = [tally.topic(name, answered) for name, tally in tallies.items()]
    by_volume = sorted(topics, key=lambda t: (-t.questions, t.topic))
    by_sentiment = sorted(
        (t for t in topics if t.sentiment_avg is not None and t.questions >= min_questions),
        key=lambda t: (t.sentiment_avg, -t.questions, t.topic))
    n_failed, failed_sentiment, _, failed_frustrated = unanswered
    return TopicReport(
        since=since, answered=answered, unanswered=int(n_failed or 0),
        unanswered_sentiment_avg=(None if failed_sentiment is None
                                  else round(float(failed_sentiment), 4)),
        unanswered_frustrated=int(failed_frustrated or 0),
        by_volume=by_volume, by_sentiment=by_sentiment)
