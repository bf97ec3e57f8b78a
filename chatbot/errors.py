"""Error classes. Inner code raises these with messages that say what to do; only the edges
(API, CLI, UI) translate them into status codes, one-line messages or friendly text."""

from __future__ import annotations


class ChatbotError(Exception):
    """Base class of every error the chatbot raises on purpose."""


class ConfigError(ChatbotError):
    """A setting is missing or inconsistent."""


class IngestError(ChatbotError):
    """A knowledge-base file or record is malformed. The message names file, line and fix."""

    def __init__(self, path: str, line: int | None, problem: str, fix: str = "") -> None:
        self.path = path
        self.line = line
        self.problem = problem
        self.fix = fix
        where = f"{path}:{line}" if line is not None else path
        message = f"{where}: {problem}"
        if fix:
            message += f" ({fix})"
        super().__init__(message)


class IndexError_(ChatbotError):
    """The index is missing, corrupt or was built with other settings."""


# A readable public name; the trailing underscore only avoids shadowing the builtin in this module.
IndexNotReadyError = IndexError_


class ModelError(ChatbotError):
    """A model could not be found or loaded (offline, wrong path, missing package)."""


class EncoderBusyError(ModelError):
    """The embedding queue stayed full (``chatbot.retrieval.batching``): the server is over
    capacity; retry shortly. A ``ModelError``, so the API answers 503."""


class GenerationError(ChatbotError):
    """The generator failed (HTTP backend down after retries, model crashed)."""


class NotFoundError(ChatbotError):
    """A requested record (conversation, message) does not exist."""


class InvalidRequestError(ChatbotError):
    """A caller sent a value the service cannot accept (empty or over-long message, bad rating).
    ``field`` names the offending input so the API can say which one."""

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class ConflictError(ChatbotError):
    """The request clashes with work in progress (a re-index is already running)."""


class DatabaseUnavailableError(ChatbotError):
    """The database cannot be reached (server down or restarting, connection dropped, pool
    exhausted). Transient: the request may be retried once the database is back."""

    MESSAGE = "the database is unavailable; try again shortly"

    def __init__(self, reason: str = "") -> None:
        self.reason = reason  # for the log and /health; customers get MESSAGE only
        super().__init__(self.MESSAGE)
