"""Evaluate routing and answers on any CSV of the right shape (`chatbot eval-routing`,
`chatbot eval-answers`, and the answer benchmarks).

- ``eval_routing``: a throw-away index from TRAIN (one document per row, labelled), in-scope and
  out-of-scope test questions routed by the real policy (optionally calibrated first on other
  files); reports ``in_scope_answered``, ``in_scope_correct``, ``oos_fallback`` and thresholds.
- ``eval_answers``: answers test questions from a throw-away index of TRAIN question/answer rows
  and scores them against the reference answers: ROUGE-L F1, groundedness (lexical support: share
  of answer sentences whose words the retrieved sources contain), ``verifier_accepted`` (share
  that also pass the grounding verifier, when one is configured), route distribution, latency
  and tokens/s.
  ``mode`` is ``pipeline`` (the product: routing, support gate), ``generate`` (always generate
  from the top sources: the model's own quality) or ``verbatim`` (the nearest neighbour's answer).
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from tqdm import tqdm

from chatbot.answering import prompt
from chatbot.answering.calibrate import pick_thresholds, route_metrics
from chatbot.answering.grounding import support_check
from chatbot.answering.policy import DEFAULT_THRESHOLDS, Thresholds
from chatbot.config import Settings
from chatbot.errors import ConfigError
from chatbot.evaluation.datasets import LabelledText, documents_from_rows, read_columns, spread
from chatbot.evaluation.metrics import percentile_ms, rouge_l
from chatbot.types import Hit, Route

Mode = Literal["pipeline", "generate", "verbatim"]


# --- routing ----------------------------------------------------------------------------------


def _category(hit: Hit) -> str:
    return hit.document.category


def eval_routing(kb: Path, in_scope: Path, out_of_scope: Path, *, text_col: str, label_col: str,
                 settings: Settings, calibrate_in: Path | None = None,
                 calibrate_out: Path | None = None, embedder: Any = None,
                 progress: bool = False) -> dict[str, Any]:
    """Route the test questions with the default thresholds, or with thresholds calibrated on
    ``calibrate_in``/``calibrate_out`` for ``settings.target_precision``."""
    target = None if calibrate_in is None else settings.target_precision
    return eval_routing_targets(kb, in_scope, out_of_scope, [target], text_col=text_col,
                                label_col=label_col, settings=settings,
                                calibrate_in=calibrate_in, calibrate_out=calibrate_out,
                                embedder=embedder, progress=progress)[target]


def eval_routing_targets(kb: Path, in_scope: Path, out_of_scope: Path,
                         targets: Sequence[float | None], *, text_col: str, label_col: str,
                         settings: Settings, calibrate_in: Path | None = None,
                         calibrate_out: Path | None = None, embedder: Any = None,
                         progress: bool = False) -> dict[float | None, dict[str, Any]]:
    """``eval_routing`` for several target precisions (None: the default thresholds) from one
    index and one search of every question: only the thresholds differ between them."""
    from chatbot.retrieval.search import Retriever, search_all

    if (calibrate_in is None) != (calibrate_out is None):
        raise ConfigError("give both --calibrate-in and --calibrate-out, or neither")
    if calibrate_in is None and any(t is not None for t in targets):
        raise ConfigError("a target precision needs --calibrate-in and --calibrate-out")
    train = read_columns(kb, (text_col, label_col))
    documents = documents_from_rows([LabelledText(t, lab) for t, lab in train])
    retriever = Retriever.from_documents(documents, settings, embedder, progress=progress)
    k = max(settings.top_k, prompt.MAX_SOURCES)

    def search(texts: Sequence[str], desc: str) -> list[list[Hit]]:
        return search_all(retriever, texts, k=k, desc=desc, progress=progress)

    cal_in_hits: list[list[Hit]] = []
    cal_labels: list[str] = []
    cal_out_hits: list[list[Hit]] = []
    if calibrate_in is not None and calibrate_out is not None:
        cal_in = read_columns(calibrate_in, (text_col, label_col))
        cal_out = [t for (t,) in read_columns(calibrate_out, (text_col,))]
        cal_in_hits = search([t for t, _ in cal_in], "calibrate in-scope")
        cal_labels = [lab for _, lab in cal_in]
        cal_out_hits = search(cal_out, "calibrate out-of-scope")
    test_in = read_columns(in_scope, (text_col, label_col))
    test_out = [t for (t,) in read_columns(out_of_scope, (text_col,))]
    started = time.perf_counter()
    in_hits = search([t for t, _ in test_in], "in-scope")
    out_hits = search(test_out, "out-of-scope")
    seconds = time.perf_counter() - started

    results: dict[float | None, dict[str, Any]] = {}
    for target in targets:
        thresholds = DEFAULT_THRESHOLDS
        calibration: dict[str, Any] = {}
        if target is not None:
            answer, faq, calibration = pick_thresholds(cal_in_hits, cal_labels, cal_out_hits,
                                                       _category, target)
            thresholds = Thresholds(answer, faq, DEFAULT_THRESHOLDS.support,
                                    source=f"calibrated on {calibrate_in} and {calibrate_out}",
                                    metrics=calibration)
        report = route_metrics(in_hits, [lab for _, lab in test_in], out_hits, _category,
                               thresholds, settings, [t for t, _ in test_in], test_out)
        results[target] = {
            **report, "documents": len(documents),
            "thresholds": {"answer": thresholds.answer, "faq": thresholds.faq,
                           "source": thresholds.source},
            "calibration": calibration,
            "target_precision": settings.target_precision if target is None else target,
            "queries_per_s": round((len(in_hits) + len(out_hits)) / seconds, 1)}
    return results


# --- answers ----------------------------------------------------------------------------------

def make_eval_generator(settings: Settings, which: str) -> Any:
    """base (no adapter), finetuned (the shipped adapter) or a PATH (adapter or model folder)."""
    from chatbot.generation.local import DEFAULT_ADAPTER, TransformersGenerator

    if which == "base":
        return TransformersGenerator(settings, adapter="none")
    if which == "finetuned":
        if not (DEFAULT_ADAPTER / "adapter_config.json").is_file():
            raise ConfigError(f"no fine-tuned adapter at {DEFAULT_ADAPTER}: run "
                              "`chatbot finetune generator` or pass --generator PATH")
        return TransformersGenerator(settings, adapter=str(DEFAULT_ADAPTER))
    path = Path(which)
    if (path / "adapter_config.json").is_file():
        return TransformersGenerator(settings, adapter=str(path))
    if (path / "config.json").is_file():
        return TransformersGenerator(settings, model=str(path), adapter="none")
    raise ConfigError(f"--generator must be base, finetuned or a folder with an adapter or a "
                      f"model, not {which!r}")


def eval_answers(kb: Path, queries: Path, *, question_col: str, answer_col: str,
                 settings: Settings, generator: str | Any = "finetuned", mode: Mode = "pipeline",
                 limit: int | None = None, embedder: Any = None,
                 progress: bool = False) -> dict[str, Any]:
    from chatbot.answering.pipeline import build_pipeline
    from chatbot.retrieval.search import Retriever

    documents = documents_from_rows([LabelledText(q, "", answer) for q, answer
                                    in read_columns(kb, (question_col, answer_col))])
    tests = spread(read_columns(queries, (question_col, answer_col)), limit)
    retriever = Retriever.from_documents(documents, settings, embedder, progress=progress)
    gen = None
    if mode != "verbatim":
        gen = make_eval_generator(settings, generator) if isinstance(generator, str) else generator
        gen.load()  # load time is not answer latency
    pipeline = build_pipeline(settings, retriever=retriever, generator=gen)  # type: ignore[arg-type]
    thresholds = pipeline.thresholds()
    scores: list[float] = []
    grounded: list[float] = []
    verified: list[float] = []
    latencies: list[float] = []
    rates: list[float] = []
    firsts: list[float] = []
    routes: Counter[str] = Counter()
    examples: list[dict[str, str]] = []
    for question, reference in tqdm(tests, desc=f"answers ({mode})", disable=not progress):
        started = time.perf_counter()
        if mode == "pipeline":
            reply = pipeline.answer(question)
            text, route = reply.text, reply.route.value
            # What the answer was checked against: the FAQ it quotes, or the prompt's sources.
            sources = list(reply.sources if reply.route == Route.FAQ
                           else reply.hits[: prompt.MAX_SOURCES])
            if "tokens_per_s" in reply.extra:
                rates.append(reply.extra["tokens_per_s"])
                firsts.append(reply.extra["first_token_ms"])
        else:
            hits = retriever.search(question, k=max(settings.top_k, prompt.MAX_SOURCES))
            sources = hits[: prompt.MAX_SOURCES]
        if mode == "generate":
            result = gen.generate(prompt.build_messages(question, sources))  # type: ignore[union-attr]
            text, route = result.text, Route.GENERATED.value
            rates.append(result.tokens_per_s)
            firsts.append(result.first_token_ms)
        elif mode == "verbatim":
            text, route, sources = hits[0].document.answer, Route.FAQ.value, hits[:1]
        latencies.append((time.perf_counter() - started) * 1000)
        routes[route] += 1
        scores.append(rouge_l(prompt.strip_citations(text), reference))
        if route in (Route.FAQ.value, Route.GENERATED.value):
            check = support_check(text, sources, thresholds.support, question,
                                  pipeline.verifier)
            if check.sentences:
                grounded.append(check.lexical)  # the lexical pass alone
                verified.append(check.groundedness)  # both passes (= lexical without verifier)
        if len(examples) < 3:
            examples.append({"question": question, "reference": reference[:300],
                             "answer": text[:300], "route": route})
    n = len(tests)
    return {
        "n": n, "mode": mode, "documents": len(documents),
        "generator": None if gen is None else gen.name,
        "rouge_l": round(statistics.fmean(scores), 4),
        "groundedness": round(statistics.fmean(grounded), 4) if grounded else None,
        "verifier_accepted": round(statistics.fmean(verified), 4) if (
            verified and pipeline.verifier is not None) else None,
        "grounded_answers": len(grounded),
        "routes": {r: round(c / n, 4) for r, c in sorted(routes.items())},
        "latency_ms_p50": percentile_ms(latencies, 50, 1),
        "latency_ms_p95": percentile_ms(latencies, 95, 1),
        "tokens_per_s": round(statistics.fmean(rates), 2) if rates else None,
        "first_token_ms_p50": percentile_ms(firsts, 50, 1) if firsts else None,
        "support_threshold": thresholds.support,
        "examples": examples,
    }
