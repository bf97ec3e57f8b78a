"""The review queue of suggested FAQs: made from resolved conversations, reviewed by the admin.

``SuggestionQueue.suggest_from_conversation`` turns each exchange of a resolved conversation
(``chatbot.learning.transcript``: the questions the bot did not answer and a person's answer)
into a suggestion, unless it is one already:

- **merge**: a pending suggestion whose phrasings reach ``suggestion_merge_threshold`` cosine
  with the new questions, or whose answer reaches ``suggestion_answer_threshold`` with the
  agent's answer, takes the new questions as sources (its ``count`` is the number of
  conversations behind it);
- **link**: otherwise, an existing FAQ (retrieved for the question) whose phrasing reaches
  ``suggestion_link_threshold``, or whose answer reaches ``suggestion_answer_threshold`` with
  the agent's, is linked: the FAQ missed these phrasings, and approving adds them to it rather
  than creating a second entry. An FAQ the customer gave a thumbs-down for this question is
  never the link: it was found, and it was the wrong answer.

The admin lists, edits, approves and rejects (``list``, ``update``, ``approve``, ``reject``);
``chatbot.learning.knowledge`` reads the approved ones into the index. Every customer message
feeds at most one suggestion (a unique key), so resolving a conversation again adds nothing.

What a suggestion keeps is redacted (``chatbot.answering.privacy``, whatever
``CHATBOT_STORE_VERBATIM`` says): once approved, its question and answer are served to every
customer, and an agent's reply may quote the customer's own email or card. A company address an
agent gave is redacted too; the admin puts it back while reviewing.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

import numpy as np
from sqlalchemy import Engine, delete, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from chatbot.answering.inputs import check_message, check_text
from chatbot.answering.privacy import Redactor
from chatbot.config import Settings
from chatbot.conversations.engine import make_sessionmaker
from chatbot.conversations.models import (
    SUGGESTION_STATUSES,
    FaqSuggestion,
    FaqSuggestionSource,
    utcnow,
)
from chatbot.errors import ConflictError, IndexNotReadyError, InvalidRequestError, NotFoundError
from chatbot.learning.transcript import ANSWER_WORDS, Exchange, exchanges, read_transcripts
from chatbot.learning.views import Suggestion, SuggestionSource
from chatbot.types import Hit

log = logging.getLogger(__name__)

CATEGORY_CHARS = 100
RECORD_ID_CHARS = 200
CATEGORY_GUESS = 0.5  # the nearest FAQ's category is offered when its cosine reaches this
APPROVED = ("approved", "merged_into_faq")  # statuses whose knowledge is in the index
UNSET: Any = object()  # "not given" for update(), where None means "unlink"
_WORDS = re.compile(r"[\w']+")


class Searcher(Protocol):
    """What the queue needs of ``chatbot.retrieval.search.Retriever``: its embedder (for
    merging) and FAQ search (for linking)."""

    embedder: Any  # .encode_queries(texts) -> list of unit vectors

    def search(self, query: str, history: Sequence[Any] = (), k: int | None = None) -> list[Hit]:
        ...


def phrasings(row: FaqSuggestion) -> list[str]:
    """The suggestion's question, then the distinct customer questions behind it."""
    seen: set[str] = set()
    found = []
    for text in (row.question, *(source.question for source in row.sources)):
        key = " ".join(text.casefold().split())
        if key and key not in seen:
            seen.add(key)
            found.append(text.strip())
    return found


def view_of(row: FaqSuggestion) -> Suggestion:
    return Suggestion(
        id=row.id, question=row.question, answer=row.answer, category=row.category,
        status=row.status, count=row.count, linked_faq_id=row.linked_faq_id,
        link_score=row.link_score, record_id=row.record_id, created_at=row.created_at,
        updated_at=row.updated_at, approved_at=row.approved_at, phrasings=phrasings(row),
        sources=[SuggestionSource.model_validate(source) for source in row.sources],
    )


def _long_enough(answer: str) -> bool:
    """Short answers ("Yes, we do.") say nothing about which question they answer."""
    return len(_WORDS.findall(answer)) >= ANSWER_WORDS


