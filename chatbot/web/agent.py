"""The agent API (mounted under /api/v1/agent): the inbox and what a person does with a hand-over.

Every route needs ``Authorization: Bearer <agent token>`` (``require_agent`` on the router;
``chatbot agents add NAME`` prints a token). The admin token does not open it: replies are
signed with a person's name. Each route is one ``service.agents`` call
(``chatbot.conversations.agents``); two agents claiming one conversation get 200 and 409 (who
has it). ``/conversations/{id}/events`` is the agent's live view of a conversation: the
customer's messages and new hand-overs as well as the agents' own events.
"""

from __future__ import annotations

from functools import partial

import anyio
from fastapi import APIRouter, Depends, Header, Query
from sse_starlette import EventSourceResponse

from chatbot.conversations.agents import AgentMessage, AgentView, InboxItem
from chatbot.conversations.events import AGENT_EVENTS, conversation_exists
from chatbot.conversations.views import ConversationView
from chatbot.errors import NotFoundError
from chatbot.web.deps import Service, SignedInAgent, rate_limit, require_agent
from chatbot.web.schemas import MAX_INT, AgentActionResponse, AgentReplyRequest, ErrorOut
from chatbot.web.sse import event_source, follow, resume_from

# Rate limit first: wrong tokens count too, so tokens cannot be guessed quickly.
router = APIRouter(tags=["agent"], dependencies=[Depends(rate_limit), Depends(require_agent)],
                   responses={401: {"model": ErrorOut}, 429: {"model": ErrorOut}})
ACTION_ERRORS: dict[int | str, dict[str, type[ErrorOut]]] = {
    404: {"model": ErrorOut}, 409: {"model": ErrorOut}}


@router.get("/me", response_model=AgentView)
def me(agent: SignedInAgent) -> AgentView:
    """The signed-in agent (a quick check of a token)."""
    return agent


@router.get("/inbox", response_model=list[InboxItem])
def inbox(service: Service, agent: SignedInAgent,
          transcripts: bool = Query(True, description="Include each conversation's whole "
                                    "transcript with the bot's sources and reasons."),
          limit: int = Query(100, ge=1, le=500)) -> list[InboxItem]:
    """Open hand-overs, high priority first, then the longest waiting; a claimed one names
    its agent in ``claimed_by``."""
    return service.agents.inbox(transcripts=transcripts, limit=limit)


@router.get("/conversations/{conversation_id}", response_model=ConversationView,
            responses={404: {"model": ErrorOut}})
def conversation(conversation_id: str, service: Service, agent: SignedInAgent
                 ) -> ConversationView:
    """The whole conversation as staff see it (customer reference, sources, reasons)."""
    return service.conversation(conversation_id)


@router.post("/conversations/{conversation_id}/claim", response_model=InboxItem,
             responses=ACTION_ERRORS)
def claim(conversation_id: str, service: Service, agent: SignedInAgent) -> InboxItem:
    """Take the hand-over: the customer is told you joined, and the bot goes quiet."""
    return service.agents.claim(conversation_id, agent)


@router.post("/conversations/{conversation_id}/reply", response_model=AgentMessage,
             responses={**ACTION_ERRORS, 422: {"model": ErrorOut}})
def reply(conversation_id: str, body: AgentReplyRequest, service: Service,
          agent: SignedInAgent) -> AgentMessage:
    """Write to the customer (claims a waiting hand-over first); they see it live."""
    return service.agents.reply(conversation_id, agent, body.text)


@router.post("/conversations/{conversation_id}/handback", response_model=AgentActionResponse,
             responses=ACTION_ERRORS)
def handback(conversation_id: str, service: Service,
             agent: SignedInAgent) -> AgentActionResponse:
    """Give the conversation back to the bot, unresolved."""
    service.agents.handback(conversation_id, agent)
    return AgentActionResponse(conversation_id=conversation_id, status="handed_back",
                               agent=agent.name)


@router.post("/conversations/{conversation_id}/resolve", response_model=AgentActionResponse,
             responses=ACTION_ERRORS)
def resolve(conversation_id: str, service: Service,
            agent: SignedInAgent) -> AgentActionResponse:
    """Resolved: the bot answers the conversation again; ``conversation.resolved`` goes out."""
    service.agents.resolve(conversation_id, agent)
    return AgentActionResponse(conversation_id=conversation_id, status="resolved",
                               agent=agent.name)


@router.get("/conversations/{conversation_id}/events", response_class=EventSourceResponse,
            responses={200: {"content": {"text/event-stream": {}}}, 404: {"model": ErrorOut}})
async def events(conversation_id: str, service: Service, agent: SignedInAgent,
                 last_event_id: str | None = Header(None),
                 after: int | None = Query(None, ge=0, le=MAX_INT)) -> EventSourceResponse:
    """The conversation live for an agent: ``customer_message``, ``handoff_created``,
    ``agent_joined``, ``agent_message``, ``agent_left``, ``resolved`` (resumable as the
    customer's stream is)."""
    start = resume_from(last_event_id, after)
    if not await anyio.to_thread.run_sync(conversation_exists, service.engine, conversation_id):
        raise NotFoundError(f"conversation {conversation_id} does not exist")
    return event_source(follow(service.events, conversation_id, start, AGENT_EVENTS,
                               partial(service.agents.state, conversation_id)))
