"""Deterministic stand-ins for the retriever and the generator (same interfaces), passed to
``build_pipeline`` in tests, plus helpers to build hits (no models are loaded), and
``CountingEncoder``, which records what a real encoder is asked to embed."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from chatbot.errors import GenerationError
from chatbot.generation.base import GenerationResult, GenerationStream
from chatbot.retrieval.embed import TextEncoder
from chatbot.types import Document, Hit, Turn


def doc(record_id: str, question: str, answer: str, kind: str = "faq",
        category: str = "") -> Document:
    return Document(
        id=Document.content_hash(kind=kind, record_id=record_id, question=question, answer=answer),
        record_id=record_id, kind=kind, question=question, answer=answer,  # type: ignore[arg-type]
        category=category or record_id,
    )


def hit(document: Document, dense: float, rank: int = 1) -> Hit:
    return Hit(document=document, score=dense, rank=rank, dense_score=dense,
               matched=document.question)


SHIPPING = doc("ship-001", "How long does standard shipping take?",
               "Standard shipping takes 3-5 business days within the US.")
RETURNS = doc("ret-001", "How do I return an item?",
              "Start a return from Orders in your account within 60 days and print the free label.")
DIALOGUE = doc("dlg-0001#0", "my parcel is late", "Sorry! Late parcels are traced by the carrier "
               "after 5 business days without tracking movement.", kind="dialogue")


class StandInRetriever:
    """Returns the hits registered for a question (else none); counts searches and reloads."""

    def __init__(self, answers: dict[str, Sequence[Hit]] | None = None,
                 thresholds: dict[str, Any] | None = None, version: str = "v-test") -> None:
        self.answers = dict(answers or {})
        self.manifest: dict[str, Any] = {"version": version}
        if thresholds is not None:
            self.manifest["thresholds"] = thresholds
        self.version = version
        self.searches: list[tuple[str, tuple[Turn, ...]]] = []
        self.reloads = 0

    @property
    def index_version(self) -> str | None:
        return self.version

    def ready(self) -> bool:
        return True

    def reload(self) -> None:
        self.reloads += 1

    def search(self, query: str, history: Sequence[Turn] = (), k: int | None = None) -> list[Hit]:
        self.searches.append((query, tuple(history)))
        return list(self.answers.get(query, ()))[: k or 5]


class StandInGenerator:
    """Answers with a fixed text, streamed in small pieces; records prompts; can fail."""

    def __init__(self, text: str = "", fail: bool = False, name: str = "standin-gen") -> None:
        self.text = text
        self.fail = fail
        self.name = name
        self.prompts: list[Any] = []
        self.loads = 0
        self.cancelled = 0
        self.pieces_sent = 0

    @property
    def loaded(self) -> bool:
        return self.loads > 0

    def load(self) -> None:
        self.loads += 1

    def generate(self, prompt: Any, max_new_tokens: int | None = None) -> GenerationResult:
        text = "".join(self.stream(prompt, max_new_tokens))
        return GenerationResult(text, len(text.split()), 10, 1.0, 2.0, 100.0, self.name)

    def stream(self, prompt: Any, max_new_tokens: int | None = None) -> GenerationStream:
        self.load()
        self.prompts.append(prompt)
        stream = GenerationStream()
        owner = self

        def pieces() -> Iterator[str]:
            if owner.fail:
                raise GenerationError("generator at http://127.0.0.1:9 failed after 3 attempts")
            words = owner.text.split(" ")
            for i, word in enumerate(words):
                if stream.cancelled.is_set():
                    owner.cancelled += 1
                    return
                owner.pieces_sent += 1
                yield word if i == 0 else " " + word
            stream.result = GenerationResult(owner.text, len(words), 10, 1.0, 2.0, 100.0,
                                             owner.name)

        original_cancel = stream.cancel

        def cancel() -> None:
            owner.cancelled += 1
            original_cancel()

        stream.cancel = cancel  # type: ignore[method-assign]
        stream._source = pieces()
        return stream


class CountingEncoder:
    """Wraps a real encoder (a ``TextEncoder``), recording the texts it embeds."""

    def __init__(self, inner: TextEncoder) -> None:
        self.inner = inner
        self.texts: list[str] = []

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def encode(self, texts, *, batch_size, progress=False):  # type: ignore[no-untyped-def]
        self.texts += list(texts)
        return self.inner.encode(texts, batch_size=batch_size, progress=progress)
