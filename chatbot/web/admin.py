"""The admin API (mounted under /api/v1/admin): re-index, conversation browser and deletion,
export, stats, topics, the frustration alert, the webhook delivery log.

Every route needs ``Authorization: Bearer <admin token>`` (``require_admin`` on the router, so
no route can be added without it). Bodies are the read models of the conversation log as they
are: the full ``ConversationView`` with hits, reasons, hand-overs and feedback, summaries,
``Stats`` and the re-index job's ``ReindexStatus``.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response, StreamingResponse

from chatbot.conversations.alerts import AlertStatus, FrustrationAlert
from chatbot.conversations.jobs import ReindexStatus
from chatbot.conversations.topics import TopicReport, categories_from, topic_report
from chatbot.conversations.views import ConversationView, Stats, StatsSeries
from chatbot.conversations.webhooks import DeliveryView
from chatbot.web.deps import Service, require_admin
from chatbot.web.schemas import MAX_INT, ConversationPage, ErrorOut, ReindexRequest

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
    limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0, le=MAX_INT),
) -> ConversationPage:
    filters: dict[str, Any] = dict(status=status, channel=channel, since=since, until=until, q=q)
    items = service.list_conversations(**filters, limit=limit, offset=offset)
    return ConversationPage(total=service.count_conversations(**filters), limit=limit,
                            offset=offset, items=items)


@router.get("/conversations/{conversation_id}", response_model=ConversationView)
def conversation(conversation_id: str, service: Service) -> ConversationView:
    return service.conversation(conversation_id)


@router.delete("/conversations/{conversation_id}", status_code=204, response_class=Response,
               responses={404: {"model": ErrorOut}})
def delete_conversation(conversation_id: str, service: Service) -> Response:
    """Delete the conversation and every row of it (messages, retrieval hits, feedback,
    hand-overs), e.g. on a customer's erasure request. 404 when there is none."""
    service.delete_conversation(conversation_id)
    return Response(status_code=204)


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


@router.get("/stats/timeseries", response_model=StatsSeries,
            responses={422: {"model": ErrorOut}})
def stats_timeseries(
    service: Service,
    since: Annotated[date | None, Query(
        description="First UTC day; default 30 days before until.")] = None,
    until: Annotated[date | None, Query(
        description="Last UTC day (inclusive); default today.")] = None,
) -> StatsSeries:
    """Per UTC day (by conversation start; at most 366 days): conversations, deflection and
    hand-over rates, average customer sentiment and the share of frustrated conversations."""
    return service.stats_series(since, until)


@router.get("/topics", response_model=TopicReport)
def topics(
    service: Service, since: datetime | None = None,
    min_questions: Annotated[int, Query(
        ge=1, le=10000, description="Fewest answered questions a topic needs to be ranked by "
        "sentiment.")] = 1,
) -> TopicReport:
    """Answered questions by FAQ category (of the cited entry), ranked by volume and by average
    customer sentiment (most negative first), and the unanswered questions in total (their
    clusters: /gaps)."""
    return topic_report(service.engine, categories_from(service.pipeline), since=since,
                        min_questions=min_questions)


@router.get("/alerts", response_model=list[AlertStatus])
def alerts(service: Service) -> list[AlertStatus]:
    """The frustration alert: whether it is firing (since when), its settings and the share of
    frustrated conversations in the current window."""
    return [FrustrationAlert(service.settings, service.engine).status()]


@router.get("/webhooks", response_model=list[DeliveryView])
def webhooks(service: Service, limit: int = Query(100, ge=1, le=500),
             offset: int = Query(0, ge=0, le=MAX_INT)) -> list[DeliveryView]:
    """The webhook delivery log, newest first: event, URL (without its secret path), status
    (pending, delivered, failed), attempts and the last error."""
    return service.webhooks.deliveries(limit=limit, offset=offset)
