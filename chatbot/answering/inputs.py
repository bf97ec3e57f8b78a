"""The rules for text a customer (or any client) sends: the message, and every other field.

Every way in (the REST and OpenAI-compatible APIs through the conversation service, the Gradio
chat, the CLI's terminal chat through the pipeline) checks a message with ``check_message``, so
the rule and its wording exist once; other free-text fields use ``check_text``. Each error
carries ``field`` so the API can name it. The web edge (``chatbot.web.guard``) applies
``control_problem`` to every string of an API request (JSON body, path, query) before any route
runs, so ids, references, comments and reasons are covered too.

Control characters are rejected, not removed: a NUL byte cannot be stored in PostgreSQL, and
silently changing what a customer wrote would make the log disagree with what was sent. Tab,
line feed and carriage return are ordinary text and stay. Rejected: the other C0 controls, DEL,
the C1 controls (U+0080-U+009F, usually text decoded with the wrong code page) and lone
surrogates (JSON can spell them, ``"\\ud800"``, but they are not characters and cannot be
encoded for any database).
"""

from __future__ import annotations

from chatbot.errors import InvalidRequestError

# One definition of which characters are rejected, shared with the knowledge base's validation
# (knowledge is the lower stage, so it lives there).
from chatbot.knowledge.ingest import first_control_character


def control_problem(text: str, field: str) -> str | None:
    """What is wrong with ``text`` if it holds a control character (the API's 422 sentence),
    else None."""
    position = first_control_character(text)
    if position is None:
        return None
    return (f"the {field} contains a control character (U+{ord(text[position]):04X}) at "
            f"position {position}: remove it (tabs and line breaks are fine)")


def _reject_controls(text: str, field: str) -> None:
    problem = control_problem(text, field)
    if problem is not None:
        raise InvalidRequestError(problem, field=field)


def check_message(text: object, max_chars: int, *, field: str = "message") -> str:
    """The message without surrounding whitespace; raises ``InvalidRequestError`` when it is not
    a string, is blank, is longer than ``max_chars`` characters or contains a control
    character."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidRequestError(f"the {field} is empty: type a question", field=field)
    stripped = text.strip()
    if len(stripped) > max_chars:
        raise InvalidRequestError(
            f"the {field} has {len(stripped)} characters, more than the {max_chars} allowed: "
            "shorten it or split it into several messages", field=field)
    _reject_controls(stripped, field)
    return stripped


def check_text(text: str, max_chars: int, *, field: str) -> str:
    """An optional free-text field (comment, reason, reference): returned as it is when it is at
    most ``max_chars`` characters and has no control characters; may be blank."""
    if len(text) > max_chars:
        raise InvalidRequestError(
            f"the {field} has {len(text)} characters, more than the {max_chars} allowed",
            field=field)
    _reject_controls(text, field)
    return text

