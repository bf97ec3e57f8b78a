"""The answer pipeline: the only place that knows the order of the stages.

    question + history -> check input -> retrieve -> route (policy) ->
        FAQ verbatim | grounded generation behind a sentence support gate | fallback | hand-over
        -> Reply(text, route, confidence, reason, sources, hits, timings)

``build_pipeline(settings)`` wires the default stages; tests pass stand-ins for any of them
(same interface) through its keyword arguments. The generator is loaded on the first question
that needs it, so FAQ answers, fallbacks and hand-overs never wait for the language model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

from chatbot.answering import prompt
from chatbot.answering.grounding import SentenceGate
from chatbot.answering.inputs import check_message
from chatbot.answering.policy import Decision, Policy, Thresholds
from chatbot.config import Settings
from chatbot.errors import GenerationError, InvalidRequestError
from chatbot.generation import make_generator
from chatbot.generation.base import Generator
from chatbot.types import Hit, Reply, Route, Turn

log = logging.getLogger(__name__)


class Pipeline:
    """Implements ``chatbot.types.AnswerPipeline``."""

    def __init__(self, settings: Settings, retriever: Any, generator: Generator,
                 policy: Policy) -> None:
        self.settings = settings
        self.retriever = retriever
        self.generator = generator
        self.policy = policy

    # --- lifecycle ------------------------------------------------------------------------------
    @property
    def index_version(self) -> str | None:
        return self.retriever.index_version

    def ready(self) -> bool:
        return bool(self.retriever.ready())

    def reload(self) -> None:
        self.retriever.reload()

    def thresholds(self) -> Thresholds:
        """Calibrated thresholds of the loaded index, or the documented defaults."""
        return Thresholds.from_manifest(self.retriever.manifest)

    # --- answering ------------------------------------------------------------------------------
    def answer(self, question: str, history: Sequence[Turn] = ()) -> Reply:
        reply = None
        for item in self.stream(question, history):
            if isinstance(item, Reply):
                reply = item
        assert reply is not None
        return reply

    def check_question(self, question: str) -> str:
        """The question without surrounding whitespace; raises ``InvalidRequestError`` by the
        one message rule (``chatbot.answering.inputs``)."""
        return check_message(question, self.settings.max_message_chars)

    def stream(self, question: str, history: Sequence[Turn] = ()) -> Iterator[str | Reply]:
        """Text deltas as they are produced, then exactly one Reply whose text equals them."""
        text = self.check_question(question)  # raise before the first yield
        started = time.perf_counter()
        return self._stream(text, tuple(history), started)

    def _stream(self, question: str, history: tuple[Turn, ...],
                started: float) -> Iterator[str | Reply]:
        hits = tuple(self.retriever.search(question, history))
        retrieval_ms = (time.perf_counter() - started) * 1000
        thresholds = self.thresholds()
        decision = self.policy.decide(question, hits, history, thresholds)
        extra = {"retrieval_ms": round(retrieval_ms, 2)}
        if decision.route != Route.GENERATED:
            assert decision.text is not None
            yield decision.text
            yield self._reply(decision, hits, started, extra, model=None)
            return

        gate = SentenceGate(decision.sources, thresholds.support, question)
        messages = prompt.build_messages(question, decision.sources, history)
        failure = None
        result = None
        generation = None
        try:
            generation = self.generator.stream(messages)
            for delta in generation:
                yield from gate.feed(delta)
                if gate.closed:
                    break  # the rest would be cut anyway
            else:
                yield from gate.finish()
            result = generation.result
        except GenerationError as error:
            log.exception("generation failed; falling back")
            failure = str(error)
        finally:
            # Cut by the gate, or the caller stopped reading (client gone): free the model.
            if generation is not None and generation.result is None:
                generation.cancel()
        if result is not None:
            extra.update(tokens=float(result.tokens), tokens_per_s=round(result.tokens_per_s, 2),
                         first_token_ms=round(result.first_token_ms, 1),
                         prompt_tokens=float(result.prompt_tokens))
        final = self._after_generation(decision, gate, history, failure)
        if final.route != Route.GENERATED:
            assert final.text is not None
            yield final.text
        yield self._reply(final, hits, started, extra, model=self.generator.name)

    def _after_generation(self, decision: Decision, gate: SentenceGate,
                          history: Sequence[Turn], failure: str | None) -> Decision:
        if gate.claims == 0:
            note = (f"generator failed ({failure})" if failure else
                    f"first claim not supported by the sources: {gate.rejected!r}"
                    if gate.rejected else "the answer made no checkable statement")
        elif gate.rejected:
            note = f"answer cut before an unsupported sentence: {gate.rejected!r}"
        elif failure:
            note = f"generator failed mid-answer ({failure}); kept the supported part"
        else:
            note = ""
        return self.policy.finish_generated(decision, gate.text, gate.claims, history, note)

    def _reply(self, decision: Decision, hits: tuple[Hit, ...], started: float,
               extra: dict[str, float], model: str | None) -> Reply:
        assert decision.text is not None
        log.info("route=%s confidence=%.3f reason=%s", decision.route.value,
                 decision.confidence, decision.reason)
        return Reply(
            text=decision.text, route=decision.route, confidence=round(decision.confidence, 4),
            reason=decision.reason, sources=decision.sources, hits=hits, model=model,
            index_version=self.index_version,
            latency_ms=round((time.perf_counter() - started) * 1000, 2), extra=extra,
        )


def build_pipeline(settings: Settings, *, retriever: Any = None, generator: Generator | None = None,
                   policy: Policy | None = None) -> Pipeline:
    """The default pipeline for ``settings``; any stage can be replaced by an object with the
    same interface. Nothing heavy is loaded here."""
    if retriever is None:
        from chatbot.retrieval.search import Retriever

        retriever = Retriever(settings)
    return Pipeline(settings, retriever, generator or make_generator(settings),
                    policy or Policy(settings))


def format_reply(reply: Reply) -> str:
    """The reply with its route, confidence, reason and sources, for the terminal."""
    lines = [reply.text, f"  [{reply.route.value} · confidence {reply.confidence:.2f} · "
                         f"{reply.latency_ms:.0f} ms] {reply.reason}"]
    for n, hit in enumerate(reply.sources, start=1):
        lines.append(f"  [{n}] {hit.document.kind} {hit.document.record_id}: "
                     f"{hit.document.question}")
    return "\n".join(lines)


def terminal_chat(pipeline: Pipeline, read: Any, write: Any) -> None:
    """A chat loop over ``read(prompt) -> str`` and ``write(text)``; ends on EOF, 'quit' or
    'exit'. Bad input is reported and the conversation goes on."""
    write("Ask a question (quit to leave).")
    history: list[Turn] = []
    while True:
        try:
            question = read("you> ")
        except (EOFError, KeyboardInterrupt):
            write("")
            return
        if question.strip().lower() in {"quit", "exit"}:
            return
        try:
            reply = pipeline.answer(question, history)
        except InvalidRequestError as error:
            write(f"  ({error})")
            continue
        write("bot> " + format_reply(reply))
        history += [Turn("customer", question), Turn("agent", reply.text, reply.route.value)]
