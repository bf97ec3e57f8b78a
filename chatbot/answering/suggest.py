"""Suggest: the questions a customer is likely to ask next, and the ones to offer on opening.

Owns the next-question statistics over FAQ ids and the ranking of suggestions; the serving layer
only passes ids in and shows ``Suggestion``s (the API's ``suggestions: [{faq_id, question}]``).

Where the statistics come from:

- the knowledge base's historical dialogues: each customer turn is mapped to the FAQ it is about
  by retrieval over the FAQ documents alone (the top hit, with the earlier turns as history, kept
  when its cosine reaches ``map_threshold``; order numbers, "thanks" and other turns below it are
  dropped), giving one sequence of FAQ ids per dialogue;
- logged conversations: sequences of the FAQ ids the bot answered, passed in by the caller.

Ranking after an answer about FAQ ``a`` is by P(b | a), the transition counts smoothed towards a
back-off distribution (Dirichlet smoothing):

    P(b | a) = (C(a, b) + beta * Q(b | a)) / (C(a) + beta)
    Q(b | a) = (1 - gamma) * N(b | a) + gamma * Pop(b)

``N`` spreads mass over ``a``'s ``neighbours`` nearest FAQs (softmax of the similarity over
``temperature``), ``Pop`` is how often each FAQ was asked (add-one smoothed). The similarity of
``b`` to ``a`` is the mean of two cosines with ``b``'s question: ``a``'s question (a similar
question) and ``a``'s answer (a question the answer brings up: "start a return" mentions the
label, "is the label free?" follows); on the demo dialogues the answer half lifts hit@3 of the
back-off alone from 0.16 to 0.18 (bench/results/suggest.md).

So an FAQ with observed transitions ranks them first, one never seen falls back to its
neighbours, and the rest is ordered by popularity. FAQs already answered in the conversation are
never suggested. Ties break by knowledge-base order: the result is deterministic.

The constructor stores settings only; the first call (or ``warm_up()``, for serving) loads the
documents, embeds the FAQ questions and answers and maps the dialogues. Each text is embedded
once (``ReusingEmbedder``), and not at all when ``known_vectors`` has it: serving passes the
index's phrasings (every FAQ question and dialogue turn) and the previous statistics' answer
vectors (``answer_vectors``), so a rebuild after a re-index embeds only new or changed answers.
"""

from __future__ import annotations

import heapq
import logging
import math
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from chatbot.config import Settings
from chatbot.errors import ConfigError
from chatbot.knowledge.ingest import load_knowledge_base
from chatbot.retrieval.embed import Embedder, ReusingEmbedder
from chatbot.retrieval.search import Retriever
from chatbot.types import Document, Suggestion

log = logging.getLogger(__name__)

# Cosine a customer turn needs to count as asking an FAQ: on the 168 turns of the added demo
# dialogues labelled by hand, mapping precision is 0.86 at 0.55 and at 0.6 (which keeps 11 fewer
# turns), 0.82 at 0.5.
MAP_THRESHOLD = 0.55
# Set a priori. On the demo dialogues hit@3 was the same for all 36 combinations of smoothing
# 0.5-4, popularity weight 0-0.4 and temperature 0.02-0.1 (checked once, 5-fold on the training
# dialogues of bench/bench_suggest.py): too few transitions repeat to tell them apart.
SMOOTHING = 1.0  # beta: pseudo-counts given to the back-off distribution
POPULARITY_WEIGHT = 0.2  # gamma: share of popularity in the back-off distribution
NEIGHBOURS = 10  # FAQs in an FAQ's neighbourhood
TEMPERATURE = 0.05  # softmax temperature over neighbour cosines
DIALOGUE_TURN_SEPARATOR = "#"  # dialogue documents are "<dialogue id>#<turn index>"


