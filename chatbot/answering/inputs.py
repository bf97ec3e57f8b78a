"""The one rule for a customer's message: not blank, not longer than the setting.

Every way in (the REST and OpenAI-compatible APIs through the conversation service, the Gradio
chat, the CLI's terminal chat through the pipeline) checks a message with ``check_message``, so
the rule and its wording exist once. The error carries ``field`` so the API can name it.
"""

from __future__ import annotations

from chatbot.errors import InvalidRequestError


def check_message(text: object, max_chars: int, *, field: str = "message") -> str:
    """The message without surrounding whitespace; raises ``InvalidRequestError`` when it is not
    a string, is blank, or is longer than ``max_chars`` characters."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidRequestError(f"the {field} is empty: type a question", field=field)
    stripped = text.strip()
    if len(stripped) > max_chars:
        raise InvalidRequestError(
            f"the {field} has {len(stripped)} characters, more than the {max_chars} allowed: "
            "shorten it or split it into several messages", field=field)
    return stripped
