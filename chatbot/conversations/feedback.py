"""Customer feedback: thumbs up or down on a bot message, a CSAT score, a comment.

``ChatService.feedback`` checks the input (``check_feedback``) and writes it (``save_feedback``)
in one of its write transactions. A second thumbs on the same message replaces the first
(customers toggle them); a comment is stored redacted, as everything a customer writes.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from chatbot.answering.privacy import Redactor
from chatbot.conversations.models import RATINGS, Conversation, Feedback, Message, new_id, utcnow
from chatbot.errors import InvalidRequestError, NotFoundError


def check_feedback(*, message_id: str | None, conversation_id: str | None, rating: str | None,
                   csat: int | None, comment: str | None, max_chars: int) -> None:
    """Raise ``InvalidRequestError`` naming the field when the feedback cannot be stored."""
    if not message_id and not conversation_id:
        raise InvalidRequestError("give message_id or conversation_id", field="message_id")
    if rating is not None and rating not in RATINGS:
        raise InvalidRequestError(f"rating must be 'up' or 'down', not {rating!r}",
                                  field="rating")
    if csat is not None and (isinstance(csat, bool) or not isinstance(csat, int)
                             or not 1 <= csat <= 5):
        raise InvalidRequestError(f"csat must be a whole number from 1 to 5, not {csat!r}",
                                  field="csat")
    if comment is not None and len(comment) > max_chars:
        raise InvalidRequestError(f"comment is longer than {max_chars} characters",
                                  field="comment")
    if rating is None and csat is None and not (comment or "").strip():
        raise InvalidRequestError("give a rating, a csat score or a comment", field="rating")


def save_feedback(session: Session, redactor: Redactor, *, message_id: str | None,
                  conversation_id: str | None, rating: str | None, csat: int | None,
                  comment: str | None) -> str:
    """Store checked feedback and commit; returns the feedback row's id (NotFoundError for an
    unknown message or conversation)."""
    if message_id:
        msg = session.get(Message, message_id)
        if msg is None:
            raise NotFoundError(f"message {message_id} does not exist")
        if conversation_id and conversation_id != msg.conversation_id:
            raise InvalidRequestError(
                f"message {message_id} is not part of conversation {conversation_id}",
                field="conversation_id")
        conversation_id = msg.conversation_id
    elif session.get(Conversation, conversation_id) is None:
        raise NotFoundError(f"conversation {conversation_id} does not exist")
    row = None
    if message_id and rating is not None:  # the thumbs given before, replaced
        row = session.scalars(
            select(Feedback).where(Feedback.message_id == message_id,
                                   Feedback.rating.is_not(None))
            .order_by(Feedback.created_at.desc()).limit(1)
        ).first()
    if row is None:
        row = Feedback(id=new_id(), message_id=message_id, conversation_id=conversation_id,
                       created_at=utcnow())
        session.add(row)
    if rating is not None:
        row.rating = rating
    if csat is not None:
        row.csat = csat
    if comment is not None and comment.strip():
        row.comment = redactor.redact(comment)
    row.created_at = utcnow()
    session.commit()
    return row.id
