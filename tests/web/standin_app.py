"""The app a test starts as a real server process: ``uvicorn --factory standin_app:create``.

Settings come from the environment (``CHATBOT_DATABASE_URL`` and the rest), the pipeline is the
deterministic stand-in (``tests/standin.py``), so a test can run several real server processes
on one database without loading models. ``CHATBOT_TEST_EVENTS_POLL_S`` raises how long a live
event follower waits before re-reading the table on its own, so a test can show that events
cross processes through the database's notifications, not through the periodic re-read.
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from standin import StandInPipeline

from chatbot.config import Settings
from chatbot.conversations import events
from chatbot.web.app import create_app


def create() -> FastAPI:
    poll = os.environ.get("CHATBOT_TEST_EVENTS_POLL_S")
    if poll:
        events.POLL_S = float(poll)
    return create_app(Settings(), pipeline=StandInPipeline(), mount_ui=False)