def dialogue_turns(documents: Iterable[Document]) -> dict[str, list[Document]]:
    """The customer turns of each dialogue, in order, keyed by dialogue id."""
    turns: dict[str, list[tuple[int, Document]]] = defaultdict(list)
    for document in documents:
        if document.kind != "dialogue":
            continue
        dialogue, _, index = document.record_id.rpartition(DIALOGUE_TURN_SEPARATOR)
        if dialogue and index.isdigit():
            turns[dialogue].append((int(index), document))
    return {d: [doc for _, doc in sorted(items, key=lambda x: x[0])]
            for d, items in sorted(turns.items())}


def map_dialogues(
    documents: Iterable[Document], faq_retriever: Retriever, *, threshold: float = MAP_THRESHOLD
) -> dict[str, list[str | None]]:
    """For each dialogue, the FAQ id each customer turn asks about (None below ``threshold``).

    ``faq_retriever`` must index FAQ documents only: over a full index a customer turn would
    find its own dialogue document first."""
    dialogues = dialogue_turns(documents)
    texts = [t.question for turns in dialogues.values() for t in turns]
    for start in range(0, len(texts), 256):
        # One batched pass fills the query cache: each search below then embeds nothing new
        # (several times faster than one turn at a time).
        faq_retriever.embedder.encode_queries(texts[start:start + 256])
    mapped: dict[str, list[str | None]] = {}
    for dialogue, turns in dialogues.items():
        ids: list[str | None] = []
        for turn in turns:
            # The earlier turns inform a follow-up ("and the texts too?"), as in live answering.
            hits = faq_retriever.search(turn.question, history=turn.context, k=1)
            top = hits[0] if hits else None
            good = top is not None and (top.dense_score or 0.0) >= threshold
            ids.append(top.document.record_id if top is not None and good else None)
        mapped[dialogue] = ids
    return mapped


@dataclass(frozen=True)
class _Model:
    """Everything ``suggest`` and ``opening`` read; built once, then only read (thread-safe)."""

    order: dict[str, int]  # FAQ id -> position in the knowledge base (the tie-break)
    questions: dict[str, str]
    transitions: dict[str, Counter[str]]
    asked: Counter[str]  # how often each FAQ was asked, anywhere in a sequence
    openers: Counter[str]  # how often each FAQ was a conversation's first question
    neighbours: dict[str, list[tuple[str, float]]]  # nearest FAQs (see _nearest), best first


