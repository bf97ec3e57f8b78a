"""What a trainer on the knowledge base starts with: torch and Python randomness seeded from the
settings, torch on the configured threads, the knowledge base's documents and its off-topic
questions (``out_of_scope.txt`` beside the FAQs; none when the file is absent)."""

from __future__ import annotations

import random
from collections.abc import Sequence

from chatbot.config import Settings
from chatbot.types import Document


def seeded(settings: Settings) -> random.Random:
    """Seed torch, set its threads, and return a Python RNG with the same seed."""
    import torch

    torch.manual_seed(settings.seed)
    torch.set_num_threads(settings.resolved_threads)
    return random.Random(settings.seed)


def knowledge(settings: Settings, documents: Sequence[Document] | None = None
              ) -> tuple[list[Document], list[str]]:
    """(documents, off-topic questions): ``documents`` when given, else the knowledge base's."""
    from chatbot.answering.calibrate import read_out_of_scope
    from chatbot.knowledge.ingest import load_knowledge_base

    kb = settings.knowledge_base
    docs = list(documents) if documents is not None else load_knowledge_base(kb)
    path = (kb if kb.is_dir() else kb.parent) / "out_of_scope.txt"
    return docs, read_out_of_scope(path) if path.is_file() else []
