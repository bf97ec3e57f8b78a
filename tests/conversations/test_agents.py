"""The agent desk on SQLite and PostgreSQL: accounts and hashed tokens, the inbox order, one
claim wins, agent replies, the bot staying silent while a person has the conversation, hand-back
and resolve returning it to the bot, the on_resolved hook, and what a hand-over promises."""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime, timedelta

import pytest
from dbfixtures import database_url, migrated_engine  # noqa: F401
from sqlalchemy import Engine, select, update
from standin import StandInPipeline

from chatbot.answering import prompt
from chatbot.config import Settings
from chatbot.conversations.agents import Resolution
from chatbot.conversations.availability import SupportHours, availability
from chatbot.conversations.engine import make_sessionmaker
from chatbot.conversations.models import Agent, Handoff, Message
from chatbot.conversations.service import ChatService
from chatbot.errors import ConfigError, ConflictError, InvalidRequestError, NotFoundError
from chatbot.types import Route


@pytest.fixture
def service(settings: Settings, migrated_engine: Engine) -> ChatService:  # noqa: F811
    return ChatService(settings, StandInPipeline(), migrated_engine)


def handed_over(service: ChatService, text: str = "I want a human") -> str:
    return service.chat(text).conversation_id


def test_a_token_is_shown_once_stored_hashed_and_checked(service: ChatService) -> None:
    agent, token = service.agents.add("  Sam   Lee ")
    assert agent.name == "Sam Lee" and agent.active and token.startswith("agt_")
    with make_sessionmaker(service.engine)() as session:
        stored = session.scalar(select(Agent.token_hash).where(Agent.id == agent.id))
    assert stored == hashlib.sha256(token.encode()).hexdigest() and token not in stored
    assert service.agents.authenticate(token).name == "Sam Lee"
    assert service.agents.authenticate(token + "x") is None
    assert service.agents.authenticate("") is None and service.agents.authenticate(None) is None
    assert service.agents.authenticate(service.settings.resolved_admin_token) is None
    seen = service.agents.list_agents()[0].last_seen_at
    assert seen is not None  # signing in is being seen
    with pytest.raises(ConflictError, match="exists"):
        service.agents.add("Sam Lee")
    with pytest.raises(InvalidRequestError):
        service.agents.add("   ")


def test_removing_an_agent_stops_the_token_and_frees_their_claims(service: ChatService) -> None:
    conv = handed_over(service)
    agent, token = service.agents.add("Ana")
    service.agents.claim(conv, agent)
    service.agents.remove("Ana")
    assert service.agents.authenticate(token) is None
    assert not service.agents.list_agents()[0].active
    (item,) = service.agents.inbox(transcripts=False)
    assert item.status == "pending" and item.claimed_by is None
    # A removed name can be added again, with a new token; the old one stays dead.
    again, new_token = service.agents.add("Ana")
    assert again.id == agent.id and new_token != token
    assert service.agents.authenticate(new_token) is not None
    assert service.agents.authenticate(token) is None
    with pytest.raises(NotFoundError):
        service.agents.remove("nobody")


def test_inbox_lists_high_priority_first_then_the_longest_waiting(service: ChatService) -> None:
    first, second, urgent = handed_over(service), handed_over(service), handed_over(service)
    calm = service.chat("How long does shipping take?").conversation_id  # no hand-over
    with service.engine.begin() as connection:  # as the signals would have marked it
        connection.execute(update(Handoff).where(Handoff.conversation_id == urgent)
                           .values(priority="high"))
    items = service.agents.inbox()
    assert [i.conversation_id for i in items] == [urgent, first, second]
    assert calm not in {i.conversation_id for i in items}
    item = items[1]
    assert item.status == "pending" and item.last_customer_message == "I want a human"
    assert item.conversation is not None  # the whole transcript, with the bot's reasons
    bot = [m for m in item.conversation.messages if m.role == "bot"]
    assert bot[0].route == "handoff" and bot[0].reason == "customer asked for a human"


