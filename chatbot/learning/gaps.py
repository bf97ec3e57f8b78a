"""The content-gap report: what customers ask that the knowledge base does not answer.

Owns collecting the questions the bot fell back on, handed over, or answered with a thumbs-down
(``chatbot.learning.transcript.failed_questions``) since a date, clustering them by topic and
ranking the topics by volume, and the report's CSV.

Clustering: the questions' MiniLM vectors (the serving embedder), agglomerative clustering with
average linkage over cosine distance, cut at ``gap_distance_threshold`` (how 0.5 was chosen:
``chatbot.config``). Deterministic (no random start), no number of topics to guess, and a lone
question stays its own topic instead of being forced into another. It holds an n x n distance
matrix, so only the ``gap_max_questions`` most recent questions are clustered. A topic's label
is its most typical question, the one closest to the topic's mean vector.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import Engine, func, select, union_all

from chatbot.config import Settings
from chatbot.conversations.models import Feedback, Message
from chatbot.conversations.views import to_utc
from chatbot.learning.transcript import Question, failed_questions, read_transcripts
from chatbot.learning.views import GapReport, GapTopic

EXAMPLES = 5
CONVERSATION_LINKS = 20
CSV_COLUMNS = ("rank", "questions", "conversations", "fallbacks", "handoffs", "thumbs_down",
               "label", "examples", "conversation_ids", "first_at", "last_at")


def collect(engine: Engine, *, since: datetime | None, limit: int) -> list[Question]:
    """The most recent failed questions (at most ``limit``), newest first."""
    since = to_utc(since)
    failures = select(Message.conversation_id.label("cid"),
                      Message.created_at.label("at")).where(
        Message.role == "bot", Message.route.in_(("fallback", "handoff")))
    downs = select(Feedback.conversation_id.label("cid"), Feedback.created_at.label("at")).where(
        Feedback.rating == "down", Feedback.message_id.is_not(None))
    if since is not None:
        failures = failures.where(Message.created_at >= since)
        downs = downs.where(Feedback.created_at >= since)
    both = union_all(failures, downs).subquery()
    latest = (select(both.c.cid).group_by(both.c.cid)
              .order_by(func.max(both.c.at).desc(), both.c.cid).limit(limit))
    with engine.connect() as connection:
        ids = list(connection.scalars(latest).all())
        transcripts = read_transcripts(connection, ids)
    found = [q for cid, lines in transcripts.items() for q in failed_questions(cid, lines)
             if since is None or _when(q) >= since]
    found.sort(key=lambda q: (_when(q), q.message_id), reverse=True)
    return found[:limit]


def _when(question: Question) -> datetime:
    """The question's time in UTC (SQLite hands timestamps back naive)."""
    when = to_utc(question.created_at)
    assert when is not None
    return when


def cluster(vectors: np.ndarray, distance_threshold: float) -> np.ndarray:
    """A topic number per row (see the module docstring)."""
    if len(vectors) < 2:
        return np.zeros(len(vectors), dtype=np.int64)
    from sklearn.cluster import AgglomerativeClustering  # heavy; only when a report is asked

    model = AgglomerativeClustering(n_clusters=None, distance_threshold=distance_threshold,
                                    metric="cosine", linkage="average")
    return np.asarray(model.fit_predict(vectors), dtype=np.int64)


def topics(found: Sequence[Question], vectors: np.ndarray,
           labels: np.ndarray) -> list[GapTopic]:
    """The clusters as topics, most questions first (then most conversations, then newest)."""
    built: list[dict[str, Any]] = []
    for topic in sorted(set(labels.tolist())):
        rows = [i for i in range(len(found)) if labels[i] == topic]
        centre = vectors[rows].mean(axis=0)
        centre = centre / (np.linalg.norm(centre) or 1.0)
        typical = sorted(rows, key=lambda i: (-float(vectors[i] @ centre), found[i].message_id))
        examples: list[str] = []
        seen: set[str] = set()
        for i in typical:
            key = " ".join(found[i].text.casefold().split())
            if key not in seen and len(examples) < EXAMPLES:
                seen.add(key)
                examples.append(found[i].text)
        newest = sorted(rows, key=lambda i: _when(found[i]), reverse=True)
        conversations = list(dict.fromkeys(found[i].conversation_id for i in newest))
        times = [_when(found[i]) for i in rows]
        outcomes = [found[i].outcome for i in rows]
        built.append(dict(
            label=examples[0], questions=len(rows), conversations=len(conversations),
            fallbacks=outcomes.count("fallback"), handoffs=outcomes.count("handoff"),
            thumbs_down=outcomes.count("thumbs_down"), examples=examples,
            conversation_ids=conversations[:CONVERSATION_LINKS],
            first_at=min(times), last_at=max(times)))
    built.sort(key=lambda t: (-t["questions"], -t["conversations"], -t["last_at"].timestamp(),
                              t["label"]))
    return [GapTopic(rank=rank, **fields) for rank, fields in enumerate(built, start=1)]


def gap_report(settings: Settings, engine: Engine, embedder: Any, *,
               since: datetime | None = None, limit: int | None = None) -> GapReport:
    """Failed questions since ``since`` clustered into topics; ``embedder`` is the serving
    ``Embedder`` (its ``encode``)."""
    found = collect(engine, since=since, limit=limit or settings.gap_max_questions)
    if found:
        vectors = np.asarray(embedder.encode([q.text for q in found]), dtype=np.float32)
        ranked = topics(found, vectors, cluster(vectors, settings.gap_distance_threshold))
    else:
        ranked = []
    return GapReport(since=to_utc(since), questions=len(found),
                     distance_threshold=settings.gap_distance_threshold, topics=ranked)


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    # A customer's "=HYPERLINK(...)" must stay text when the admin opens the file in a
    # spreadsheet.
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def report_csv(report: GapReport) -> str:
    """One row per topic, in rank order."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for t in report.topics:
        writer.writerow([_cell(v) for v in (
            t.rank, t.questions, t.conversations, t.fallbacks, t.handoffs, t.thumbs_down,
            t.label, " | ".join(t.examples), " ".join(t.conversation_ids),
            t.first_at.isoformat(), t.last_at.isoformat())])
    return buffer.getvalue()
