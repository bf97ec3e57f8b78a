"""The held-out demo test set and its evaluation (`chatbot eval-demo`).

Owns ``bench/data/demo_heldout.jsonl``'s format (``read_demo``), how one reply is judged against
a row (``judge``) and the report (``summarise``, ``eval_demo``). The set was written by hand for
the demo knowledge base and is never used to train or calibrate anything; the ``dev`` split is
for tuning, the ``test`` split only for reporting. Labelling rules: ``bench/data/README.md``.

Each row is answered by the real pipeline against the active index, its history passed as
``Turn``s (agent turns carry route ``faq``: they are verbatim FAQ answers). A reply is

- **correct**: route ``faq`` or ``generated`` and a right FAQ id is among the cited sources (the
  FAQ route cites the one FAQ it quotes);
- **wrong**: answered, but no right FAQ is cited; every answer to a ``none`` row is wrong;
- **fallback**: route ``fallback`` or ``handoff``.

``generator="none"`` (the default, fast enough for a benchmark) runs no language model: the
pipeline cannot answer the generated route without one, so each row is routed exactly as
``Pipeline.stream`` routes it (same retriever call, ``Policy.decide``, the index's thresholds)
and a generated-route row counts as answered citing the decision's sources, the prompt's top
``prompt.MAX_SOURCES`` hits: what a reply that cites no number keeps. That is an upper bound
for the generated route (the support gate may still turn such a reply into a fallback), so the
report also gives how many of those rows had a right FAQ as the top source.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tqdm import tqdm

from chatbot.answering import prompt
from chatbot.config import Settings
from chatbot.errors import ConfigError, IngestError
from chatbot.knowledge.ingest import _json_lines as json_lines
from chatbot.types import Route, Turn

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "bench" / "data" / "demo_heldout.jsonl"
SPLITS = ("test", "dev")
KINDS = ("in_scope", "multi_question", "follow_up", "near_domain", "off_topic")
ANSWERED = (Route.FAQ, Route.GENERATED)

Verdict = Literal["correct", "wrong", "fallback"]


@dataclass(frozen=True)
class DemoRow:
    """One labelled customer message; ``faq_ids`` empty means no FAQ answers it (``none``)."""

    id: str
    split: str
    message: str
    faq_ids: tuple[str, ...]
    kind: str
    history: tuple[Turn, ...] = ()
    note: str = ""

    @property
    def in_scope(self) -> bool:
        return bool(self.faq_ids)


@dataclass(frozen=True)
class Outcome:
    """How the pipeline handled one row. ``cited`` are the record ids of the cited sources,
    ``cites_faq`` whether any of them is an FAQ (not a past dialogue); ``top_ids`` the first
    retrieved hits (for inspecting misses)."""

    row: DemoRow
    route: Route
    verdict: Verdict
    cited: tuple[str, ...]
    confidence: float
    top_ids: tuple[str, ...] = ()
    cites_faq: bool = False


# --- the data ---------------------------------------------------------------------------------


def _turn(value: Any, path: Path, line: int) -> Turn:
    if not (isinstance(value, dict) and value.get("role") in ("customer", "agent")
            and isinstance(value.get("text"), str) and value["text"].strip()):
        raise IngestError(str(path), line, f"bad history turn {value!r}",
                          'each turn is {"role": "customer"|"agent", "text": "..."}')
    # Agent turns in this set are verbatim FAQ answers, so the policy sees them as FAQ replies.
    return Turn(value["role"], value["text"], "faq" if value["role"] == "agent" else None)


def _row(data: dict[str, Any], path: Path, line: int) -> DemoRow:
    for key in ("id", "split", "message", "kind"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise IngestError(str(path), line, f"missing or empty '{key}'")
    if data["split"] not in SPLITS:
        raise IngestError(str(path), line, f"split {data['split']!r}",
                          f"use one of {', '.join(SPLITS)}")
    if data["kind"] not in KINDS:
        raise IngestError(str(path), line, f"kind {data['kind']!r}",
                          f"use one of {', '.join(KINDS)}")
    faq_ids = data.get("faq_ids")
    if not (isinstance(faq_ids, list) and all(isinstance(i, str) and i for i in faq_ids)):
        raise IngestError(str(path), line, "'faq_ids' must be a list of FAQ ids",
                          "an empty list means no FAQ answers the message")
    history = data.get("history") or []
    if not isinstance(history, list):
        raise IngestError(str(path), line, "'history' must be a list of turns")
    return DemoRow(
        id=data["id"], split=data["split"], message=data["message"], faq_ids=tuple(faq_ids),
        kind=data["kind"], history=tuple(_turn(t, path, line) for t in history),
        note=str(data.get("note") or ""),
    )


def read_demo(path: Path = DEFAULT_DATA, split: str | None = None) -> list[DemoRow]:
    """The rows of ``path`` (all, or one split); names the file and line of a bad row."""
    if split is not None and split not in SPLITS:
        raise ConfigError(f"--split must be {' or '.join(SPLITS)}, not {split!r}")
    rows: list[DemoRow] = []
    seen: set[str] = set()
    try:
        # The knowledge base's JSONL reader: UTF-8, no control characters, one object a line.
        for line, data in json_lines(path):
            row = _row(data, path, line)
            if row.id in seen:
                raise IngestError(str(path), line, f"duplicate id {row.id}")
            seen.add(row.id)
            rows.append(row)
    except OSError as error:
        raise IngestError(str(path), None, f"cannot open: {error.strerror}",
                          "pass --data with the held-out JSONL file") from error
    chosen = [r for r in rows if split is None or r.split == split]
    if not chosen:
        raise IngestError(str(path), None, f"no rows in split {split!r}" if split else "no rows")
    return chosen


# --- judging ----------------------------------------------------------------------------------


def judge(row: DemoRow, route: Route, cited: Iterable[str]) -> Verdict:
    """correct, wrong or fallback, by the rules in the module docstring."""
    if route not in ANSWERED:
        return "fallback"
    return "correct" if set(row.faq_ids) & set(cited) else "wrong"


def _ids(hits: Iterable[Any]) -> tuple[str, ...]:
    return tuple(h.document.record_id for h in hits)


def answer_row(pipeline: Any, row: DemoRow, *, generate: bool) -> Outcome:
    """Answer one row with the pipeline (``generate``) or route it only (see the module doc)."""
    if generate:
        reply = pipeline.answer(row.message, row.history)
        route, sources, confidence, hits = reply.route, reply.sources, reply.confidence, reply.hits
    else:
        # The same calls, in the same order, as Pipeline.stream before it would generate.
        text = pipeline.check_question(row.message)
        signals = pipeline.read_signals(text, row.history)
        retrieve = getattr(pipeline, "retrieve", None)  # search, then the reranker if any
        hits = tuple(retrieve(text, row.history) if retrieve is not None
                     else pipeline.retriever.search(text, row.history))
        decision = pipeline.policy.decide(text, hits, row.history, pipeline.thresholds(),
                                          signals)
        route, sources, confidence = decision.route, decision.sources, decision.confidence
    if route not in ANSWERED:
        sources = ()
    cited = _ids(sources)
    return Outcome(row, route, judge(row, route, cited), cited, float(confidence), _ids(hits[:3]),
                   cites_faq=any(h.document.kind == "faq" for h in sources))


# --- the report -------------------------------------------------------------------------------


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _group(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Counts and shares for a group of rows. In-scope rows split into answered_correct +
    answered_wrong (in scope) + fallback_in_scope; none rows into oos_fallback + answered."""
    inside = [o for o in outcomes if o.row.in_scope]
    none = [o for o in outcomes if not o.row.in_scope]
    correct = sum(o.verdict == "correct" for o in inside)
    wrong_inside = sum(o.verdict == "wrong" for o in inside)
    missed = sum(o.verdict == "fallback" for o in inside)
    declined = sum(o.verdict == "fallback" for o in none)
    answered = sum(o.route in ANSWERED for o in outcomes)
    return {
        "rows": len(outcomes), "in_scope_rows": len(inside), "none_rows": len(none),
        "answered_correct": correct,
        "answered_wrong": wrong_inside + (len(none) - declined),
        "answered_wrong_in_scope": wrong_inside,
        "answered_none": len(none) - declined,
        "fallback_in_scope": missed,
        "oos_fallback_rows": declined,
        # Shares: of in-scope rows, of none rows, and of everything answered.
        "answered_correct_share": _share(correct, len(inside)),
        "answered_wrong_in_scope_share": _share(wrong_inside, len(inside)),
        "fallback_in_scope_share": _share(missed, len(inside)),
        "oos_fallback": _share(declined, len(none)),
        "precision": _share(correct, answered),
    }


