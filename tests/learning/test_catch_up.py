"""The learning loop does not lose a resolved conversation: one resolved while no server ran
(or whose suggestion failed) is read when a server starts, and read only once."""

from __future__ import annotations

from dbfixtures import database_url, migrated_engine  # noqa: F401
from learning_log import GIFT_ANSWER, gift_wrap_conversation, write_conversation
from sqlalchemy import Engine, select, update
from standin_stages import StandInGenerator

from chatbot.answering.pipeline import build_pipeline
from chatbot.config import Settings
from chatbot.conversations.models import Handoff, utcnow
from chatbot.conversations.service import ChatService
from chatbot.learning.loop import LearningLoop
from chatbot.retrieval.search import Retriever


def _service(settings: Settings, engine: Engine, retriever: Retriever) -> ChatService:
    pipeline = build_pipeline(settings, retriever=retriever,
                              generator=StandInGenerator("not used"))
    return ChatService(settings, pipeline, engine)


def test_a_conversation_resolved_while_no_server_ran_is_suggested_at_start_once(
        settings: Settings, migrated_engine: Engine,  # noqa: F811
        kb_retriever: Retriever) -> None:
    conversation_id, _ = write_conversation(migrated_engine, gift_wrap_conversation())
    unresolved, _ = write_conversation(migrated_engine, gift_wrap_conversation(
        "Can I pay with gift cards?", "Yes, gift cards are accepted at checkout as payment."))
    with migrated_engine.begin() as connection:  # resolved by a process that then stopped
        connection.execute(update(Handoff).where(Handoff.conversation_id == conversation_id)
                           .values(status="resolved", resolved_at=utcnow()))

    loop = LearningLoop(_service(settings, migrated_engine, kb_retriever))
    try:
        assert loop.attach()
        loop.flush(60)
        _, [suggestion] = loop.list()
        assert (suggestion.answer, suggestion.sources[0].conversation_id) == (
            GIFT_ANSWER, conversation_id)
        with migrated_engine.connect() as connection:
            read = dict(connection.execute(
                select(Handoff.conversation_id, Handoff.learned_at.is_not(None))).all())
        assert read == {conversation_id: True, unresolved: False}  # not resolved: not read
    finally:
        loop.close()

    again = LearningLoop(_service(settings, migrated_engine, kb_retriever))
    try:
        assert again.catch_up() == 0  # read once: the next start has nothing to read
    finally:
        again.close()
