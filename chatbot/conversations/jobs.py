"""Background re-index job: one at a time per process, with progress the admin can poll.

Owns the thread that runs ``chatbot.retrieval.index.reindex`` for the admin API and the admin
tab, and then tells the serving pipeline to ``reload()`` the new active version. Both edges
share the job through ``ChatService`` so a second click while one runs gets a clear "already
running".
``ReindexStatus`` is the one shape of its progress: the admin API returns it as it is.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, computed_field

from chatbot.config import Settings
from chatbot.errors import ConflictError
from chatbot.types import AnswerPipeline

log = logging.getLogger(__name__)

JobState = Literal["idle", "running", "done", "failed"]
Reindexer = Callable[..., Any]


class ReindexStatus(BaseModel):
    """A snapshot of the re-index job; done and total count embedded phrasings."""

    # The admin API returns it as it is: every field is always there, defaulted or not.
    model_config = ConfigDict(frozen=True, json_schema_serialization_defaults_required=True)

    state: JobState = "idle"
    stage: str = ""
    done: int = 0
    total: int = 0
    full: bool = False
    started_at: datetime | None = None
    finished_at: datetime | None = None
    summary: str = ""
    report: dict[str, Any] | None = None
    error: str | None = None

    @computed_field  # type: ignore[prop-decorator]  # pydantic documents this pattern
    @property
    def fraction(self) -> float:
        if self.state == "done":
            return 1.0
        return self.done / self.total if self.total else 0.0


class ReindexJob:
    """Runs re-indexing in a daemon thread; ``status()`` is safe to call from any thread."""

    def __init__(
        self, settings: Settings, pipeline: AnswerPipeline, reindexer: Reindexer | None = None
    ) -> None:
        self._settings = settings
        self._pipeline = pipeline
        # None: chatbot.retrieval.index.reindex, imported when first used
        self._reindexer = reindexer
        self._lock = threading.Lock()
        self._status = ReindexStatus()
        self._thread: threading.Thread | None = None

    def status(self) -> ReindexStatus:
        with self._lock:
            return self._status

    def start(self, *, full: bool = False) -> ReindexStatus:
        """Start a re-index; raise ConflictError when one is already running."""
        with self._lock:
            if self._status.state == "running":
                raise ConflictError(
                    "a re-index is already running: poll GET /api/v1/admin/reindex/status"
                )
            self._status = ReindexStatus(
                state="running", stage="starting", started_at=datetime.now(UTC), full=full
            )
            self._thread = threading.Thread(
                target=self._run, kwargs={"full": full}, name="reindex", daemon=True
            )
            self._thread.start()
            return self._status

    def wait(self, timeout: float | None = None) -> ReindexStatus:
        """Block until the running job ends (tests and the CLI use it)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.status()

    def _progress(self, done: int, total: int, stage: str) -> None:
        with self._lock:
            self._status = self._status.model_copy(
                update=dict(done=done, total=total, stage=stage))

    def _run(self, *, full: bool) -> None:
        try:
            reindexer: Reindexer
            if self._reindexer is not None:
                reindexer = self._reindexer
            else:
                from chatbot.retrieval.index import reindex as reindexer
            report = reindexer(self._settings, full=full, progress=self._progress)
            self._progress(self._status.done, self._status.total, "reloading")
            self._pipeline.reload()
            if dataclasses.is_dataclass(report) and not isinstance(report, type):
                fields = dataclasses.asdict(report)
            else:
                fields = dict(report) if isinstance(report, dict) else {}
            summary = report.summary() if hasattr(report, "summary") else str(report)
            with self._lock:
                self._status = self._status.model_copy(update=dict(
                    state="done", stage="done", report=fields, summary=summary,
                    finished_at=datetime.now(UTC),
                ))
            log.info("re-index finished: %s", summary)
        except Exception as error:  # the job must record any failure, not die silently
            log.exception("re-index failed")
            with self._lock:
                self._status = self._status.model_copy(update=dict(
                    state="failed", stage="failed", error=str(error),
                    finished_at=datetime.now(UTC),
                ))
