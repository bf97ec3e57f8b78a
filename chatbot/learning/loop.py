"""The learning loop on a running server: resolved hand-overs in, a fresh index out.

``LearningLoop(service)`` subscribes to the service's ``on_resolved`` callbacks (a person
resolved a hand-over, ``chatbot.conversations.agents``; the conversation service never imports
this package) and turns each resolved conversation into suggestions on one background worker,
so resolving stays as fast as it was and two resolutions never race each other's merges.
Approving, withdrawing or editing served knowledge starts the service's background re-index
(``ChatService.start_reindex``, whose job function ``chatbot.web.app`` sets to
``chatbot.learning.knowledge.reindexer_for``); when one is already running, which may have read
the suggestions before this change, another starts as soon as it ends. Replicas follow the new
ACTIVE version as for any re-index.

A resolved hand-over is marked read (``handoffs.learned_at``) once its conversation has been
turned into suggestions. ``attach`` queues the resolved ones still unread (oldest first, at most
``CATCH_UP_LIMIT``), so a conversation resolved while its process stopped, or whose suggestion
failed, is read when a server starts. Two processes may read the same conversation: every
customer message feeds at most one suggestion, so the second adds nothing.

The edges (``chatbot.web.improve`` and ``ui.improve``) call this object, never the queue.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from chatbot.conversations.jobs import ReindexStatus
from chatbot.conversations.models import Handoff, utcnow
from chatbot.conversations.service import ChatService
from chatbot.errors import ConflictError
from chatbot.learning.gaps import gap_report
from chatbot.learning.suggestions import APPROVED, UNSET, Searcher, SuggestionQueue
from chatbot.learning.views import GapReport, Review, Suggestion

log = logging.getLogger(__name__)

# Resolved hand-overs read at start-up at most: a backlog larger than this (a server down for
# long) is read over the next starts rather than holding one start's worker for hours.
CATCH_UP_LIMIT = 1000

NO_RETRIEVER = ("this server's answer pipeline has no retriever (a stand-in?): the content-gap "
                "report needs its embedder")


class LearningLoop:
    """Suggestions from resolved conversations, the admin's review, and the re-index after."""

    def __init__(self, service: ChatService, *, searcher: Searcher | None = None) -> None:
        self.service = service
        self.settings = service.settings
        self._searcher = searcher
        self._queue: SuggestionQueue | None = None
        self._lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="learning")
        self._submitted: list[Future[list[int]]] = []
        self._follow_up = False  # a re-index is queued behind the running one

    # --- wiring -------------------------------------------------------------------------------
    @property
    def searcher(self) -> Searcher | None:
        """The serving pipeline's retriever: the same index, embedder and query cache, already
        loaded by the server's warm-up. None when the pipeline has none (a test's stand-in):
        then nothing is suggested and there is no gap report, the review still works."""
        if self._searcher is None:
            found = getattr(self.service.pipeline, "retriever", None)
            if found is not None and hasattr(found, "embedder") and hasattr(found, "search"):
                self._searcher = found
        return self._searcher

    @property
    def queue(self) -> SuggestionQueue:
        if self._queue is None:
            self._queue = SuggestionQueue(self.settings, self.service.engine, self.searcher)
        return self._queue

    def attach(self) -> bool:
        """Subscribe to resolved hand-overs; False when there is nothing to subscribe to (no
        agent desk) or nothing to suggest with (no retriever)."""
        subscribe = getattr(self.service, "on_resolved", None)
        if subscribe is None or self.searcher is None:
            log.warning("no suggested FAQs on this server: %s", "the conversation service has "
                        "no agent desk" if subscribe is None else "the pipeline has no retriever")
            return False
        subscribe(lambda resolution: self.resolved(resolution.conversation_id))
        self.catch_up()
        return True

    def catch_up(self) -> int:
        """Queue the conversations of resolved hand-overs not read yet, oldest first; returns
        how many were queued."""
        with self.service.engine.connect() as connection:
            rows = connection.execute(
                select(Handoff.conversation_id, Handoff.resolved_at)
                .where(Handoff.resolved_at.is_not(None), Handoff.learned_at.is_(None))
                .order_by(Handoff.resolved_at).limit(CATCH_UP_LIMIT)).all()
        unread = list(dict.fromkeys(row.conversation_id for row in rows))
        if unread:
            log.info("reading %d resolved conversation(s) not yet turned into suggestions",
                     len(unread))
        for conversation_id in unread:
            self.resolved(conversation_id)
        return len(unread)

    # --- suggestions --------------------------------------------------------------------------
    def resolved(self, conversation_id: str) -> Future[list[int]]:
        """Queue a resolved conversation for suggestions (runs on the background worker)."""
        future = self._worker.submit(self._suggest, conversation_id)
        with self._lock:
            self._submitted = [f for f in self._submitted if not f.done()] + [future]
        return future

    def _suggest(self, conversation_id: str) -> list[int]:
        try:
            touched = self.queue.suggest_from_conversation(conversation_id)
            # Marked only now: a failure leaves it unread, to be read at the next start.
            with self.service.engine.begin() as connection:
                connection.execute(
                    update(Handoff)
                    .where(Handoff.conversation_id == conversation_id,
                           Handoff.resolved_at.is_not(None), Handoff.learned_at.is_(None))
                    .values(learned_at=utcnow()))
            return touched
        except Exception:  # a failed suggestion must never disturb serving; the log has it
            log.exception("no suggestions from conversation %s", conversation_id)
            return []

    def flush(self, timeout: float | None = None) -> None:
        """Wait for the queued conversations (tests, benchmarks, shutdown)."""
        with self._lock:
            pending = list(self._submitted)
        wait_all(pending, timeout=timeout)

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)

    # --- the admin's review -------------------------------------------------------------------
    def list(self, *, status: str | None = None, limit: int = 50,
             offset: int = 0) -> tuple[int, list[Suggestion]]:
        return (self.queue.count(status=status),
                self.queue.list(status=status, limit=limit, offset=offset))

    def get(self, suggestion_id: int) -> Suggestion:
        return self.queue.get(suggestion_id)

    def update(self, suggestion_id: int, *, question: str | None = None,
               answer: str | None = None, category: str | None = None,
               linked_faq_id: Any = UNSET) -> Review:
        suggestion = self.queue.update(suggestion_id, question=question, answer=answer,
                                       category=category, linked_faq_id=linked_faq_id)
        served = suggestion.status in APPROVED
        return Review(suggestion=suggestion, reindex=self.refresh_index() if served else None)

    def approve(self, suggestion_id: int, *, question: str | None = None,
                answer: str | None = None, category: str | None = None) -> Review:
        suggestion = self.queue.approve(suggestion_id, question=question, answer=answer,
                                        category=category)
        return Review(suggestion=suggestion, reindex=self.refresh_index())

    def reject(self, suggestion_id: int) -> Review:
        suggestion, was_served = self.queue.reject(suggestion_id)
        return Review(suggestion=suggestion, reindex=self.refresh_index() if was_served else None)

    def gaps(self, *, since: datetime | None = None, limit: int | None = None) -> GapReport:
        if self.searcher is None:
            raise ConflictError(NO_RETRIEVER)
        return gap_report(self.settings, self.service.engine, self.searcher.embedder,
                          since=since, limit=limit)

    # --- re-index -----------------------------------------------------------------------------
    def refresh_index(self) -> ReindexStatus:
        """Start the background re-index, or queue one right after the running one."""
        try:
            return self.service.start_reindex()
        except ConflictError:
            with self._lock:
                queued, self._follow_up = self._follow_up, True
            if not queued:
                threading.Thread(target=self._after_running, name="reindex-follow-up",
                                 daemon=True).start()
            return self.service.reindex_status()

    def _after_running(self) -> None:
        while True:
            self.service.wait_reindex()
            with self._lock:
                self._follow_up = False
            try:
                self.service.start_reindex()
                return
            except ConflictError:  # someone else started one meanwhile: follow that one
                with self._lock:
                    if self._follow_up:
                        return
                    self._follow_up = True
