"""Reading the conversation log for the learning loop: which customer questions the bot failed
on, and what a person answered to them.

Owns the one reading of a transcript that both the suggestions and the content-gap report use.
A customer message's **outcome** comes from the bot message that follows it (before the next
customer message): ``fallback`` or ``handoff`` by its route, ``thumbs_down`` when the customer
rated that reply down, ``answered`` otherwise, and ``unanswered`` when no bot message followed
(the customer wrote while a person had the conversation). Only messages that read as a question
count (``is_question``): "talk to a human", "yes please" or "thanks" are not.

An **exchange** pairs the failed or unanswered questions asked since the last agent message
with the agent messages that follow them, up to the next question (or the customer's "thanks"
once a real answer was given): several rephrasings of one question become the phrasings of one
suggestion, and an agent's "let me check" before the real answer is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import Connection, select

from chatbot.answering.policy import asks_for_human
from chatbot.conversations.models import Feedback, Message, RetrievalHit

Outcome = Literal["answered", "fallback", "handoff", "thumbs_down", "unanswered"]
FAILED: tuple[Outcome, ...] = ("fallback", "handoff", "thumbs_down")

MIN_WORDS = 3  # "where's my order" is a question; "hello there" is not
HUMAN_REQUEST_WORDS = 8  # a request for a person this short carries no question of its own
# An agent message this long is an answer; shorter ones ("Let me check that for you.") are
# fillers, dropped from the answer when a longer message follows.
ANSWER_WORDS = 8
_WORDS = re.compile(r"[\w']+")
_SMALL_TALK = re.compile(
    r"^\s*(?:(?:hi|hello|hey|hiya|thanks|thank you|thx|ty|ok|okay|yes|yeah|yep|no|nope|sure|"
    r"great|cool|perfect|bye|goodbye|please|yes please|no thanks|got it|sounds good|"
    r"that's all|thats all|good morning|good afternoon|good evening|cheers)"
    r"[\s,.!?]*)+(?:so much|a lot|again|there|team)?[\s,.!?]*$",
    re.IGNORECASE,
)


def is_question(text: str) -> bool:
    """Whether a customer message asks something a FAQ could answer (not a greeting, a thanks,
    a yes, or a bare request for a person)."""
    words = _WORDS.findall(text)
    if len(words) < MIN_WORDS or _SMALL_TALK.match(text):
        return False
    return not (asks_for_human(text) and len(words) <= HUMAN_REQUEST_WORDS)


@dataclass(frozen=True)
class Line:
    """One message of a transcript, with what the learning loop needs of it."""

    id: str
    role: str  # customer | bot | agent
    text: str
    route: str | None
    created_at: datetime
    rated_down: bool = False  # a bot message the customer gave a thumbs-down
    cited: tuple[str, ...] = ()  # record ids a bot message cited


@dataclass(frozen=True)
class Question:
    """A customer question and what became of it."""

    conversation_id: str
    message_id: str
    text: str
    outcome: Outcome
    created_at: datetime
    cited: tuple[str, ...] = ()  # what the bot answered with (a thumbs-down rejected these)


@dataclass(frozen=True)
class Exchange:
    """Questions the bot did not answer and a person's answer to them."""

    conversation_id: str
    questions: tuple[Question, ...]
    answer: str
    answer_message_id: str


def read_transcripts(connection: Connection,
                     conversation_ids: Iterable[str]) -> dict[str, list[Line]]:
    """The messages of these conversations in order, with thumbs-downs and cited records."""
    ids = list(dict.fromkeys(conversation_ids))
    if not ids:
        return {}
    rows = connection.execute(
        select(Message.id, Message.conversation_id, Message.role, Message.text, Message.route,
               Message.created_at)
        .where(Message.conversation_id.in_(ids))
        .order_by(Message.conversation_id, Message.created_at, Message.id)
    ).all()
    down = set(connection.scalars(
        select(Feedback.message_id).where(Feedback.conversation_id.in_(ids),
                                          Feedback.rating == "down")).all())
    cited: dict[str, list[str]] = {}
    for message_id, record_id in connection.execute(
            select(RetrievalHit.message_id, RetrievalHit.record_id)
            .join(Message, Message.id == RetrievalHit.message_id)
            .where(Message.conversation_id.in_(ids), RetrievalHit.cited.is_(True))).all():
        cited.setdefault(message_id, []).append(record_id)
    transcripts: dict[str, list[Line]] = {conversation_id: [] for conversation_id in ids}
    for message_id, conversation_id, role, text, route, created_at in rows:
        transcripts[conversation_id].append(Line(
            id=message_id, role=role, text=text, route=route, created_at=created_at,
            rated_down=message_id in down, cited=tuple(cited.get(message_id, ()))))
    return transcripts


def questions(conversation_id: str, lines: Sequence[Line]) -> list[Question]:
    """Every customer question of the transcript with its outcome, in order."""
    found = []
    for i, line in enumerate(lines):
        if line.role != "customer" or not is_question(line.text):
            continue
        reply = None
        for later in lines[i + 1:]:
            if later.role == "customer":
                break
            if later.role == "bot":
                reply = later
                break
        found.append(Question(conversation_id, line.id, line.text, _outcome(reply),
                              line.created_at, reply.cited if reply is not None else ()))
    return found


def _outcome(reply: Line | None) -> Outcome:
    if reply is None:
        return "unanswered"
    if reply.route == "fallback":
        return "fallback"
    if reply.route == "handoff":
        return "handoff"
    return "thumbs_down" if reply.rated_down else "answered"


def failed_questions(conversation_id: str, lines: Sequence[Line]) -> list[Question]:
    """The questions the bot fell back on, handed over, or answered with a thumbs-down."""
    return [q for q in questions(conversation_id, lines) if q.outcome in FAILED]


def exchanges(conversation_id: str, lines: Sequence[Line]) -> list[Exchange]:
    """The (questions, agent answer) pairs of a transcript (see the module docstring)."""
    asked = {q.message_id: q for q in questions(conversation_id, lines)}
    found: list[Exchange] = []
    pending: list[Question] = []  # not answered by the bot, waiting for a person
    answers: list[Line] = []  # agent messages after ``pending``

    def close() -> None:
        if pending and answers:
            found.append(Exchange(conversation_id, tuple(pending), _answer(answers),
                                  answers[-1].id))
        if answers:
            pending.clear()
            answers.clear()

    for line in lines:
        if line.role == "customer" and line.id in asked:
            close()  # a new question ends the previous exchange
            if asked[line.id].outcome != "answered":
                pending.append(asked[line.id])
        elif line.role == "customer" and any(_substantial(a.text) for a in answers):
            close()  # "thanks!" after the answer: the agent's "you're welcome" is not part of it
        elif line.role == "agent" and pending:
            answers.append(line)
    close()
    return found


def _answer(messages: Sequence[Line]) -> str:
    """The agent's messages as one answer, without fillers when there is more to say."""
    texts = [m.text.strip() for m in messages if m.text.strip()]
    return "\n\n".join([t for t in texts if _substantial(t)] or texts)


def _substantial(text: str) -> bool:
    return len(_WORDS.findall(text)) >= ANSWER_WORDS
