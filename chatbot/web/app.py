"""The web app: ``create_app(settings)`` wires one FastAPI app and owns nothing else.

It builds the ``ChatService`` and puts it, the settings and the rate limiter on ``app.state``
(the routers reach them through ``chatbot.web.deps``), adds the input guard (body size,
control characters: ``chatbot.web.guard``), CORS (open only to ``settings.cors_origins``) and
nosniff, installs the error handlers (``chatbot.web.errors``),
includes the routers (``chat`` under /api/v1, ``admin`` under /api/v1/admin, ``agent`` under
/api/v1/agent, ``openai_compat`` under /v1), serves the widget's files under /widget/ and
mounts the Gradio UI at /. Every chat goes through ``ChatService``, which logs it. Its
start-up (lifespan) loads the index and the models before the server accepts a connection,
then builds the suggested questions' statistics in a background thread (about a minute: the
server answers meanwhile, without suggestions), and starts the periodic purge of old
conversations when ``CHATBOT_RETENTION_DAYS`` is set and the frustration alert's periodic
check (``chatbot.conversations.alerts``, every ``CHATBOT_ALERT_INTERVAL_S``); its
shut-down stops those, the live-event listener and the webhook sender. ``app_from_env`` is the
factory each worker process of ``chatbot serve --workers N`` builds its app with.

The learning loop (``chatbot.learning.loop.LearningLoop``) is subscribed to the agents'
resolved hand-overs, its admin routes (``improve``) are under /api/v1/admin, and the service's
re-index job includes the approved suggestions (``chatbot.learning.knowledge``).
"""

from __future__ import annotations