def test_only_one_of_two_agents_claiming_at_once_gets_it(service: ChatService) -> None:
    conv = handed_over(service)
    agents = [service.agents.add(name)[0] for name in ("Ana", "Ben")]
    results: dict[str, str] = {}
    start = threading.Barrier(2)

    def claim(agent_index: int) -> None:
        agent = agents[agent_index]
        start.wait()
        try:
            service.agents.claim(conv, agent)
            results[agent.name] = "won"
        except ConflictError as error:
            results[agent.name] = str(error)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results.values()).count("won") == 1, results
    winner = next(name for name, outcome in results.items() if outcome == "won")
    loser = next(name for name in results if name != winner)
    assert winner in results[loser]  # the loser is told who has it
    (item,) = service.agents.inbox(transcripts=False)
    assert item.status == "claimed" and item.claimed_by == winner
    # The holder may claim again (a second click); the other still may not.
    service.agents.claim(conv, next(a for a in agents if a.name == winner))
    with pytest.raises(ConflictError, match=winner):
        service.agents.reply(conv, next(a for a in agents if a.name == loser), "me too")


def test_while_a_person_has_it_the_bot_stays_silent(service: ChatService) -> None:
    pipeline: StandInPipeline = service.pipeline  # type: ignore[assignment]
    conv = handed_over(service)
    # Waiting for a person, the bot still answers what it can.
    answered = service.chat("How long does shipping take?", conversation_id=conv)
    assert answered.reply.route == Route.FAQ
    agent, _ = service.agents.add("Sam")
    service.agents.claim(conv, agent)
    calls = len(pipeline.calls)
    result = service.chat("are you there?", conversation_id=conv)
    assert result.reply.route == Route.AGENT and result.agent == "Sam"
    assert result.reply.text == prompt.AGENT_HAS_IT_TEXT.format(agent="Sam")
    stream = service.chat_stream("hello?", conversation_id=conv)
    (only,) = list(stream)
    assert only.reply.route == Route.AGENT
    assert len(pipeline.calls) == calls  # the pipeline never ran
    messages = service.conversation(conv).messages
    assert [m.role for m in messages[-2:]] == ["customer", "customer"]  # logged, no bot reply
    seen = [e for e in service.events.read(conv) if e.type == "customer_message"]
    assert [e.data["text"] for e in seen][-2:] == ["are you there?", "hello?"]
    # The agent side hears every message while the hand-over is open, waiting or claimed,
    # each with the id of the logged message.
    assert [e.data["text"] for e in seen] == [
        "How long does shipping take?", "are you there?", "hello?"]
    assert [e.data["message_id"] for e in seen[1:]] == [result.message_id,
                                                        stream.customer_message_id]


def test_agent_replies_are_logged_with_the_name_and_reach_the_customer_stream(
        service: ChatService) -> None:
    conv = handed_over(service)
    agent, _ = service.agents.add("Sam")
    sent = service.agents.reply(conv, agent, "  Hi, I'm Sam. Let me check.  ")  # claims first
    assert sent.text == "Hi, I'm Sam. Let me check."
    with make_sessionmaker(service.engine)() as session:
        row = session.get(Message, sent.message_id)
        assert (row.role, row.agent_name, row.route) == ("agent", "Sam", None)
    transcript = service.conversation(conv).messages[-1]
    assert (transcript.role, transcript.agent_name) == ("agent", "Sam")
    kinds = [(e.type, e.data.get("agent")) for e in service.events.read(conv)]
    assert kinds == [("handoff_created", None), ("agent_joined", "Sam"),
                     ("agent_message", "Sam")]
    with pytest.raises(InvalidRequestError):
        service.agents.reply(conv, agent, "   ")
    with pytest.raises(NotFoundError):
        service.agents.reply("no-such-conversation", agent, "hi")


