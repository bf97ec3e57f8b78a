"""The web app: REST + SSE under /api/v1, the OpenAI-compatible endpoint, widget files, the UI.

``create_app(settings)`` builds one FastAPI app. Every chat goes through ``ChatService`` (which
logs it); this module only translates HTTP to service calls (``chatbot.web.errors`` turns
errors into status codes and JSON ``{"error": ...}`` bodies). Bodies are JSON or SSE, never
HTML built from input. Admin routes need ``Authorization: Bearer <admin token>``; chat routes
are rate-limited per client IP; CORS is open only to ``settings.cors_origins``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine, text

from chatbot import __version__
from chatbot.config import Settings
from chatbot.conversations.engine import check_schema, make_engine
from chatbot.conversations.jobs import Reindexer
from chatbot.conversations.service import ChatResult, ChatService, sources
from chatbot.errors import ChatbotError, ConfigError
from chatbot.types import AnswerPipeline
from chatbot.web.errors import (
    INTERNAL,
    AuthError,
    NoSniffMiddleware,
    RateLimited,
    install_error_handlers,
)
from chatbot.web.ratelimit import SlidingWindowLimiter
from chatbot.web.schemas import (
    AdminConversationOut,
    ChatRequest,
    ChatResponse,
    CloseResponse,
    ConversationOut,
    ConversationPage,
    ConversationSummaryOut,
    ErrorOut,
    FeedbackRequest,
    FeedbackResponse,
    HandoffRequest,
    HandoffResponse,
    HealthOut,
    ReindexRequest,
    ReindexStatusOut,
    SourceOut,
    StatsOut,
)

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
BEARER = HTTPBearer(auto_error=False, description="The admin token (CHATBOT_ADMIN_TOKEN).")
AdminCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]


def chat_response(result: ChatResult) -> ChatResponse:
    reply = result.reply
    return ChatResponse(
        conversation_id=result.conversation_id, message_id=result.message_id, reply=reply.text,
        route=getattr(reply.route, "value", str(reply.route)), confidence=reply.confidence,
        sources=[SourceOut(**vars(s)) for s in sources(reply)], handoff=result.handoff,
    )


def chat_body(result: ChatResult) -> dict[str, Any]:
    """The /chat response body (also the SSE ``done`` event and the UI's data)."""
    return chat_response(result).model_dump(mode="json")


def sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


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
    app.state.service = service
    app.state.settings = settings
    app.add_middleware(
        CORSMiddleware, allow_origins=list(settings.cors_origins), allow_credentials=False,
        allow_methods=["GET", "POST", "OPTIONS"], allow_headers=["Content-Type", "Authorization"],
    )

    app.add_middleware(NoSniffMiddleware)
    install_error_handlers(app)
    limiter = SlidingWindowLimiter(settings.rate_limit_per_minute)

    async def rate_limit(request: Request) -> None:  # async: no thread hop for a dict lookup
        client = request.client.host if request.client else "unknown"
        wait = limiter.check(client)
        if wait is not None:
            raise RateLimited(wait)

    async def require_admin(credentials: AdminCredentials) -> None:
        if credentials is None or not service.check_admin_token(credentials.credentials):
            raise AuthError("missing or wrong admin token: send Authorization: Bearer <token>")

    app.include_router(_public_routes(service, rate_limit), prefix="/api/v1")
    app.include_router(_admin_routes(service), prefix="/api/v1/admin",
                       dependencies=[Depends(require_admin)])
    from chatbot.web.openai import openai_router

    app.include_router(openai_router(service, rate_limit), prefix="/v1")

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


def _public_routes(service: ChatService, rate_limit: Any) -> APIRouter:
    router = APIRouter(tags=["chat"])
    limited = [Depends(rate_limit)]

    @router.post("/chat", response_model=ChatResponse, dependencies=limited,
                 responses={404: {"model": ErrorOut}, 422: {"model": ErrorOut}})
    def chat(request: ChatRequest) -> Response:
        """Answer one message; the round trip is logged."""
        result = service.chat(
            request.message, conversation_id=request.conversation_id, channel=request.channel,
            customer_ref=request.customer_ref,
        )
        # Serialised once, straight from the model: the hot path skips FastAPI's re-validation.
        return Response(chat_response(result).model_dump_json(), media_type="application/json")

    @router.post("/chat/stream", dependencies=limited, response_class=StreamingResponse,
                 responses={200: {"content": {"text/event-stream": {}}}})
    def chat_stream(request: ChatRequest) -> StreamingResponse:
        """Server-Sent Events: `meta` {conversation_id}, `token` {text} repeated, then `done`
        (the /chat body) or `error` {error}."""
        stream = service.chat_stream(
            request.message, conversation_id=request.conversation_id, channel=request.channel,
            customer_ref=request.customer_ref,
        )

        def events() -> Iterator[str]:
            yield sse("meta", {"conversation_id": stream.conversation_id})
            try:
                for item in stream:
                    if isinstance(item, str):
                        yield sse("token", {"text": item})
                    else:
                        yield sse("done", chat_body(item))
            except ChatbotError as error:
                log.warning("stream failed: %s", error, exc_info=error)
                yield sse("error", {"error": str(error)})
            except Exception:
                log.exception("stream failed")
                yield sse("error", {"error": INTERNAL})
            finally:
                stream.close()

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @router.get("/conversations/{conversation_id}", response_model=ConversationOut,
                responses={404: {"model": ErrorOut}})
    def conversation(conversation_id: str) -> ConversationOut:
        return ConversationOut.model_validate(service.conversation(conversation_id))

    @router.post("/feedback", response_model=FeedbackResponse, dependencies=limited)
    def feedback(request: FeedbackRequest) -> FeedbackResponse:
        return FeedbackResponse(feedback_id=service.feedback(
            message_id=request.message_id, conversation_id=request.conversation_id,
            rating=request.rating, csat=request.csat, comment=request.comment,
        ))

    @router.post("/handoff", response_model=HandoffResponse, dependencies=limited)
    def handoff(request: HandoffRequest) -> HandoffResponse:
        handoff_id = service.handoff(conversation_id=request.conversation_id,
                                     reason=request.reason)
        return HandoffResponse(handoff_id=handoff_id, conversation_id=request.conversation_id,
                               status="handed_off")

    @router.post("/conversations/{conversation_id}/close", response_model=CloseResponse,
                 dependencies=limited, responses={404: {"model": ErrorOut}})
    def close(conversation_id: str) -> CloseResponse:
        """The customer ended the chat; a new message in it reopens it."""
        ended = service.close(conversation_id)
        return CloseResponse(conversation_id=conversation_id, status="closed", ended_at=ended)

    @router.get("/health", response_model=HealthOut, responses={503: {"model": HealthOut}})
    def health() -> JSONResponse:
        """Ready (200) only when the pipeline has its index and models and the database answers."""
        try:
            ready = bool(service.pipeline.ready())
            index_version = service.pipeline.index_version
        except Exception as error:  # a broken pipeline is "not ready", not a 500
            log.warning("pipeline not ready: %s", error)
            ready, index_version = False, None
        try:
            with service.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            database = "ok"
        except Exception as error:
            log.warning("database check failed: %s", error)
            database = "unavailable"
        ok = ready and database == "ok"
        out = HealthOut(status="ready" if ok else "not ready", index_version=index_version,
                        database=database, version=__version__)
        return JSONResponse(out.model_dump(), status_code=200 if ok else 503)

    return router


def _admin_routes(service: ChatService) -> APIRouter:
    router = APIRouter(tags=["admin"], responses={401: {"model": ErrorOut}})

    @router.post("/reindex", response_model=ReindexStatusOut, status_code=202,
                 responses={409: {"model": ErrorOut}})
    def reindex(request: ReindexRequest | None = None) -> ReindexStatusOut:
        """Re-index the knowledge base in the background, then reload the pipeline."""
        status = service.start_reindex(full=bool(request and request.full))
        return ReindexStatusOut.model_validate(status)

    @router.get("/reindex/status", response_model=ReindexStatusOut)
    def reindex_status() -> ReindexStatusOut:
        return ReindexStatusOut.model_validate(service.reindex_status())

    @router.get("/conversations", response_model=ConversationPage)
    def conversations(
        status: Literal["open", "handed_off", "closed"] | None = None,
        channel: Literal["web", "widget", "api"] | None = None,
        since: datetime | None = None, until: datetime | None = None,
        q: str | None = Query(None, max_length=200, description="Text in any message."),
        limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0),
    ) -> ConversationPage:
        filters: dict[str, Any] = dict(status=status, channel=channel, since=since, until=until,
                                       q=q)
        items = service.list_conversations(**filters, limit=limit, offset=offset)
        return ConversationPage(
            total=service.count_conversations(**filters), limit=limit, offset=offset,
            items=[ConversationSummaryOut.model_validate(item) for item in items],
        )

    @router.get("/conversations/{conversation_id}", response_model=AdminConversationOut)
    def conversation(conversation_id: str) -> AdminConversationOut:
        return AdminConversationOut.model_validate(service.conversation(conversation_id))

    @router.get("/export", response_class=StreamingResponse)
    def export(fmt: Literal["csv", "jsonl"] = Query("jsonl", alias="format"),
               since: datetime | None = None, until: datetime | None = None) -> StreamingResponse:
        """The whole log, streamed: CSV (a row per message) or JSONL (a conversation per line)."""
        lines = service.export(fmt, since=since, until=until)
        media = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
        return StreamingResponse(lines, media_type=media, headers={
            "Content-Disposition": f'attachment; filename="conversations.{fmt}"'})

    @router.get("/stats", response_model=StatsOut)
    def stats(since: datetime | None = None) -> StatsOut:
        return StatsOut.model_validate(service.stats(since))

    return router