import importlib.util
import logging
import threading
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
from chatbot.conversations.alerts import AlertJob, FrustrationAlert
from chatbot.conversations.engine import check_schema, make_engine
from chatbot.conversations.jobs import Reindexer
from chatbot.conversations.retention import RetentionJob
from chatbot.conversations.service import ChatService
from chatbot.errors import ConfigError
from chatbot.learning.knowledge import reindexer_for
from chatbot.learning.loop import LearningLoop
from chatbot.types import AnswerPipeline
from chatbot.web import admin, agent, chat, improve, openai_compat
from chatbot.web.errors import NoSniffMiddleware, install_error_handlers
from chatbot.web.guard import InputGuard
from chatbot.web.ratelimit import RateLimiter

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
    # The re-index job reads the approved suggestions too, embedding with the serving model.
    embedder = getattr(getattr(pipeline, "retriever", None), "embedder", None)
    service = ChatService(settings, pipeline, engine,
                          reindexer=reindexer or reindexer_for(engine, embedder=embedder))
    learning = LearningLoop(service)  # suggested FAQs from resolved hand-overs
    learning.attach()
    if not settings.resolved_admin_token:  # raises ConfigError now when prod has none
        raise ConfigError("the admin token is empty: set CHATBOT_ADMIN_TOKEN")
    if settings.webhook_urls and not settings.webhook_secret and settings.env == "prod":
        raise ConfigError("CHATBOT_WEBHOOK_URLS needs CHATBOT_WEBHOOK_SECRET in prod, so "
                          "receivers can check that a call came from us")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Load the index and the models now (in a thread): the first customer waits for none.
        await anyio.to_thread.run_sync(_warm_up, service.pipeline)
        _start_suggestions(service.pipeline)
        retention = _start_retention(service, settings)
        alerts = _start_alerts(service, settings)
        yield
        if retention is not None:
            await anyio.to_thread.run_sync(retention.stop)
        if alerts is not None:
            await anyio.to_thread.run_sync(alerts.stop)
        # Live events' listener thread and the webhook sender (queued retries are dropped).
        await anyio.to_thread.run_sync(service.events.close)
        await anyio.to_thread.run_sync(service.webhooks.close)
        learning.close()
        if owns_engine:
            engine.dispose()

    app = FastAPI(
        title="Support chatbot API", version=__version__, docs_url="/docs", lifespan=lifespan,
        description="Customer-service chatbot: chat (JSON or SSE), feedback, hand-over, admin.",
    )
    # What the routers' dependencies (chatbot.web.deps) read: one of each per app.
    app.state.service = service
    app.state.settings = settings
    # Chat, admin and sign-in limits; in Redis when CHATBOT_REDIS_URL is set (shared by all
    # workers and replicas). The Gradio UI counts against the same limiter.
    app.state.limiter = RateLimiter(settings)
    app.state.learning = learning
    # Added first, so it runs inside CORS: a browser can read its 413 and 422 answers too.
    app.add_middleware(InputGuard, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(
        CORSMiddleware, allow_origins=list(settings.cors_origins), allow_credentials=False,
        allow_methods=["GET", "POST", "OPTIONS"],
        # Last-Event-ID: the widget resumes its live event stream after a dropped connection.
        allow_headers=["Content-Type", "Authorization", "Last-Event-ID"],
        # The widget on the shop's own origin reads a 429's wait to tell the customer.
        expose_headers=["Retry-After"],
    )
    app.add_middleware(NoSniffMiddleware)
    install_error_handlers(app)

    app.include_router(chat.router, prefix="/api/v1")
    app.include_router(admin.router, prefix="/api/v1/admin")
    app.include_router(improve.router, prefix="/api/v1/admin")
    app.include_router(agent.router, prefix="/api/v1/agent")
    app.include_router(openai_compat.router, prefix="/v1")

    widgets = widget_dir()
    if widgets.is_dir():
        app.mount("/widget", StaticFiles(directory=widgets), name="widget")
    else:
        log.warning("widget folder %s not found: /widget/ is not served", widgets)
    if mount_ui:
        app = _mount_gradio(app, service, settings)
    return app


def app_from_env() -> FastAPI:
    """The app from the environment's settings: the factory each ``chatbot serve --workers N``
    process calls (``uvicorn.run("chatbot.web.app:app_from_env", factory=True, ...)``), since
    an app object cannot be handed to another process. ``serve`` has already migrated the
    database, built the index and checked the settings."""
    settings = Settings()
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("chatbot").setLevel(settings.log_level.upper())
    return create_app(settings)


def _start_retention(service: ChatService, settings: Settings) -> RetentionJob | None:
    """The periodic purge of conversations past CHATBOT_RETENTION_DAYS, when that and
    CHATBOT_RETENTION_INTERVAL_S are set. Every replica runs one: a delete is idempotent."""
    if not (settings.retention_days and settings.retention_interval_s):
        return None
    job = RetentionJob(service.purge, settings.retention_interval_s)
    job.start()
    return job


def _start_suggestions(pipeline: AnswerPipeline) -> None:
    """Build the suggestions' statistics in a daemon thread: mapping the dialogues to FAQs
    takes about a minute, which must delay neither start-up nor any request (replies carry no
    suggestions until it is done; ``Pipeline.warm_up_suggestions`` logs its own failure)."""
    warm = getattr(pipeline, "warm_up_suggestions", None)  # stand-ins have none to build
    if warm is not None and pipeline.ready():
        threading.Thread(target=warm, name="suggestions-warm-up", daemon=True).start()


def _start_alerts(service: ChatService, settings: Settings) -> AlertJob | None:
    """The frustration alert's check every CHATBOT_ALERT_INTERVAL_S (0: off), off the request
    path. Every replica runs one; the alert's database row makes a crossing fire once."""
    if not settings.alert_interval_s:
        return None
    job = AlertJob(FrustrationAlert(settings, service.engine, service.webhooks),
                   settings.alert_interval_s)
    job.start()
    return job


def _warm_up(pipeline: AnswerPipeline) -> None:
    """Load the index, the embedder and the generator before the server accepts connections
    (uvicorn binds only after the lifespan start-up), so no customer pays for loading them."""
    warm = getattr(pipeline, "warm_up", None)  # stand-in pipelines have nothing to load
    try:
        if warm is not None:
            warm()
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