def test_hand_back_and_resolve_return_the_conversation_to_the_bot(service: ChatService) -> None:
    resolved: list[Resolution] = []
    service.on_resolved(resolved.append)
    ana, _ = service.agents.add("Ana")
    ben, _ = service.agents.add("Ben")

    conv = handed_over(service)
    service.agents.claim(conv, ana)
    with pytest.raises(ConflictError, match="Ana"):
        service.agents.handback(conv, ben)
    service.agents.handback(conv, ana)
    assert service.conversation(conv).status == "open"
    assert service.chat("How long does shipping take?", conversation_id=conv).reply.route \
        == Route.FAQ
    assert resolved == []  # handing back is not resolving

    service.chat("a human please", conversation_id=conv)  # a new hand-over
    service.agents.reply(conv, ben, "Ben here.")
    resolution = service.agents.resolve(conv, ben)
    view = service.conversation(conv)
    assert view.status == "open"
    assert [(h.status, h.assigned_to) for h in view.handoffs] == [
        ("handed_back", "Ana"), ("resolved", "Ben")]
    assert all(h.resolved_at is not None for h in view.handoffs)
    assert resolved == [resolution] and resolution.agent == "Ben"
    assert service.agents.inbox() == []
    with pytest.raises(NotFoundError, match="no open hand-over"):
        service.agents.resolve(conv, ben)
    types = [e.type for e in service.events.read(conv)]
    assert types.count("handoff_created") == 2 and types[-1] == "resolved"
    assert "agent_left" in types


def test_a_hand_over_promises_only_what_is_true(service: ChatService) -> None:
    nobody = service.chat("I want a human")
    assert nobody.reply.text.endswith(prompt.HANDOFF_NOBODY_ONLINE_TEXT)
    agent, _ = service.agents.add("Sam")  # adding is not being signed in
    assert not service.agents.availability().staffed
    service.agents.refresh(agent.id)  # Sam uses the inbox
    assert service.agents.availability().staffed
    staffed = service.chat("I want a human")
    assert staffed.reply.text.endswith(prompt.HANDOFF_JOINING_TEXT)
    later = datetime.now(UTC) + timedelta(minutes=service.settings.agent_online_minutes + 1)
    assert not service.agents.availability(later).staffed  # not seen for too long


def test_support_hours_decide_what_a_hand_over_says() -> None:
    hours = SupportHours.parse("Mon-Fri 08:00-20:00, Sat 10:00-14:00", "America/New_York")
    assert hours is not None
    friday_night = datetime(2026, 12, 4, 21, 30, tzinfo=hours.zone)  # a Friday
    saturday = datetime(2026, 12, 5, 11, 0, tzinfo=hours.zone)
    assert not hours.is_open(friday_night) and hours.is_open(saturday)
    closed = availability(hours, agents_online=3, now=friday_night)
    assert not closed.staffed
    assert closed.notice == (
        "Our team is available Mon–Fri 8am–8pm, Sat 10am–2pm EST, so a person will reply here "
        "when we're back (tomorrow at 10am). Your conversation will be waiting.")
    assert availability(hours, 1, saturday).notice == prompt.HANDOFF_JOINING_TEXT
    assert availability(hours, 0, saturday).notice == prompt.HANDOFF_NOBODY_ONLINE_TEXT
    saturday_evening = datetime(2026, 12, 5, 15, 0, tzinfo=hours.zone)
    assert "(Monday at 8am)" in availability(hours, 0, saturday_evening).notice
    sunday = datetime(2026, 12, 6, 9, 0, tzinfo=hours.zone)
    assert "(tomorrow at 8am)" in availability(hours, 0, sunday).notice
    assert SupportHours.parse("", "UTC") is None  # no fixed hours
    assert availability(None, 1, sunday).staffed
    with pytest.raises(ConfigError, match="cannot read"):
        SupportHours.parse("weekdays 9 to 5", "UTC")
    with pytest.raises(ConfigError, match="time zone"):
        SupportHours.parse("Mon-Fri 08:00-20:00", "Mars/Olympus")
    with pytest.raises(ConfigError, match="end after"):
        SupportHours.parse("Mon 20:00-08:00", "UTC")
