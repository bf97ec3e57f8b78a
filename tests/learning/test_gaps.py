"""The content-gap report on a small log (SQLite and PostgreSQL, real MiniLM): failed questions
clustered by topic, ranked by volume, labelled, with their conversations; the CSV export."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import numpy as np
from dbfixtures import database_url, migrated_engine  # noqa: F401
from learning_log import write_conversation
from sqlalchemy import Engine

from chatbot.config import Settings
from chatbot.learning.gaps import CSV_COLUMNS, cluster, gap_report, report_csv

NOW = datetime.now(UTC)


def _fallback(engine: Engine, question: str, *, days_ago: float = 1.0) -> str:
    conversation_id, _ = write_conversation(engine, [
        ("customer", question), ("bot", "I'm not sure.", "fallback")],
        started=NOW - timedelta(days=days_ago))
    return conversation_id


def test_failed_questions_cluster_into_ranked_topics(settings: Settings, embedder,  # type: ignore[no-untyped-def]
                                                     migrated_engine: Engine  # noqa: F811
                                                     ) -> None:
    gift = [_fallback(migrated_engine, q, days_ago=d) for q, d in (
        ("Do you offer gift wrapping for presents?", 3), ("do you have gift wrapping", 2),
        ("Is gift wrapping offered?", 1))]
    price = [_fallback(migrated_engine, q) for q in ("do you price match other stores",
                                                     "do you price match amazon")]
    rated, _ = write_conversation(migrated_engine, [
        ("customer", "is the ridgeline tent waterproof in heavy rain"),
        ("bot", "Our tents are tested in 1500 mm rain.", "faq:prod-001-")])
    handed, _ = write_conversation(migrated_engine, [
        ("customer", "how long does shipping take"), ("bot", "3-5 days.", "faq:ship-001"),
        ("customer", "talk to a human"), ("bot", "Passing you on.", "handoff")])
    old = _fallback(migrated_engine, "do you sell snowshoes", days_ago=40)
    formula = _fallback(migrated_engine, '=HYPERLINK("http://x.example") do you ship to mars')

    report = gap_report(settings, migrated_engine, embedder)
    assert report.questions == 8  # no answered question, no bare request for a person
    by_label = {t.label: t for t in report.topics}
    first, second = report.topics[:2]
    assert first.questions == 3 and first.fallbacks == 3 and first.rank == 1
    assert set(first.conversation_ids) == set(gift)
    assert first.conversation_ids[0] == gift[-1]  # newest first
    assert first.label in first.examples and "gift wrap" in first.label.lower()
    assert second.questions == 2 and set(second.conversation_ids) == set(price)
    tent = next(t for t in report.topics if "tent" in t.label)
    assert (tent.thumbs_down, tent.fallbacks, tent.conversation_ids) == (1, 0, [rated])
    assert handed not in {c for t in report.topics for c in t.conversation_ids}
    assert "do you sell snowshoes" in by_label

    recent = gap_report(settings, migrated_engine, embedder, since=NOW - timedelta(days=7))
    assert recent.questions == 7 and "do you sell snowshoes" not in {t.label for t in
                                                                    recent.topics}
    assert old not in {c for t in recent.topics for c in t.conversation_ids}

    rows = list(csv.reader(io.StringIO(report_csv(report))))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == len(report.topics) + 1
    assert rows[1][0] == "1" and rows[1][1] == "3" and rows[1][6] == first.label
    assert any(row[6].startswith("'=HYPERLINK") for row in rows[1:])  # stays text in Excel
    assert formula in {c for row in rows[1:] for c in row[8].split()}


def test_an_empty_log_has_no_topics(settings: Settings, embedder,  # type: ignore[no-untyped-def]
                                    migrated_engine: Engine) -> None:  # noqa: F811
    report = gap_report(settings, migrated_engine, embedder)
    assert (report.questions, report.topics) == (0, [])
    assert report_csv(report).strip() == ",".join(CSV_COLUMNS)


def test_clustering_is_deterministic_and_keeps_outliers_alone(embedder) -> None:  # type: ignore[no-untyped-def]
    texts = ["do you offer gift wrapping", "is gift wrapping available", "do you have gift wrap",
             "what is the weather in bend oregon"]
    vectors = np.asarray(embedder.encode(texts), dtype=np.float32)
    labels = cluster(vectors, 0.5)
    assert labels[0] == labels[1] == labels[2] != labels[3]
    assert (cluster(vectors, 0.5) == labels).all()
    assert cluster(vectors[:1], 0.5).tolist() == [0]
