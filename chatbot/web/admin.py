"""The admin API (mounted under /api/v1/admin): re-index, conversation browser, export, stats.

Every route needs ``Authorization: Bearer <admin token>`` (``require_admin`` on the router, so
no route can be added without it). Bodies are the read models of the conversation log as they
are: the full ``ConversationView`` with hits, reasons, hand-overs and feedback, summaries,
``Stats`` and the re-index job's ``ReindexStatus``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from chatbot.conversations.jobs import ReindexStatus
from chatbot.conversations.views import ConversationView, Stats
from chatbot.web.deps import Service, require_admin
from chatbot.web.schemas import ConversationPage, ErrorOut, ReindexRequest

router = APIRouter(tags=["admin"], dependencies=[Depends(require_admin)],
                   responses={401: {"model": ErrorOut}})


@router.post("/reindex", response_model=ReindexStatus, status_code=202,
             responses={409: {"model": ErrorOut}})
def reindex(service: Service, request: ReindexRequest | None = None) -> ReindexStatus:
    """Re-index the knowledge base in the background, then reload the pipeline."""
    return service.start_reindex(full=bool(request and request.full))


@router.get("/reindex/status", response_model=ReindexStatus)
def reindex_status(service: Service) -> ReindexStatus:
    return service.reindex_status()


@router.get("/conversations", response_model=ConversationPage)
def conversations(
    service: Service,
    status: Literal["open", "handed_off", "closed"] | None = None,
    channel: Literal["web", "widget", "api"] | None = None,
    since: datetime | None = None, until: datetime | None = None,
    q: str | None = Query(None, max_length=200, description="Text in any message."),
    limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0),
) -> ConversationPage:
    filters: dict[str, Any] = dict(status=status, channel=channel, since=since, until=until, q=q)
    items = service.list_conversations(**filters, limit=limit, offset=offset)
    return ConversationPage(total=service.count_conversations(**filters), limit=limit,
                            offset=offset, items=items)


@router.get("/conversations/{conversation_id}", response_model=ConversationView)
def conversation(conversation_id: str, service: Service) -> ConversationView:
    return service.conversation(conversation_id)


@router.get("/export", response_class=StreamingResponse)
def export(service: Service, fmt: Literal["csv", "jsonl"] = Query("jsonl", alias="format"),
           since: datetime | None = None, until: datetime | None = None) -> StreamingResponse:
    """The whole log, streamed: CSV (a row per message) or JSONL (a conversation per line)."""
    lines = service.export(fmt, since=since, until=until)
    media = "text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson"
    return StreamingResponse(lines, media_type=media, headers={
        "Content-Disposition": f'attachment; filename="conversations.{fmt}"'})


@router.get("/stats", response_model=Stats)
def stats(service: Service, since: datetime | None = None) -> Stats:
    return service.stats(since)
