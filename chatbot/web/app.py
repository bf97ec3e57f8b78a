"""The web app: ``create_app(settings)`` wires one FastAPI app and owns nothing else.

It builds the ``ChatService`` and puts it, the settings and the rate limiter on ``app.state``
(the routers reach them through ``chatbot.web.deps``), adds CORS (open only to
``settings.cors_origins``) and nosniff, installs the error handlers (``chatbot.web.errors``),
includes the routers (``chat`` under /api/v1, ``admin`` under /api/v1/admin,
``openai_compat`` under /v1), serves the widget's files under /widget/ and mounts the Gradio UI
at /. Every chat goes through ``ChatService``, which logs it.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine

from chatbot import __version__
from chatbot.config import Settings
from chatbot.conversations.engine import check_schema, make_engine
from chatbot.conversations.jobs import Reindexer
from chatbot.conversations.service import ChatService
from chatbot.errors import ConfigError
from chatbot.types import AnswerPipeline
from chatbot.web import admin, chat, openai_compat
from chatbot.web.errors import NoSniffMiddleware, install_error_handlers
from chatbot.web.ratelimit import SlidingWindowLimiter

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]


def widget_dir() -> Path:
    """ui/widget next to the `ui` package (a repository checkout or an installed wheel)."""
    spec = importlib.util.find_spec("ui")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations))) / "widget"
    return ROOT / "ui" / "widget"


def create_app(settings: Settings, *, pipeline: AnswerPipeline | None = None,
               engine: Engine | None = None, mount_ui: bool = True,
               reindexer: Reindexer | None = None) -> FastAPI:
    """Build the app. ``pipeline`` defaults to the real one; tests pass a stand-in."""
    if pipeline is None:
        from chatbot.answering.pipeline import build_pipeline  # heavy; only when serving for real

        pipeline = build_pipeline(settings)
    owns_engine = engine is None
    engine = engine or make_engine(settings)
    check_schema(engine)  # fail at start with "run `chatbot db upgrade`", not on first chat
    service = ChatService(settings, pipeline, engine, reindexer=reindexer)
    if not settings.resolved_admin_token:  # raises ConfigError now when prod has none
        raise ConfigError("the admin token is empty: set CHATBOT_ADMIN_TOKEN")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Load the index now (in a thread), so the first customer does not wait for it.
        await anyio.to_thread.run_sync(_warm_up, service.pipeline)
        yield
        if owns_engine:
            engine.dispose()

    app = FastAPI(
        title="Support chatbot API", version=__version__, docs_url="/docs", lifespan=lifespan,
        description="Customer-service chatbot: chat (JSON or SSE), feedback, hand-over, admin.",
    )
    # What the routers' dependencies (chatbot.web.deps) read: one of each per app.
    app.state.service = service
    app.state.settings = settings
    app.state.limiter = SlidingWindowLimiter(settings.rate_limit_per_minute)
    app.add_middleware(
        CORSMiddleware, allow_origins=list(settings.cors_origins), allow_credentials=False,
        allow_methods=["GET", "POST", "OPTIONS"], allow_headers=["Content-Type", "Authorization"],
    )
    app.add_middleware(NoSniffMiddleware)
    install_error_handlers(app)

    app.include_router(chat.router, prefix="/api/v1")
    app.include_router(admin.router, prefix="/api/v1/admin")
    app.include_router(openai_compat.router, prefix="/v1")

    widgets = widget_dir()
    if widgets.is_dir():
        app.mount("/widget", StaticFiles(directory=widgets), name="widget")
    else:
        log.warning("widget folder %s not found: /widget/ is not served", widgets)
    if mount_ui:
        app = _mount_gradio(app, service, settings)
    return app


def _warm_up(pipeline: AnswerPipeline) -> None:
    try:
        if not pipeline.ready():
            log.warning("the pipeline is not ready (no index?): run `chatbot reindex`")
    except Exception:  # serving starts anyway; /health reports not ready
        log.warning("pipeline warm-up failed", exc_info=True)


def _mount_gradio(app: FastAPI, service: ChatService, settings: Settings) -> FastAPI:
    """Mount the Gradio UI at / (last, so it does not shadow the API routes)."""
    try:
        from ui.gradio_app import mount_ui  # Gradio 6 takes theme and CSS at mount time

        return mount_ui(app, service, settings, path="/")
    except Exception:  # the API must still serve when the UI cannot be built
        log.warning("Gradio UI not mounted (ui.gradio_app could not be loaded)", exc_info=True)
        return app
