"""Fresh questions for the uncached load and stage benchmarks: paraphrases of the knowledge
base's own questions, generated deterministically, each text distinct from every other one as
the query cache sees it (``chatbot.retrieval.embed.query_key``: case and spaces folded).

Real customers rarely send the exact same text twice, so a benchmark that repeats a few hundred
questions measures the query cache, not the model. These questions never repeat: each one sent
once is a cache miss, as in real traffic, while the cache stays on (the way a server runs), so a
customer turn that comes back as history of its follow-ups is still embedded only once.

Sources (``knowledge_base/``): every FAQ question and alternative phrasing, and every customer
turn of the past dialogues. Rewrites, the kind customers add around a question: a greeting or
lead-in ("hi, quick question:"), a sign-off ("thanks!"), a typo (two letters swapped, one
dropped or doubled, in one word of four or more letters), dropped end punctuation, and casing
(all lower, or a capital first letter; casing alone never makes a text new to the cache). Round
``r`` gives every source its ``r``-th variant, sources in a seeded shuffled order, so the first
questions cover every source once before any source comes back, and consecutive questions come
from different sources.

``faq_route_questions`` keeps those the real pipeline answers from an FAQ when asked on their
own (the load benchmark measures the FAQ route: a question routed to generation would measure
the language model instead), routing them with the active index, its thresholds, the signals
and the reranker when one is configured; no generator is loaded. Its output is saved under
var/bench/, keyed by index version and scorer. The generator itself needs no model and is what
tests/test_bench_fresh_questions.py checks.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from chatbot.retrieval.embed import query_key

FRESH_CACHE = Path(__file__).resolve().parent.parent / "var" / "bench"

PREFIXES = (
    "", "hi, quick question: ", "hello! ", "hey there, ", "good morning, ", "hi team, ",
    "sorry to bother you, ", "one more thing: ", "question: ", "hi again, ", "hey, ",
    "good afternoon. ", "quick one: ", "hello, ",
)
SUFFIXES = (
    "", " thanks!", " thank you", " thx", " cheers", " thanks in advance", " :)",
    " many thanks", " ty", " appreciate it",
)
_WORD = re.compile(r"[A-Za-z]{4,}")


def sources(documents: Iterable[object]) -> list[str]:
    """The knowledge base's question texts, each once, in file order: FAQ questions and
    alternatives, then dialogue customer turns (``chatbot.types.Document`` rows)."""
    faq: list[str] = []
    dialogue: list[str] = []
    for doc in documents:
        kind = getattr(doc, "kind", "")
        if kind == "faq":
            faq.extend(getattr(doc, "phrasings", ()))
        elif kind == "dialogue":
            dialogue.append(getattr(doc, "question", ""))
    return list(dict.fromkeys(t.strip() for t in [*faq, *dialogue] if t.strip()))


def typo(text: str, rng: random.Random) -> str:
    """``text`` with one typo in one word of four or more letters (the same text when it has
    no such word): two neighbouring letters swapped, one letter dropped or one doubled."""
    words = list(_WORD.finditer(text))
    if not words:
        return text
    match = rng.choice(words)
    word, start = match.group(), match.start()
    i = rng.randrange(1, len(word) - 2)  # keep the first and last letters: still readable
    kind = rng.randrange(3)
    if kind == 0:
        changed = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    elif kind == 1:
        changed = word[:i] + word[i + 1 :]
    else:
        changed = word[:i] + word[i] + word[i:]
    return text[:start] + changed + text[start + len(word) :]


def rewrite(text: str, variant: int, rng: random.Random) -> str:
    """Variant ``variant`` of ``text``: 0 is the text itself; the others add a lead-in and a
    sign-off (both from ``variant``, so the first rounds differ) and, seeded, a typo, dropped
    end punctuation or a change of case."""
    if variant == 0:
        return text
    prefix = PREFIXES[variant % len(PREFIXES)]
    suffix = SUFFIXES[(variant // len(PREFIXES) + variant) % len(SUFFIXES)]
    body = text
    if rng.random() < 0.35:
        body = typo(body, rng)
    if rng.random() < 0.3:
        body = body.rstrip("?.! ")
    if prefix and rng.random() < 0.5:
        body = body[:1].lower() + body[1:]  # "hi, quick question: where is ..."
    out = prefix + body + suffix
    if rng.random() < 0.2:
        out = out.lower()
    elif prefix and rng.random() < 0.3:
        out = out[:1].upper() + out[1:]
    return out


def fresh_questions(texts: Sequence[str], n: int, *, seed: int = 0,
                    max_rounds: int = 40) -> list[str]:
    """Up to ``n`` questions made from ``texts``, all distinct as the query cache sees them
    (``query_key``), the same list for the same inputs and ``seed``. Fewer than ``n`` only
    when ``max_rounds`` variants of every text are used up."""
    return list(itertools.islice(iter_fresh_questions(texts, seed=seed, max_rounds=max_rounds),
                                 max(n, 0)))


def iter_fresh_questions(texts: Sequence[str], *, seed: int = 0,
                         max_rounds: int = 40) -> Iterator[str]:
    """The questions of ``fresh_questions`` one by one, without a count (a filter takes as
    many as it needs)."""
    order = list(dict.fromkeys(texts))
    random.Random(seed).shuffle(order)
    seen: set[bytes] = set()
    for variant in range(max_rounds):
        for position, text in enumerate(order):
            # One generator per (seed, variant, source): a source's variant does not depend
            # on how many others came before it.
            rng = random.Random(f"{seed}/{variant}/{position}/{text}")
            question = rewrite(text, variant, rng)
            key = query_key(question)
            if key in seen or not question.strip():
                continue
            seen.add(key)
            yield question


def faq_route_questions(n: int, *, seed: int = 0, cache_dir: Path = FRESH_CACHE
                        ) -> tuple[list[str], dict[str, Any]]:
    """``n`` fresh questions (``fresh_questions``) that the real pipeline answers from an FAQ
    when asked on their own, with what the filter saw. The filter runs here, before any server
    starts: the active index, its thresholds, the signals and the reranker when one is set, no
    generator. It is saved in ``cache_dir`` by index version and scorer, so later runs skip
    it."""
    from chatbot.answering.pipeline import build_pipeline
    from chatbot.config import Settings
    from chatbot.knowledge.ingest import load_knowledge_base
    from chatbot.retrieval.index import active_version

    settings = Settings(query_cache_size=1 << 20, embedding_batch_window_ms=0.0)
    pipeline = build_pipeline(settings)
    scorer = re.sub(r"[^A-Za-z0-9._-]+", "_", str(getattr(pipeline, "scorer", "cosine")))
    path = cache_dir / f"fresh-faq-{active_version(settings)}-{scorer}-seed{seed}.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if len(saved["questions"]) >= n:
            return saved["questions"][:n], saved["filter"]
    # The hits the policy routes on: reranked when the pipeline has a reranker.
    retrieve = getattr(pipeline, "retrieve", pipeline.retriever.search)
    texts = sources(load_knowledge_base(settings.knowledge_base))
    thresholds = pipeline.thresholds()
    kept: list[str] = []
    routes: Counter[str] = Counter()
    candidates = iter_fresh_questions(texts, seed=seed)
    started = time.perf_counter()
    while len(kept) < n:
        chunk = list(itertools.islice(candidates, 256))
        if not chunk:
            break
        pipeline.retriever.embedder.encode_queries(chunk)  # one batched call fills the cache
        for question in chunk:
            hits = retrieve(question)
            decision = pipeline.policy.decide(question, hits, (), thresholds,
                                              pipeline.read_signals(question))
            routes[decision.route.value] += 1
            if decision.route.value == "faq":
                kept.append(question)
        print(f"route filter: {len(kept)}/{n} FAQ-route of {sum(routes.values())}", flush=True)
    info = {"sources": len(texts), "candidates": sum(routes.values()), "scorer": scorer,
            "candidate_routes": dict(routes), "seed": seed,
            "thresholds": f"faq {thresholds.faq}, answer {thresholds.answer}",
            "seconds": round(time.perf_counter() - started, 1)}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"questions": kept, "filter": info}))
    return kept[:n], info