def _by(outcomes: Sequence[Outcome], key: str, order: Sequence[str]) -> dict[str, Any]:
    groups: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        value = outcome.route.value if key == "route" else outcome.row.kind
        groups.setdefault(value, []).append(outcome)
    return {name: _group(groups[name]) for name in order if name in groups}


def _example(outcome: Outcome) -> dict[str, Any]:
    row = outcome.row
    return {"id": row.id, "kind": row.kind, "message": row.message,
            "route": outcome.route.value, "confidence": round(outcome.confidence, 4),
            "cited": list(outcome.cited), "expected": list(row.faq_ids),
            "top_hits": list(outcome.top_ids)}


def summarise(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Overall, by route and by kind, with the wrong answers and the in-scope misses listed."""
    generated = [o for o in outcomes if o.route == Route.GENERATED and o.row.in_scope]
    return {
        "overall": _group(outcomes),
        "by_route": _by(outcomes, "route", [r.value for r in Route]),
        "by_kind": _by(outcomes, "kind", KINDS),
        "routes": dict(Counter(o.route.value for o in outcomes)),
        # Generated-route in-scope rows whose first cited source is right: a stricter reading
        # of "correct" when the generator did not run and all top sources count as cited.
        "generated_top1_correct": sum(bool(o.cited) and o.cited[0] in o.row.faq_ids
                                      for o in generated),
        # Wrong in-scope answers that cited past dialogues only: the rule needs an FAQ, but a
        # dialogue may have held the right facts, so these are the ones worth reading first.
        "wrong_in_scope_citing_only_dialogues": sum(
            o.verdict == "wrong" and o.row.in_scope and not o.cites_faq for o in outcomes),
        "wrong_answers": [_example(o) for o in outcomes if o.verdict == "wrong"],
        "fallback_in_scope_rows": [_example(o) for o in outcomes
                                   if o.verdict == "fallback" and o.row.in_scope],
    }


def judging(generate: bool) -> str:
    """The rules behind the counts, in words, for the report (next to its numbers)."""
    rule = ("correct: answered (faq or generated route) citing a right FAQ; wrong: answered "
            "citing none, and every answer to a none row. Only an FAQ citation can be right: an "
            "answer citing past dialogues only counts as wrong even when the dialogue states the "
            "right fact (wrong_in_scope_citing_only_dialogues counts those).")
    if generate:
        return rule
    return rule + (f" Routing only: a generated-route row counts as citing its top "
                   f"{prompt.MAX_SOURCES} sources, an upper bound for that route "
                   "(generated_top1_correct is the stricter count).")


def evaluate(pipeline: Any, rows: Sequence[DemoRow], *, generate: bool,
             progress: bool = False) -> list[Outcome]:
    """One outcome per row, in order."""
    return [answer_row(pipeline, row, generate=generate)
            for row in tqdm(rows, desc="demo rows", disable=not progress)]


def _check_labels(pipeline: Any, rows: Sequence[DemoRow]) -> None:
    """Labels that name FAQs the index lacks would be silently unanswerable: refuse."""
    documents = getattr(pipeline.retriever, "documents", None)
    if documents is None:  # a stand-in retriever without a document list
        return
    known = {d.record_id for d in documents if d.kind == "faq"}
    missing = sorted({i for r in rows for i in r.faq_ids} - known)
    if missing:
        raise ConfigError(
            f"the active index has no FAQ {', '.join(missing[:5])}"
            f"{' …' if len(missing) > 5 else ''}: this set is labelled for the demo knowledge "
            "base; point CHATBOT_KNOWLEDGE_BASE at knowledge_base/ and run `chatbot reindex`")


def eval_demo(settings: Settings, *, path: Path = DEFAULT_DATA, split: str = "test",
              generator: str = "none", pipeline: Any = None,
              progress: bool = False) -> dict[str, Any]:
    """Answer every row of ``split`` with the pipeline over the active index and report.
    ``generator``: ``none`` (route only), ``finetuned``, ``base`` or a PATH (see
    ``chatbot.evaluation.answers.make_eval_generator``)."""
    from chatbot.answering.pipeline import build_pipeline

    rows = read_demo(path, split)
    generate = generator != "none"
    if pipeline is None:
        gen = None
        if generate:
            from chatbot.evaluation.answers import make_eval_generator

            gen = make_eval_generator(settings, generator)
        pipeline = build_pipeline(settings, generator=gen)
    thresholds = pipeline.thresholds()  # loads the index: a missing one fails here, first
    _check_labels(pipeline, rows)
    if generate:
        pipeline.generator.load()  # load time is not answer time
    started = time.perf_counter()
    outcomes = evaluate(pipeline, rows, generate=generate, progress=progress)
    seconds = time.perf_counter() - started
    return {
        "data": str(path), "split": split, "generator": pipeline.generator.name if generate
        else "none (routing only)",
        "judging": judging(generate),
        "index_version": pipeline.index_version,
        "thresholds": {"answer": thresholds.answer, "faq": thresholds.faq,
                       "scorer": thresholds.scorer, "source": thresholds.source},
        "reranker": dict(pipeline.reranker.stats) if getattr(pipeline, "reranker", None)
        else None,
        "seconds": round(seconds, 2), "rows_per_s": round(len(rows) / max(seconds, 1e-9), 1),
        **summarise(outcomes),
    }