class Suggester:
    """Suggested next questions after an answer, and opening questions for a new chat.

    Serving wires it once: ``documents=retriever.documents``, ``embedder=retriever.embedder``
    (the active index's FAQs and dialogues, the model already loaded) and
    ``known_vectors=retriever.phrasing_vectors()``, ``warm_up()`` off the request path; a new
    instance replaces it when the index moves on (it never changes after it is built). Per
    reply: ``suggest(<the FAQ answered>, history_faq_ids=<FAQs answered before>)``; per new
    chat: ``opening(recent_counts=<answers per FAQ in recent days>)``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        embedder: Embedder | None = None,
        documents: Sequence[Document] | None = None,
        logged_sequences: Iterable[Sequence[str]] = (),
        known_vectors: Mapping[str, np.ndarray] | None = None,
        map_threshold: float = MAP_THRESHOLD,
        smoothing: float = SMOOTHING,
        popularity_weight: float = POPULARITY_WEIGHT,
        neighbours: int = NEIGHBOURS,
        temperature: float = TEMPERATURE,
    ) -> None:
        """``documents``: the knowledge base's documents (FAQs, and dialogues to learn from);
        None loads ``settings.knowledge_base``. ``logged_sequences``: the FAQ ids answered in
        each logged conversation, in order; ids no longer in the knowledge base are ignored.
        ``known_vectors``: text -> vector by the same model, used instead of embedding it."""
        if smoothing <= 0 or not 0.0 <= popularity_weight <= 1.0:
            raise ConfigError("suggestions: smoothing must be > 0 and popularity_weight "
                              "within [0, 1]")
        if neighbours < 1 or temperature <= 0:
            raise ConfigError("suggestions: neighbours must be >= 1 and temperature > 0")
        self.settings = settings
        self._embedder = embedder
        self._known = known_vectors
        self._documents = documents
        # Kept as given (it may be a one-shot iterator): consumed once, when the model is built.
        self._logged = logged_sequences
        self.map_threshold = map_threshold
        self.smoothing = smoothing
        self.popularity_weight = popularity_weight
        self.n_neighbours = neighbours
        self.temperature = temperature
        self._model: _Model | None = None
        self._sequences: list[tuple[str, ...]] = []
        self._answer_vectors: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    # --- building -------------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Build the statistics now (serving calls this at start-up, not on a request)."""
        self._state()

    @property
    def answer_vectors(self) -> dict[str, np.ndarray]:
        """Each FAQ answer's vector (text -> vector), which no index holds: with the index's
        phrasings, the next build's ``known_vectors``. Empty until built."""
        return self._answer_vectors

    @property
    def sequences(self) -> list[tuple[str, ...]]:
        """The FAQ-id sequences learnt from (dialogues first, then logged conversations)."""
        self._state()
        return list(self._sequences)

    def _state(self) -> _Model:
        model = self._model
        if model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._build()
                model = self._model
        return model

    def _build(self) -> _Model:
        documents = list(self._documents if self._documents is not None
                         else load_knowledge_base(self.settings.knowledge_base))
        faqs = list({d.record_id: d for d in documents if d.kind == "faq"}.values())
        order = {d.record_id: i for i, d in enumerate(faqs)}
        embedder = ReusingEmbedder(self._embedder or Embedder(self.settings), self._known)
        self._known = None  # used once: do not keep an index's vectors alive with the statistics
        sequences: list[tuple[str, ...]] = []
        if faqs and any(d.kind == "dialogue" for d in documents):
            retriever = Retriever.from_documents(faqs, self.settings, embedder)
            mapped = map_dialogues(documents, retriever, threshold=self.map_threshold)
            sequences += [tuple(i for i in ids if i is not None) for ids in mapped.values()]
        sequences += [tuple(i for i in seq if i in order) for seq in self._logged]
        self._sequences = [s for s in sequences if s]

        transitions: dict[str, Counter[str]] = defaultdict(Counter)
        asked: Counter[str] = Counter()
        openers: Counter[str] = Counter()
        for seq in self._sequences:
            openers[seq[0]] += 1
            asked.update(seq)
            for a, b in zip(seq, seq[1:], strict=False):
                if a != b:  # a clarification of the same FAQ is not a next question
                    transitions[a][b] += 1
        neighbours = self._nearest(faqs, embedder)
        log.info("suggestions learnt from %d sequences over %d FAQs", len(self._sequences),
                 len(faqs))
        return _Model(order=order, questions={d.record_id: d.question for d in faqs},
                      transitions=dict(transitions), asked=asked, openers=openers,
                      neighbours=neighbours)

    def _nearest(self, faqs: Sequence[Document], embedder: Embedder
                 ) -> dict[str, list[tuple[str, float]]]:
        """Each FAQ's nearest FAQs, best first: the mean cosine of their question with its
        question and with its answer."""
        if len(faqs) < 2:
            return {d.record_id: [] for d in faqs}
        questions = embedder.encode([d.question for d in faqs])
        answers = embedder.encode([d.answer for d in faqs])
        self._answer_vectors = dict(zip((d.answer for d in faqs), answers, strict=True))
        m = min(self.n_neighbours, len(faqs) - 1)
        nearest: dict[str, list[tuple[str, float]]] = {}
        for start in range(0, len(faqs), 1024):  # blocks: no n x n matrix for a large base
            block = slice(start, start + 1024)
            sims = (questions[block] @ questions.T + answers[block] @ questions.T) / 2
            for row, scores in enumerate(sims):
                scores[start + row] = -np.inf  # never one's own neighbour
                top = sorted(np.argpartition(-scores, m - 1)[:m].tolist(),
                             key=lambda j: (-scores[j], j))
                nearest[faqs[start + row].record_id] = [
                    (faqs[j].record_id, float(scores[j])) for j in top]
        return nearest

    # --- ranking --------------------------------------------------------------------------------
    def suggest(
        self, answered_faq_id: str | None, *, history_faq_ids: Sequence[str] = (), k: int = 3
    ) -> list[Suggestion]:
        """Up to ``k`` questions to offer after an answer about ``answered_faq_id``, best first,
        never one already answered in this conversation (``history_faq_ids``). An id the
        knowledge base does not have (or None) gets the most asked questions."""
        model = self._state()
        exclude = {answered_faq_id, *history_faq_ids}
        scores = self.scores(answered_faq_id, candidates=k + len(exclude))
        ranked = sorted((f for f in scores if f not in exclude),
                        key=lambda f: (-scores[f], model.order[f]))
        return [Suggestion(f, model.questions[f]) for f in ranked[:k]]

    def scores(self, answered_faq_id: str | None, *, candidates: int | None = None
               ) -> dict[str, float]:
        """P(next | answered) for every FAQ, or only for the ones that can rank in the top
        ``candidates`` (observed next FAQs, neighbours and the most asked), which is all
        ``suggest`` needs on a large knowledge base."""
        model = self._state()
        if candidates is None:
            pool = set(model.order)
        else:
            pool = set(self._most_asked(model, candidates))
            if answered_faq_id in model.order:
                pool |= set(model.transitions.get(answered_faq_id, ()))
                pool |= {f for f, _ in model.neighbours[answered_faq_id]}
        total = sum(model.asked.values()) + len(model.order)
        popularity = {f: (model.asked[f] + 1) / total for f in pool}
        if answered_faq_id not in model.order:
            return popularity
        near = self._neighbour_weights(model.neighbours[answered_faq_id])
        counts = model.transitions.get(answered_faq_id, Counter())
        seen = sum(counts.values())
        beta, gamma = self.smoothing, self.popularity_weight
        return {f: (counts[f] + beta * ((1 - gamma) * near.get(f, 0.0) + gamma * popularity[f]))
                / (seen + beta) for f in pool}

    def _neighbour_weights(self, neighbours: Sequence[tuple[str, float]]) -> dict[str, float]:
        if not neighbours:
            return {}
        best = neighbours[0][1]  # subtracted before exp(): no overflow at small temperatures
        weights = {f: math.exp((s - best) / self.temperature) for f, s in neighbours}
        norm = sum(weights.values())
        return {f: w / norm for f, w in weights.items()}

    def neighbours(self, faq_id: str, k: int = 3) -> list[Suggestion]:
        """The ``k`` FAQs nearest to ``faq_id`` (the back-off alone, without statistics)."""
        model = self._state()
        return [Suggestion(f, model.questions[f]) for f, _ in model.neighbours.get(faq_id, [])[:k]]

    def opening(self, k: int = 3, recent_counts: Mapping[str, int] | None = None
                ) -> list[Suggestion]:
        """Up to ``k`` questions for a new chat: the most asked recently (``recent_counts``:
        FAQ id -> times answered in recent days, from the conversation log), filled up with the
        knowledge base's most common opening questions."""
        model = self._state()
        recent = {f: n for f, n in (recent_counts or {}).items() if n > 0 and f in model.order}

        def key(f: str) -> tuple[int, int, int, int]:
            return (-recent.get(f, 0), -model.openers[f], -model.asked[f], model.order[f])

        return [Suggestion(f, model.questions[f])
                for f in heapq.nsmallest(k, model.order, key=key)]

    @staticmethod
    def _most_asked(model: _Model, n: int) -> list[str]:
        return heapq.nsmallest(n, model.order, key=lambda f: (-model.asked[f], model.order[f]))
