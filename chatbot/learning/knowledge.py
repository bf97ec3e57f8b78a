"""Approved suggestions as knowledge: what the index is built from besides ``knowledge_base/``.

Owns the database knowledge source. An ``approved`` suggestion is an FAQ ``Document``
(``record_id`` sug-<id>, its category, question and answer, the other customer questions behind
it as alternatives, source ``suggestion:<id>``); a ``merged_into_faq`` one adds its question
and customer questions as phrasings of the FAQ it is linked to. ``reindex_with_approved`` is
``chatbot.retrieval.index.reindex`` with both, the one re-index that the CLI and the server's
background job run, so neither ever drops approved knowledge. Document ids stay content
hashes: an incremental re-index embeds only the new phrasings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import selectinload

from chatbot.config import Settings, mask_database_url
from chatbot.conversations.engine import make_engine, make_sessionmaker, unavailable
from chatbot.conversations.models import FaqSuggestion
from chatbot.errors import ConfigError
from chatbot.learning.suggestions import APPROVED, phrasings
from chatbot.retrieval.index import ReindexReport, reindex
from chatbot.types import Document

log = logging.getLogger(__name__)

SOURCE_PREFIX = "suggestion:"


@dataclass(frozen=True)
class Additions:
    """Knowledge from the database: new FAQ entries, and new phrasings of existing ones."""

    documents: tuple[Document, ...] = ()
    phrasings: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.documents or self.phrasings)


def document_of(row: FaqSuggestion) -> Document:
    """An approved suggestion as the FAQ entry the index serves."""
    question, *alternatives = phrasings(row)
    record_id = row.record_id or f"sug-{row.id}"
    return Document(
        id=Document.content_hash(kind="faq", record_id=record_id, question=question,
                                 answer=row.answer, category=row.category,
                                 alternatives=alternatives),
        record_id=record_id, kind="faq", question=question, answer=row.answer,
        category=row.category, alternatives=tuple(alternatives),
        source=f"{SOURCE_PREFIX}{row.id}",
    )


def approved_additions(engine: Engine) -> Additions:
    """Every approved suggestion, oldest first (empty before migration 0004 ran)."""
    if not inspect(engine).has_table(FaqSuggestion.__tablename__):
        log.info("no faq_suggestions table (run `chatbot db upgrade`): no approved suggestions")
        return Additions()
    with make_sessionmaker(engine)() as session:
        rows = session.scalars(
            select(FaqSuggestion).where(FaqSuggestion.status.in_(APPROVED))
            .order_by(FaqSuggestion.approved_at, FaqSuggestion.id)
            .options(selectinload(FaqSuggestion.sources))).all()
        documents = tuple(document_of(row) for row in rows if row.status == "approved")
        extra: dict[str, list[str]] = {}
        for row in rows:
            if row.status == "merged_into_faq" and row.linked_faq_id:
                extra.setdefault(row.linked_faq_id, []).extend(phrasings(row))
    return Additions(documents, {record: tuple(texts) for record, texts in extra.items()})


def reindex_with_approved(settings: Settings, *, engine: Engine, **options: Any) -> ReindexReport:
    """``reindex(settings, **options)`` over the knowledge base plus the approved suggestions
    read from ``engine`` now (at the start of the build)."""
    additions = approved_additions(engine)
    return reindex(settings, extra_documents=additions.documents,
                   extra_phrasings=additions.phrasings, **options)


def reindex_from_settings(settings: Settings, **options: Any) -> ReindexReport:
    """What ``chatbot reindex`` and ``chatbot serve`` run: the settings' database is read for
    approved suggestions, unless it is a SQLite file that does not exist yet (nothing can have
    been approved). A database that cannot be read stops the re-index: building without the
    approved entries would take them out of the serving index."""
    url = make_url(settings.resolved_database_url)
    database = url.database or ""
    if url.get_backend_name() == "sqlite" and (database in ("", ":memory:")
                                               or not Path(database).exists()):
        return reindex(settings, **options)
    engine = make_engine(settings)
    try:
        additions = approved_additions(engine)
    except SQLAlchemyError as error:
        reason = unavailable(error)
        raise ConfigError(
            f"cannot read the approved suggestions from "
            f"{mask_database_url(settings.resolved_database_url)} "
            f"({reason.reason if reason else type(error).__name__}): start the database, or "
            "run `chatbot db upgrade`; the index is left as it is") from error
    finally:
        engine.dispose()
    return reindex(settings, extra_documents=additions.documents,
                   extra_phrasings=additions.phrasings, **options)


def reindexer_for(engine: Engine, *, embedder: Any = None) -> Callable[..., ReindexReport]:
    """The server's re-index job function (``ChatService(reindexer=...)``). ``embedder``: the
    serving retriever's, so a re-index does not load a second copy of the model."""

    def run(settings: Settings, **options: Any) -> ReindexReport:
        if embedder is not None:
            options.setdefault("embedder", embedder)
        return reindex_with_approved(settings, engine=engine, **options)

    return run
