"""Signals in the conversation log, on SQLite and PostgreSQL: stored on the customer's message
(committed before the pipeline runs), rolled up per conversation, hand-over priority, the
0002 migration both ways, and the sentiment statistics and their daily series."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime

import pytest
from dbfixtures import database_url, migrated_engine  # noqa: F401
from sqlalchemy import Engine, event, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from standin import StandInPipeline
from standin_stages import RETURNS, SHIPPING, StandInGenerator, StandInRetriever, hit

from chatbot.answering.pipeline import build_pipeline
from chatbot.config import Settings
from chatbot.conversations.engine import downgrade, make_engine, make_sessionmaker, upgrade
from chatbot.conversations.models import Conversation, Handoff, Message
from chatbot.conversations.service import ChatService
from chatbot.conversations.timeseries import MAX_DAYS, window
from chatbot.errors import InvalidRequestError
from chatbot.types import Reply, Signals, Turn

CALM = "how long is shipping"
UPSET = "Useless. how long is shipping"  # frustrated (anger), not strongly
STRONG = "8 days and nothing. I'm cancelling and disputing the charge with my bank"
HUMAN = "can I talk to a human please"
OFF_TOPIC = "what is the weather in bend"


def _service(settings: Settings, engine: Engine, **overrides: object) -> ChatService:
    settings = settings.model_copy(update=overrides)
    retriever = StandInRetriever({
        CALM: [hit(SHIPPING, 0.93)], UPSET: [hit(SHIPPING, 0.93)],
        STRONG: [hit(SHIPPING, 0.7)], OFF_TOPIC: [hit(RETURNS, 0.2)],
    }, {"answer": 0.6, "faq": 0.85, "support": 0.5, "source": "test"})
    pipeline = build_pipeline(settings, retriever=retriever,
                              generator=StandInGenerator("Shipping takes 3-5 business days [1]."))
    return ChatService(settings, pipeline, engine)


@pytest.fixture
def service(settings: Settings, migrated_engine: Engine) -> ChatService:  # noqa: F811
    return _service(settings, migrated_engine)


def _messages(engine: Engine, conversation_id: str) -> list[Message]:
    with make_sessionmaker(engine)() as session:
        return list(session.scalars(select(Message).where(
            Message.conversation_id == conversation_id).order_by(Message.created_at)))


def _conversation(engine: Engine, conversation_id: str) -> Conversation:
    with make_sessionmaker(engine)() as session:
        conv = session.get(Conversation, conversation_id)
        assert conv is not None
        return conv


def _read(service: ChatService, message: str) -> Signals:
    signals = service.pipeline.read_signals(message)
    assert signals is not None
    return signals


# --- storage -----------------------------------------------------------------------------------
def test_signals_are_stored_on_the_customer_message_and_rolled_up(
        service: ChatService, migrated_engine: Engine) -> None:  # noqa: F811
    first = service.chat(CALM)
    assert first.signals is not None and not first.signals.frustrated
    assert first.reply.signals == first.signals  # read once, used by the policy, logged
    conv_id = first.conversation_id
    second = service.chat(UPSET, conversation_id=conv_id)
    assert second.signals is not None and second.signals.frustrated
    customer, bot, customer2, _ = _messages(migrated_engine, conv_id)
    assert customer.role == "customer" and customer.frustrated is False
    assert customer.sentiment == pytest.approx(first.signals.sentiment, abs=1e-4)
    assert customer2.frustrated is True
    assert customer2.frustration == pytest.approx(second.signals.frustration, abs=1e-4)
    assert customer2.cues == ",".join(second.signals.cues) and "anger" in customer2.cues
    assert (bot.sentiment, bot.frustration, bot.frustrated, bot.cues) == (None, None, None, None)

    conv = _conversation(migrated_engine, conv_id)
    assert conv.frustrated is True
    assert conv.sentiment_avg == pytest.approx(
        (customer.sentiment + customer2.sentiment) / 2, abs=1e-6)
    assert conv.max_frustration == pytest.approx(customer2.frustration, abs=1e-6)
    # A calm message later lowers nothing but the average: the conversation was frustrated.
    service.chat(CALM, conversation_id=conv_id)
    conv = _conversation(migrated_engine, conv_id)
    assert conv.frustrated is True
    assert conv.max_frustration == pytest.approx(customer2.frustration, abs=1e-6)
    assert conv.sentiment_avg == pytest.approx(
        (2 * customer.sentiment + customer2.sentiment) / 3, abs=1e-4)

    view = service.conversation(conv_id)  # the staff view shows both levels
    assert view.frustrated and view.messages[2].frustrated and view.messages[2].cues
    assert [s.frustrated for s in service.list_conversations()] == [True]


def test_the_stream_carries_the_signals_before_the_first_token(
        service: ChatService, migrated_engine: Engine) -> None:  # noqa: F811
    stream = service.chat_stream(UPSET)
    assert stream.signals is not None and stream.signals.frustrated  # before iterating
    stored = _messages(migrated_engine, stream.conversation_id)
    assert [m.frustrated for m in stored] == [True]  # already logged with them
    *_, result = list(stream)
    assert result.signals == stream.signals  # type: ignore[union-attr]


class CrashingPipeline(StandInPipeline):
    """Records the customer row as the pipeline finds it in the database, then crashes."""

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine
        self.seen: list[tuple[str, bool | None]] = []

    def answer(self, question: str, history: Sequence[Turn] = (),
               signals: Signals | None = None) -> Reply:
        with make_sessionmaker(self.engine)() as session:  # a separate connection
            self.seen += [tuple(r) for r in session.execute(select(Message.text,
                                                                   Message.frustrated))]
        raise RuntimeError("model crashed")


def test_signals_are_committed_with_the_message_before_the_pipeline_runs(
        settings: Settings, migrated_engine: Engine) -> None:  # noqa: F811
    pipeline = CrashingPipeline(migrated_engine)
    with pytest.raises(RuntimeError):
        ChatService(settings, pipeline, migrated_engine).chat(UPSET)
    assert pipeline.seen == [(UPSET, True)]


def test_signals_off_store_nothing(settings: Settings,
                                  migrated_engine: Engine) -> None:  # noqa: F811
    service = _service(settings, migrated_engine, signals=False)
    result = service.chat(STRONG)
    assert result.signals is None and result.reply.route.value == "generated"
    customer = _messages(migrated_engine, result.conversation_id)[0]
    assert (customer.sentiment, customer.frustration, customer.frustrated) == (None, None, None)
    conv = _conversation(migrated_engine, result.conversation_id)
    assert (conv.sentiment_avg, conv.max_frustration, conv.frustrated) == (None, None, False)


# --- hand-over priority ------------------------------------------------------------------------
def test_a_strongly_frustrated_customer_is_handed_over_with_high_priority(
        service: ChatService) -> None:
    result = service.chat(STRONG)
    assert result.handoff and result.reply.priority == "high"
    (handoff,) = service.conversation(result.conversation_id).handoffs
    assert handoff.priority == "high"
    assert handoff.reason.startswith("customer strongly frustrated: frustration ")


def test_a_pending_hand_over_moves_up_when_the_customer_grows_frustrated(
        service: ChatService) -> None:
    asked = service.chat(HUMAN)
    assert asked.handoff and asked.reply.priority == "normal"
    conv_id = asked.conversation_id
    assert [h.priority for h in service.conversation(conv_id).handoffs] == ["normal"]
    service.chat(STRONG, conversation_id=conv_id)
    assert [h.priority for h in service.conversation(conv_id).handoffs] == ["high"]


def test_the_talk_to_a_human_button_follows_the_conversation_s_frustration(
        service: ChatService) -> None:
    calm = service.chat(CALM).conversation_id
    upset = service.chat(UPSET).conversation_id
    service.handoff(conversation_id=calm)
    service.handoff(conversation_id=upset)
    assert service.conversation(calm).handoffs[0].priority == "normal"
    assert service.conversation(upset).handoffs[0].priority == "high"
    with pytest.raises(InvalidRequestError):
        service.handoff(conversation_id=calm, priority="urgent")  # type: ignore[arg-type]


def test_the_database_refuses_an_unknown_priority(
        service: ChatService, migrated_engine: Engine) -> None:  # noqa: F811
    conv_id = service.chat(CALM).conversation_id
    with pytest.raises(IntegrityError), migrated_engine.begin() as connection:
        connection.execute(insert(Handoff), [dict(
            id="h-bad", conversation_id=conv_id, reason="", requested_at=datetime.now(UTC),
            priority="urgent")])


def test_migration_0002_keeps_every_row_both_ways(database_url: str) -> None:  # noqa: F811
    engine = make_engine(database_url)
    try:
        upgrade(database_url, "0001", engine=engine)
        with engine.begin() as connection:
            for statement in (
                "INSERT INTO conversations (id, channel, started_at, status) "
                "VALUES ('c1', 'web', CURRENT_TIMESTAMP, 'handed_off')",
                "INSERT INTO messages (id, conversation_id, role, text, created_at) "
                "VALUES ('m1', 'c1', 'customer', 'hello', CURRENT_TIMESTAMP)",
                "INSERT INTO handoffs (id, conversation_id, reason, requested_at) "
                "VALUES ('h1', 'c1', 'asked', CURRENT_TIMESTAMP)",
            ):
                connection.execute(text(statement))
        upgrade(database_url, "0002", engine=engine)
        with engine.connect() as connection:
            assert connection.execute(text("SELECT priority FROM handoffs")).scalar() == "normal"
            row = connection.execute(text(
                "SELECT frustrated, sentiment_avg FROM conversations")).one()
            assert (bool(row[0]), row[1]) == (False, None)
            assert connection.execute(text("SELECT sentiment FROM messages")).scalar() is None
        downgrade(database_url, "0001", engine=engine)
        with engine.connect() as connection:  # no rebuilt parent cascaded its children away
            for table in ("conversations", "messages", "handoffs"):
                assert connection.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 1
    finally:
        engine.dispose()


# --- statistics --------------------------------------------------------------------------------
def _start(engine: Engine, conversation_id: str, started: datetime) -> None:
    with engine.begin() as connection:
        connection.execute(update(Conversation).where(Conversation.id == conversation_id)
                           .values(started_at=started))


def test_stats_average_sentiment_and_frustrated_share(
        settings: Settings, service: ChatService, migrated_engine: Engine) -> None:  # noqa: F811
    assert (service.stats().sentiment_avg, service.stats().frustrated_rate) == (None, None)
    calm = service.chat(CALM)
    upset = service.chat(UPSET)
    service.chat(CALM, conversation_id=upset.conversation_id)
    _service(settings, migrated_engine, signals=False).chat(CALM)  # no signals: not counted
    per_conversation = [
        _read(service, CALM).sentiment,
        (_read(service, UPSET).sentiment + _read(service, CALM).sentiment) / 2,
    ]
    stats = service.stats()
    assert stats.conversations == 3
    assert stats.sentiment_avg == pytest.approx(sum(per_conversation) / 2, abs=1e-4)
    assert stats.frustrated_rate == pytest.approx(1 / 2)
    assert calm.signals is not None


def test_daily_series_counts_each_conversation_on_its_utc_start_day(
        service: ChatService, migrated_engine: Engine) -> None:  # noqa: F811
    if migrated_engine.dialect.name == "postgresql":
        # A session far from UTC must not move 23:30 UTC onto the next day.
        migrated_engine.dispose()
        event.listen(migrated_engine, "connect", lambda dbapi, _: dbapi.execute(
            "SET TIME ZONE 'Pacific/Kiritimati'"))
    late = service.chat(CALM).conversation_id  # answered: deflected
    upset = service.chat(UPSET).conversation_id  # answered, frustrated
    handed = service.chat(STRONG).conversation_id  # handed over, frustrated
    lost = service.chat(OFF_TOPIC).conversation_id  # fell back
    _start(migrated_engine, late, datetime(2026, 3, 1, 23, 30, tzinfo=UTC))
    for conv_id in (upset, handed, lost):
        _start(migrated_engine, conv_id, datetime(2026, 3, 3, 0, 10, tzinfo=UTC))
    series = service.stats_series(date(2026, 3, 1), date(2026, 3, 4))
    assert (series.since, series.until) == (date(2026, 3, 1), date(2026, 3, 4))
    assert [d.day for d in series.days] == [date(2026, 3, n) for n in (1, 2, 3, 4)]
    assert [d.conversations for d in series.days] == [1, 0, 3, 0]
    first, empty, third, _ = series.days
    assert (first.deflection_rate, first.handoff_rate, first.frustrated_rate) == (1.0, 0.0, 0.0)
    assert first.sentiment_avg == pytest.approx(_read(service, CALM).sentiment, abs=1e-4)
    assert (empty.deflection_rate, empty.handoff_rate, empty.sentiment_avg,
            empty.frustrated_rate) == (None, None, None, None)
    assert third.deflection_rate == pytest.approx(1 / 3)
    assert third.handoff_rate == pytest.approx(1 / 3)
    assert third.frustrated_rate == pytest.approx(2 / 3)
    expected = sum(_read(service, m).sentiment for m in (UPSET, STRONG, OFF_TOPIC)) / 3
    assert third.sentiment_avg == pytest.approx(expected, abs=1e-4)


def test_the_series_window_defaults_to_30_days_and_is_bounded() -> None:
    today = date(2026, 3, 31)
    assert window(None, None, today) == (date(2026, 3, 2), today)
    assert window(date(2026, 3, 30), None, today) == (date(2026, 3, 30), today)
    # The calendar's edges: a clear error or a clamped window, never an overflow (a 500).
    assert window(None, date(1, 1, 5)) == (date.min, date(1, 1, 5))
    with pytest.raises(InvalidRequestError, match="until must be before 9999-12-31"):
        window(None, date.max)
    with pytest.raises(InvalidRequestError, match="after"):
        window(date(2026, 4, 2), date(2026, 4, 1))
    with pytest.raises(InvalidRequestError, match=str(MAX_DAYS)):
        window(date(2025, 1, 1), date(2026, 3, 1))
