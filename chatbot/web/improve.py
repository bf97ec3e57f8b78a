"""The learning loop's admin API (mounted under /api/v1/admin): suggested FAQs and content gaps.

Every route needs ``Authorization: Bearer <admin token>`` (``require_admin`` on the router).
Suggestions are reviewed here: list, edit (question, answer, category, or the FAQ they are
linked to), approve (a new FAQ entry, or new phrasings of the linked FAQ) and reject; approving
starts the background re-index, whose progress ``GET /api/v1/admin/reindex/status`` reports.
The content-gap report is JSON or CSV. Bodies are the read models of ``chatbot.learning.views``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from chatbot.learning.gaps import report_csv
from chatbot.learning.loop import LearningLoop
from chatbot.learning.suggestions import UNSET
from chatbot.learning.views import GapReport, Review, Suggestion, SuggestionPage
from chatbot.web.deps import require_admin
from chatbot.web.schemas import MAX_INT, ErrorOut

Status = Literal["pending", "approved", "rejected", "merged_into_faq", "all"]
SuggestionId = Annotated[int, Path(ge=0, le=MAX_INT)]  # bounded: the database's integer


async def get_learning(request: Request) -> LearningLoop:
    learning: LearningLoop = request.app.state.learning
    return learning


Learning = Annotated[LearningLoop, Depends(get_learning)]

router = APIRouter(tags=["improve"], dependencies=[Depends(require_admin)],
                   responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut},
                              422: {"model": ErrorOut}})


class SuggestionEdit(BaseModel):
    """What the admin may change; fields left out stay as they are. ``linked_faq_id``: the FAQ
    whose phrasings these are (pending suggestions only); null or "" makes it a new entry."""

    model_config = ConfigDict(extra="forbid")

    question: str | None = Field(None, description="The FAQ's question.")
    answer: str | None = Field(None, description="The approved answer, as customers will read it.")
    category: str | None = Field(None, max_length=100)
    linked_faq_id: str | None = Field(None, max_length=200)


class ApproveRequest(BaseModel):
    """Optional last edits made together with the approval."""

    model_config = ConfigDict(extra="forbid")

    question: str | None = None
    answer: str | None = None
    category: str | None = Field(None, max_length=100)


@router.get("/suggestions", response_model=SuggestionPage)
def suggestions(learning: Learning, status: Status = "pending",
                limit: int = Query(50, ge=1, le=500),
                offset: int = Query(0, ge=0, le=MAX_INT)) -> SuggestionPage:
    """The review queue, most asked first (``status`` defaults to pending; ``all``: any)."""
    total, items = learning.list(status=None if status == "all" else status, limit=limit,
                                 offset=offset)
    return SuggestionPage(total=total, limit=limit, offset=offset, items=items)


@router.get("/suggestions/{suggestion_id}", response_model=Suggestion)
def suggestion(suggestion_id: SuggestionId, learning: Learning) -> Suggestion:
    return learning.get(suggestion_id)


@router.patch("/suggestions/{suggestion_id}", response_model=Review,
              responses={409: {"model": ErrorOut}})
def edit(suggestion_id: SuggestionId, body: SuggestionEdit, learning: Learning) -> Review:
    """Edit a suggestion; an approved one is re-indexed."""
    linked = body.linked_faq_id if "linked_faq_id" in body.model_fields_set else UNSET
    return learning.update(suggestion_id, question=body.question, answer=body.answer,
                           category=body.category, linked_faq_id=linked)


@router.post("/suggestions/{suggestion_id}/approve", response_model=Review,
             responses={409: {"model": ErrorOut}})
def approve(suggestion_id: SuggestionId, learning: Learning,
            body: ApproveRequest | None = None) -> Review:
    """Approve it into the knowledge base and start the background re-index."""
    body = body or ApproveRequest()
    return learning.approve(suggestion_id, question=body.question, answer=body.answer,
                            category=body.category)


@router.post("/suggestions/{suggestion_id}/reject", response_model=Review,
             responses={409: {"model": ErrorOut}})
def reject(suggestion_id: SuggestionId, learning: Learning) -> Review:
    """Reject it (an approved one is withdrawn from the index by a re-index)."""
    return learning.reject(suggestion_id)


@router.get("/gaps", response_model=GapReport,
            responses={200: {"content": {"text/csv": {}}}})
def gaps(learning: Learning, since: datetime | None = None,
         fmt: Literal["json", "csv"] = Query("json", alias="format"),
         limit: int | None = Query(None, ge=10, le=20000,
                                   description="Most recent questions clustered at most.")
         ) -> GapReport | Response:
    """Fallback, hand-over and thumbs-down questions clustered by topic, most asked first."""
    report = learning.gaps(since=since, limit=limit)
    if fmt == "json":
        return report
    return Response(report_csv(report), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": 'attachment; filename="content-gaps.csv"'})