class SuggestionQueue:
    """Suggested FAQs: made from resolved conversations, merged, linked, reviewed."""

    def __init__(self, settings: Settings, engine: Engine, searcher: Searcher | None) -> None:
        """``searcher``: the serving retriever; None leaves only the review (listing, edits,
        approve, reject) working, as for a server without one."""
        self.settings = settings
        self.engine = engine
        self.searcher = searcher
        self._sessions = make_sessionmaker(engine)
        self._redactor = Redactor.from_settings(settings, verbatim=False)
        # One conversation at a time in this process, so two resolved at once see each other's
        # suggestions and merge instead of both creating one.
        self._lock = threading.Lock()

    # --- from a resolved conversation ------------------------------------------------------------
    def suggest_from_conversation(self, conversation_id: str) -> list[int]:
        """Add the conversation's exchanges to the queue; returns the suggestion ids touched."""
        with self._lock:
            with self.engine.connect() as connection:
                lines = read_transcripts(connection, [conversation_id]).get(conversation_id, [])
                known = set(connection.scalars(
                    select(FaqSuggestionSource.message_id)
                    .where(FaqSuggestionSource.conversation_id == conversation_id)).all())
            touched = []
            for exchange in exchanges(conversation_id, lines):
                fresh = tuple(replace(q, text=self._redactor.redact(q.text))
                              for q in exchange.questions if q.message_id not in known)
                if fresh:
                    found = self._add(replace(exchange, questions=fresh,
                                              answer=self._redactor.redact(exchange.answer)))
                    if found is not None:
                        touched.append(found)
            return touched

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        if self.searcher is None:
            raise ConflictError("suggestions need the serving retriever's embedder, and this "
                                "server has none")
        # Through the query cache: pending suggestions are compared again at every resolve.
        return np.asarray(self.searcher.embedder.encode_queries(list(texts)), dtype=np.float32)

    def _add(self, exchange: Exchange) -> int | None:
        texts = [q.text for q in exchange.questions]
        vectors = self._embed(texts)
        answer = self._embed([exchange.answer])[0] if _long_enough(exchange.answer) else None
        rejected = {record for q in exchange.questions if q.outcome == "thumbs_down"
                    for record in q.cited}
        now = utcnow()
        with self._sessions() as session:
            target = self._merge_target(session, vectors, answer)
            if target is None:
                linked, score, category = self._link(texts, answer, rejected)
                target = FaqSuggestion(
                    question=texts[0], answer=exchange.answer, category=category,
                    status="pending", count=0, linked_faq_id=linked, link_score=score,
                    created_at=now, updated_at=now)
                session.add(target)
                session.flush()
            try:
                session.add_all([FaqSuggestionSource(
                    suggestion_id=target.id, conversation_id=exchange.conversation_id,
                    message_id=q.message_id, question=q.text, answer=exchange.answer,
                    created_at=now) for q in exchange.questions])
                session.flush()
                target.count = int(session.scalar(
                    select(func.count(func.distinct(FaqSuggestionSource.conversation_id)))
                    .where(FaqSuggestionSource.suggestion_id == target.id)) or 0)
                target.updated_at = now
                session.commit()
            except IntegrityError:  # another process took these messages first
                session.rollback()
                log.info("suggestion for conversation %s already made elsewhere",
                         exchange.conversation_id)
                return None
            log.info("suggestion %s now has %d conversation(s)", target.id, target.count)
            return int(target.id)

    def _merge_target(self, session: Session, vectors: np.ndarray,
                      answer: np.ndarray | None) -> FaqSuggestion | None:
        """The pending suggestion the new questions belong to, if any (the closest)."""
        pending = session.scalars(select(FaqSuggestion).where(FaqSuggestion.status == "pending")
                                  .options(selectinload(FaqSuggestion.sources))).all()
        if not pending:
            return None
        texts = [phrasings(row) for row in pending]
        flat = self._embed([t for group in texts for t in group])
        answers = self._embed([row.answer for row in pending]) if answer is not None else None
        best: tuple[float, FaqSuggestion] | None = None
        start = 0
        for i, (row, group) in enumerate(zip(pending, texts, strict=True)):
            block, start = flat[start:start + len(group)], start + len(group)
            close = float((vectors @ block.T).max()) if len(group) else 0.0
            scores = [close] if close >= self.settings.suggestion_merge_threshold else []
            if answers is not None and answer is not None and _long_enough(row.answer):
                agree = float(answers[i] @ answer)
                if agree >= self.settings.suggestion_answer_threshold:
                    scores.append(agree)
            if scores and (best is None or max(scores) > best[0]):
                best = (max(scores), row)
        return None if best is None else best[1]

    def _link(self, texts: Sequence[str], answer: np.ndarray | None,
              rejected: set[str]) -> tuple[str | None, float | None, str]:
        """(FAQ record id, cosine, category guess) of the existing FAQ these questions missed;
        (None, None, guess) when none is close enough."""
        hits: dict[str, Hit] = {}
        assert self.searcher is not None  # _embed checked it
        try:
            for text in texts:
                for hit in self.searcher.search(text, k=self.settings.top_k):
                    record = hit.document.record_id
                    if hit.document.kind != "faq" or record in rejected:
                        continue
                    if (hit.dense_score or 0.0) > (hits[record].dense_score or 0.0
                                                   if record in hits else -1.0):
                        hits[record] = hit
        except IndexNotReadyError:  # no index yet: nothing to link to
            return None, None, ""
        if not hits:
            return None, None, ""
        ranked = sorted(hits.values(), key=lambda h: -(h.dense_score or 0.0))
        guess = (ranked[0].document.category
                 if (ranked[0].dense_score or 0.0) >= CATEGORY_GUESS else "")
        agreement = (self._embed([h.document.answer for h in ranked]) @ answer
                     if answer is not None else np.zeros(len(ranked)))
        best: tuple[float, Hit] | None = None
        for hit, agree in zip(ranked, agreement, strict=True):
            scores = [s for s, limit in (
                (hit.dense_score or 0.0, self.settings.suggestion_link_threshold),
                (float(agree) if _long_enough(hit.document.answer) else 0.0,
                 self.settings.suggestion_answer_threshold)) if s >= limit]
            if scores and (best is None or max(scores) > best[0]):
                best = (max(scores), hit)
        if best is None:
            return None, None, guess
        return best[1].document.record_id, round(best[0], 4), best[1].document.category

    # --- the admin's review ------------------------------------------------------------------
    def list(self, *, status: str | None = None, limit: int = 50,
             offset: int = 0) -> list[Suggestion]:
        """Most asked first, then the most recently updated."""
        _check_status(status)
        with self._sessions() as session:
            rows = session.scalars(
                select(FaqSuggestion).where(*_where(status))
                .order_by(FaqSuggestion.count.desc(), FaqSuggestion.updated_at.desc(),
                          FaqSuggestion.id.desc())
                .limit(limit).offset(offset).options(selectinload(FaqSuggestion.sources))).all()
            return [view_of(row) for row in rows]

    def count(self, *, status: str | None = None) -> int:
        _check_status(status)
        self.prune()
        with self._sessions() as session:
            return int(session.scalar(select(func.count(FaqSuggestion.id))
                                      .where(*_where(status))) or 0)

    def prune(self) -> int:
        """Delete pending and rejected suggestions none of whose conversations exist any more
        (deleted on request or by the retention purge, which takes their sources with them):
        what the customers wrote goes with their conversations. Approved ones are the admin's
        words and stay. Returns how many went (``count`` calls it first)."""
        orphan = ~exists().where(FaqSuggestionSource.suggestion_id == FaqSuggestion.id)
        with self.engine.begin() as connection:
            gone = connection.execute(delete(FaqSuggestion).where(
                FaqSuggestion.status.in_(("pending", "rejected")), orphan)).rowcount
        if gone:
            log.info("%d suggestion(s) removed with their conversations", gone)
        return int(gone or 0)

    def get(self, suggestion_id: int) -> Suggestion:
        with self._sessions() as session:
            return view_of(self._row(session, suggestion_id))

    def update(self, suggestion_id: int, *, question: str | None = None,
               answer: str | None = None, category: str | None = None,
               linked_faq_id: str | None = UNSET) -> Suggestion:
        """Edit the texts (any status; an approved one is re-indexed by the caller) or the link
        (pending only; None or "" unlinks: approving then makes a new entry)."""
        with self._sessions() as session:
            row = self._row(session, suggestion_id)
            self._edit(row, question, answer, category, linked_faq_id)
            row.updated_at = utcnow()
            session.commit()
            return view_of(row)

    def approve(self, suggestion_id: int, *, question: str | None = None,
                answer: str | None = None, category: str | None = None) -> Suggestion:
        """Approve (after optional edits): a new entry ``sug-<id>``, or, when linked, new
        phrasings of the linked FAQ. The caller re-indexes."""
        with self._sessions() as session:
            row = self._row(session, suggestion_id)
            if row.status in APPROVED:
                raise ConflictError(f"suggestion {suggestion_id} is already approved "
                                    f"(as {row.record_id})")
            self._edit(row, question, answer, category, UNSET)
            now = utcnow()
            row.status = "merged_into_faq" if row.linked_faq_id else "approved"
            row.record_id = row.linked_faq_id or f"sug-{row.id}"
            row.approved_at = row.updated_at = now
            session.commit()
            log.info("suggestion %s approved as %s", row.id, row.record_id)
            return view_of(row)

    def reject(self, suggestion_id: int) -> tuple[Suggestion, bool]:
        """Reject a pending suggestion, or withdraw an approved one; returns it and whether
        its knowledge was in the index (the caller then re-indexes)."""
        with self._sessions() as session:
            row = self._row(session, suggestion_id)
            if row.status == "rejected":
                raise ConflictError(f"suggestion {suggestion_id} is already rejected")
            was_served = row.status in APPROVED
            row.status, row.record_id, row.approved_at = "rejected", None, None
            row.updated_at = utcnow()
            session.commit()
            return view_of(row), was_served

    def _row(self, session: Session, suggestion_id: int) -> FaqSuggestion:
        row = session.scalars(select(FaqSuggestion).where(FaqSuggestion.id == suggestion_id)
                              .options(selectinload(FaqSuggestion.sources))).first()
        if row is None:
            raise NotFoundError(f"suggestion {suggestion_id} does not exist")
        return row

    def _edit(self, row: FaqSuggestion, question: str | None, answer: str | None,
              category: str | None, linked_faq_id: str | None) -> None:
        limit = self.settings.max_message_chars
        if question is not None:
            row.question = check_message(question, limit, field="question")
        if answer is not None:
            row.answer = check_message(answer, limit, field="answer")
        if category is not None:
            row.category = check_text(category, CATEGORY_CHARS, field="category").strip()
        if linked_faq_id is UNSET:
            return
        if row.status != "pending":
            raise ConflictError(f"suggestion {row.id} is {row.status}: only a pending one can "
                                "be linked or unlinked")
        linked = check_text(linked_faq_id or "", RECORD_ID_CHARS, field="linked_faq_id").strip()
        if linked != (row.linked_faq_id or ""):
            if linked:
                self._check_faq(linked)
            row.link_score = None  # the admin's choice, not a measured one
        row.linked_faq_id = linked or None

    def _check_faq(self, record_id: str) -> None:
        """The FAQ exists in the serving index (checked when there is an index to ask)."""
        try:
            documents = getattr(self.searcher, "documents", None)
        except IndexNotReadyError:  # no index to check against: the re-index will skip it
            return
        if documents is not None and not any(
                d.record_id == record_id and d.kind == "faq" for d in documents):
            raise InvalidRequestError(f"no FAQ with id {record_id!r} in the index",
                                      field="linked_faq_id")


def _check_status(status: str | None) -> None:
    if status is not None and status not in SUGGESTION_STATUSES:
        raise InvalidRequestError(
            f"status must be one of {', '.join(SUGGESTION_STATUSES)}, not {status!r}",
            field="status")


def _where(status: str | None) -> list[Any]:
    return [] if status is None else [FaqSuggestion.status == status]
