"""The answer pipeline: the only place that knows the order of the stages.

    question + history -> check input -> signals (sentiment, frustration) -> retrieve ->
        rerank (cross-encoder, when one is configured) -> route (policy) ->
        FAQ verbatim | grounded generation behind a sentence support gate |
        fallback | hand-over -> Reply(text, route, confidence, reason, sources, hits, timings,
        signals, priority)

``build_pipeline(settings)`` wires the default stages; tests pass stand-ins for any of them
(same interface) through its keyword arguments. Models load lazily (a script answering FAQs
never loads the language model); a server calls ``warm_up()`` before it takes traffic, and
``ready()`` is true only once the index, the embedder, the reranker (when set) and the
generator are loaded.

A generated answer's [n] citations are rewritten as the gate releases it
(``chatbot.answering.citations``): the customer is shown FAQ sources only, so a citation of a
past dialogue is dropped and the others are numbered as the list under the answer; the Reply's
``sources`` keep every cited hit for the log.

Suggestions (``Reply.suggestions``, ``CHATBOT_SUGGESTIONS`` of them): after an FAQ or generated
answer the questions customers ask next (``chatbot.answering.suggest``) about the first FAQ it
cites, never one answered earlier in the conversation (``Turn.faq_id``); after a fallback the
most asked questions; none after a hand-over. Their statistics take tens of seconds to build,
so serving builds them in the background (``warm_up_suggestions``) and replies carry none until
then; a new index version is rebuilt the same way while the old statistics keep serving, from
the vectors the index and the previous statistics already hold (only new texts are embedded).
A rebuild that fails is not retried for the same index version.

With a reranker (``chatbot.retrieval.rerank.Reranker``, ``CHATBOT_RERANKER``), retrieval fetches
``max(top_k, rerank_top_n)`` hits, the reranker re-orders them by probability (or its gate skips
it when the first stage is decisive), the top ``top_k`` go on, and the thresholds are those
calibrated for that reranker (``Pipeline.thresholds``): the policy routes on its probability.

``close()`` stops what serving started (the embedder's micro-batching worker, the HTTP
generator's connections); the server calls it on shutdown.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from chatbot.answering import prompt
from chatbot.answering.citations import CustomerCitations, visible_sources
from chatbot.answering.grounding import SentenceGate
from chatbot.answering.inputs import check_message
from chatbot.answering.policy import COSINE, Decision, Policy, Thresholds
from chatbot.answering.privacy import Redactor
from chatbot.answering.signals import SignalReader
from chatbot.config import Settings
from chatbot.errors import GenerationError, InvalidRequestError, ModelError
from chatbot.generation import make_generator
from chatbot.generation.base import Generator
from chatbot.types import Hit, Reply, Route, Signals, Suggestion, Turn

log = logging.getLogger(__name__)


class Pipeline:
    """Implements ``chatbot.types.AnswerPipeline``."""

    def __init__(self, settings: Settings, retriever: Any, generator: Generator,
                 policy: Policy, signals: SignalReader | None = None,
                 reranker: Any = None, verifier: Any = None) -> None:
        self.settings = settings
        self.retriever = retriever
        self.reranker = reranker  # None: route on the first stage's cosine
        self.verifier = verifier  # None: the support gate's lexical pass only
        self.generator = generator
        self.policy = policy
        self.signals = signals  # None: signals off, every customer is treated as calm
        # Past dialogues in a prompt: every kind redacted, configured patterns included.
        self._redactor = Redactor.from_settings(settings, verbatim=False)
        # (index version, warm Suggester): None until warm_up_suggestions() has built one.
        self._suggester: tuple[str | None, Any] | None = None
        self._suggester_lock = threading.Lock()
        self._suggester_building = False
        self._suggester_tried: str | None = None  # the index version of the last rebuild

    # --- lifecycle ------------------------------------------------------------------------------
    @property
    def index_version(self) -> str | None:
        return self.retriever.index_version

    def ready(self) -> bool:
        """True once the index, the embedder and the generator are loaded (``warm_up``), so
        /health says ready only when the first customer will not wait for a model to load."""
        return not self.not_ready()

    def not_ready(self) -> list[str]:
        """What is not loaded yet, of "index", "embedder" and "generator"; empty when ready.
        Checking loads nothing but the index (the retriever's own lazy step)."""
        missing = [] if self.retriever.ready() else ["index"]
        embedder = getattr(self.retriever, "embedder", None)  # stand-in retrievers have none
        if embedder is not None and not getattr(embedder, "loaded", True):
            missing.append("embedder")
        if self.reranker is not None and not self.reranker.loaded:
            missing.append("reranker")
        if self.verifier is not None and not self.verifier.loaded:
            missing.append("verifier")
        if not self.generator.loaded:
            missing.append("generator")
        return missing

    def warm_up(self) -> None:
        """Load the index, the embedder and the generator and run each once (what the server's
        start-up does before it takes traffic). Raises ``IndexNotReadyError`` without an index;
        a generator that cannot load is logged and left for /health to report."""
        # Loads the index (or raises with the fix), the embedder, and touches FAISS and BM25.
        hits = self.retriever.search("warm-up question")
        if self.reranker is not None:  # load it and run it once, gate or not
            self.reranker.score("warm-up question", (), hits[:1])
        if self.verifier is not None:  # the support gate's meaning pass
            self.verifier.supports("Warm-up sentence.", ["Warm-up source."])
        # VADER's lexicon (~20 ms): the service reads signals inside its write transaction.
        self.read_signals("warm-up question")
        warm = getattr(self.generator, "warm_up", None)  # one token, where that costs little
        try:
            if warm is not None:
                warm()
            else:
                self.generator.load()
        except (GenerationError, ModelError) as error:
            log.warning("generator not loaded at start-up: %s", error)

    def reload(self) -> None:
        self.retriever.reload()

    def close(self) -> None:
        """Stop the embedder's micro-batching worker and close the HTTP generator's connections
        (server shutdown); the pipeline stays usable and starts them again when asked."""
        embedder = getattr(self.retriever, "embedder", None)  # stand-in retrievers have none
        for stage in (embedder, self.generator):
            close = getattr(stage, "close", None)  # the in-process generator holds no sockets
            if close is not None:
                close()

    # --- suggestions ----------------------------------------------------------------------------
    def warm_up_suggestions(self) -> bool:
        """Build the suggestion statistics of the loaded index (slow: it maps every dialogue
        turn to an FAQ); serving calls it in a background thread, never on a request. True when
        suggestions are on and built; a failure is logged and leaves the previous ones."""
        if self.settings.suggestions <= 0:
            return False
        from chatbot.answering.suggest import Suggester  # loads retrieval: only when used

        try:
            documents = list(self.retriever.documents)  # loads the index: then its version
            version = self.index_version
            known = self.retriever.phrasing_vectors()  # every FAQ question and dialogue turn
            if self._suggester is not None:  # and the FAQ answers the last build embedded
                known = {**self._suggester[1].answer_vectors, **known}
            suggester = Suggester(self.settings, embedder=self.retriever.embedder,
                                  documents=documents, known_vectors=known)
            suggester.warm_up()
        except Exception:  # no suggestions is better than no answers
            log.warning("suggestions not built", exc_info=True)
            return False
        self._suggester = (version, suggester)
        log.info("suggestions ready for index %s", version)
        return True

    def _warm_suggester(self) -> Any:
        """The built Suggester, or None while there is none (never built here, on a request:
        that takes tens of seconds). A new index version starts one rebuild in the background
        (one at a time, one try per version); the old statistics answer until it is done."""
        current = self._suggester
        if current is None or self.settings.suggestions <= 0:
            return None
        version = self.index_version
        if current[0] != version:
            with self._suggester_lock:
                start = not self._suggester_building and self._suggester_tried != version
                if start:
                    self._suggester_building, self._suggester_tried = True, version
            if start:
                threading.Thread(target=self._rebuild_suggestions, name="suggestions",
                                 daemon=True).start()
        return current[1]

    def _rebuild_suggestions(self) -> None:
        try:
            self.warm_up_suggestions()
        finally:
            with self._suggester_lock:
                self._suggester_building = False

    def suggestions(self, route: Route, sources: Sequence[Hit],
                    history: Sequence[Turn] = ()) -> tuple[Suggestion, ...]:
        """The questions to offer after a reply (see the module docstring); () until built."""
        if route in (Route.HANDOFF, Route.AGENT):  # a person takes over: no more bot topics
            return ()
        suggester = self._warm_suggester()
        if suggester is None:
            return ()
        answered = next((h.document.record_id for h in sources if h.document.kind == "faq"),
                        None)
        if route not in (Route.FAQ, Route.GENERATED):
            answered = None  # a fallback answered nothing: offer the most asked
        seen = [t.faq_id for t in history if t.faq_id]
        try:
            return tuple(suggester.suggest(answered, history_faq_ids=seen,
                                           k=self.settings.suggestions))
        except Exception:
            log.warning("suggestions failed", exc_info=True)
            return ()

    def opening(self, recent_counts: dict[str, int] | None = None) -> list[Suggestion]:
        """The questions to offer when a chat opens: the most asked recently
        (``recent_counts``: FAQ id -> answers in recent days), then the knowledge base's most
        common first questions; [] while suggestions are off or not built."""
        suggester = self._warm_suggester()
        if suggester is None:
            return []
        return list(suggester.opening(self.settings.suggestions, recent_counts=recent_counts))

    @property
    def scorer(self) -> str:
        """What the policy's confidence is: ``cosine`` or ``reranker:<weights id>``."""
        return COSINE if self.reranker is None else self.reranker.scorer_id

    def thresholds(self) -> Thresholds:
        """The loaded index's thresholds calibrated for this pipeline's scorer, or that scorer's
        documented defaults (thresholds of another scorer are never used)."""
        return Thresholds.from_manifest(self.retriever.manifest, scorer=self.scorer)

    def retrieve(self, question: str, history: Sequence[Turn] = (),
                 timings: dict[str, float] | None = None) -> tuple[Hit, ...]:
        """The hits the policy routes on: the search's, reranked when a reranker is set.
        ``timings`` receives retrieval_ms, and rerank_ms and reranked (1 or 0) with a reranker."""
        started = time.perf_counter()
        if self.reranker is None:
            hits = tuple(self.retriever.search(question, history))
        else:
            from chatbot.retrieval.rerank import search_depth

            found = self.retriever.search(question, history, k=search_depth(self.settings))
            searched = time.perf_counter()
            reranked = self.reranker.rerank(question, history, found)
            hits = reranked.hits[: self.settings.top_k]
            if timings is not None:
                timings["rerank_ms"] = round((time.perf_counter() - searched) * 1000, 2)
                timings["reranked"] = float(reranked.ran)
        if timings is not None:
            timings["retrieval_ms"] = round((time.perf_counter() - started) * 1000, 2)
        return hits

    # --- answering ------------------------------------------------------------------------------
    def read_signals(self, question: str, history: Sequence[Turn] = ()) -> Signals | None:
        """The message's sentiment and frustration (None when signals are off)."""
        return None if self.signals is None else self.signals.read(question, history)

    def answer(self, question: str, history: Sequence[Turn] = (),
               signals: Signals | None = None) -> Reply:
        reply = None
        for item in self.stream(question, history, signals):
            if isinstance(item, Reply):
                reply = item
        assert reply is not None
        return reply

    def check_question(self, question: str) -> str:
        """The question without surrounding whitespace; raises ``InvalidRequestError`` by the
        one message rule (``chatbot.answering.inputs``)."""
        return check_message(question, self.settings.max_message_chars)

    def stream(self, question: str, history: Sequence[Turn] = (),
               signals: Signals | None = None) -> Iterator[str | Reply]:
        """Text deltas as they are produced, then exactly one Reply whose text equals them.
        ``signals``: the message's, when the caller read them already (``read_signals``)."""
        text = self.check_question(question)  # raise before the first yield
        started = time.perf_counter()
        return self._stream(text, tuple(history), started, signals)

    def _stream(self, question: str, history: tuple[Turn, ...], started: float,
                signals: Signals | None = None) -> Iterator[str | Reply]:
        if signals is None:
            signals = self.read_signals(question, history)
        extra: dict[str, float] = {}
        hits = self.retrieve(question, history, extra)
        thresholds = self.thresholds()
        decision = self.policy.decide(question, hits, history, thresholds, signals)
        if decision.route != Route.GENERATED:
            assert decision.text is not None
            yield decision.text
            yield self._reply(decision, hits, started, extra, model=None, history=history)
            return

        release = _Release(decision, thresholds.support, question, self.verifier)
        messages = prompt.build_messages(question, decision.sources, history,
                                         redactor=self._redactor)
        failure = None
        result = None
        generation = None
        try:
            generation = self.generator.stream(messages)
            for delta in generation:
                yield from release.feed(delta)
                if release.gate.closed:
                    break  # the rest would be cut anyway
            else:
                yield from release.finish()
            result = generation.result
        except (GenerationError, ModelError) as error:  # down, slow, crashed: the fallback
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
        final = self._after_generation(decision, release, history, failure)
        assert final.text is not None
        if final.route != Route.GENERATED:
            yield final.text
        elif final.after:
            yield final.after  # the offer of a person, after the whole answer
        yield self._reply(final, hits, started, extra, model=self.generator.name,
                          history=history)

    def _after_generation(self, decision: Decision, release: _Release,
                          history: Sequence[Turn], failure: str | None) -> Decision:
        gate = release.gate
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
        return self.policy.finish_generated(decision, gate.text, gate.claims, history, note,
                                            shown=release.text)

    def _reply(self, decision: Decision, hits: tuple[Hit, ...], started: float,
               extra: dict[str, float], model: str | None,
               history: Sequence[Turn] = ()) -> Reply:
        assert decision.text is not None
        log.info("route=%s confidence=%.3f reason=%s", decision.route.value,
                 decision.confidence, decision.reason)
        return Reply(
            text=decision.text, route=decision.route, confidence=round(decision.confidence, 4),
            reason=decision.reason, sources=decision.sources, hits=hits, model=model,
            index_version=self.index_version,
            latency_ms=round((time.perf_counter() - started) * 1000, 2), extra=extra,
            signals=decision.signals, priority=decision.priority,
            suggestions=self.suggestions(decision.route, decision.sources, history),
        )


class _Release:
    """What the customer sees of a generated answer as it streams, in one place: the support
    gate releases checked sentences (``grounding.SentenceGate``), their [n] markers become the
    numbers of the sources the customer is shown (``citations.CustomerCitations``), and a
    frustrated customer's acknowledgement (``Decision.before``) goes ahead of the first piece
    shown, not earlier: an answer the gate rejects becomes a fallback, whose text must not
    follow an acknowledgement already shown."""

    def __init__(self, decision: Decision, support: float, question: str,
                 verifier: Any = None) -> None:
        self.gate = SentenceGate(decision.sources, support, question, verifier)
        self._citations = CustomerCitations(decision.sources)
        self._before = decision.before

    @property
    def text(self) -> str:
        """The answer shown so far (the acknowledgement aside)."""
        return self._citations.text

    def feed(self, delta: str) -> list[str]:
        return self._show(self.gate.feed(delta))

    def finish(self) -> list[str]:
        return self._show(self.gate.finish())

    def _show(self, released: list[str]) -> list[str]:
        pieces = [piece for piece in self._citations.rewrite(released) if piece]
        if pieces and self._before:
            pieces.insert(0, self._before)
            self._before = ""
        return pieces


def build_pipeline(settings: Settings, *, retriever: Any = None, generator: Generator | None = None,
                   policy: Policy | None = None, signals: SignalReader | None = None,
                   reranker: Any = None, verifier: Any = None) -> Pipeline:
    """The default pipeline for ``settings``; any stage can be replaced by an object with the
    same interface. Nothing heavy is loaded here. The reranker is the one ``CHATBOT_RERANKER``
    names unless one is passed (``CHATBOT_RERANKER=off``: none); so is the support gate's
    verifier (``CHATBOT_VERIFIER``, ``chatbot.answering.verify``)."""
    if retriever is None:
        from chatbot.retrieval.search import Retriever

        retriever = Retriever(settings)
    if signals is None and settings.signals:
        signals = SignalReader()
    if reranker is None and settings.reranker.strip().lower() != "off":
        from chatbot.retrieval.rerank import Reranker, resolve_weights_dir

        reranker = Reranker(settings, resolve_weights_dir(settings.reranker))
    if verifier is None and settings.verifier.strip().lower() != "off":
        from chatbot.answering.verify import make_verifier

        verifier = make_verifier(settings)
    return Pipeline(settings, retriever, generator or make_generator(settings),
                    policy or Policy(settings), signals, reranker, verifier)


def format_reply(reply: Reply) -> str:
    """The reply with its route, confidence, reason and sources, for the terminal."""
    lines = [reply.text, f"  [{reply.route.value} · confidence {reply.confidence:.2f} · "
                         f"{reply.latency_ms:.0f} ms] {reply.reason}"]
    # Numbered as the customer sees them (the text's [n]); a dialogue it drew on is listed for
    # the operator, unnumbered, as customers never see it.
    shown = visible_sources(reply.sources)
    for n, hit in enumerate(shown, start=1):
        lines.append(f"  [{n}] {hit.document.kind} {hit.document.record_id}: "
                     f"{hit.document.question}")
    for hit in reply.sources:
        if hit not in shown:
            lines.append(f"  [-] {hit.document.kind} {hit.document.record_id} (not shown to "
                         "customers)")
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
