"""Generation: the ``Generator`` interface (``base``), the in-process transformers model
(``local``), the OpenAI-compatible HTTP client (``openai_http``) and the shipped LoRA adapters
(``adapters/``). ``make_generator(settings)`` picks the backend the settings ask for."""

from __future__ import annotations

from chatbot.config import Settings
from chatbot.generation.base import Generator


def make_generator(settings: Settings) -> Generator:
    """The generator the settings ask for (not loaded yet)."""
    if settings.generator_backend == "openai":
        from chatbot.generation.openai_http import OpenAIHTTPGenerator

        return OpenAIHTTPGenerator(settings)
    from chatbot.generation.local import TransformersGenerator

    return TransformersGenerator(settings)
