"""A server's periodic background work: one function called now and then every few seconds.

``PeriodicJob`` runs it in a daemon thread until ``stop()``; a failed run is logged with its
traceback and tried again at the next interval (a job must outlive a database hiccup). The
retention purge (``chatbot.conversations.retention.RetentionJob``) and the frustration alert's
check (``chatbot.conversations.alerts.AlertJob``) are the two; ``create_app`` starts and stops
them in its lifespan.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class PeriodicJob:
    """Calls ``work()`` now and then every ``interval_s`` seconds in a daemon thread named
    ``name``, until ``stop()``. ``what`` names the work in the log of a failed run."""

    def __init__(self, work: Callable[[], object], interval_s: float, *, name: str,
                 what: str) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self._work = work
        self._interval_s = interval_s
        self._name = name
        self._what = what
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs = 0  # runs finished, failed or not (tests read it)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._work()
            except Exception:  # the job must outlive a database hiccup
                log.exception("%s failed; trying again in %.0f s", self._what, self._interval_s)
            self.runs += 1
            self._stop.wait(self._interval_s)
