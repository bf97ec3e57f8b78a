"""What the routing scorers buy on the held-out demo set: the first stage's cosine with the
shipped MiniLM as such, the same with the shipped embedder tuning (the default), and the
second-stage reranker; what each costs per query, and how often the reranker's gate lets it
run. Writes bench/results/NAME.json and NAME.md (``--name``, default ``rerank``).

    .venv/bin/python bench/bench_rerank.py [--split test] [--weights shipped] [--threads 2]
                                           [--latency-queries 60]
                                           [--scorers cosine,tuned,reranker] [--name rerank]

For each scorer on the demo knowledge base:

1. calibrate as `chatbot calibrate` does (held-out FAQ phrasings in folds + out_of_scope.txt;
   for the reranker only the share it never trained on), once, and pick the thresholds for
   several target precisions from those scores;
2. route every row of ``bench/data/demo_heldout.jsonl``'s split (``test`` by default; ``dev``
   to tune) through ``Pipeline.retrieve`` + ``Policy.decide`` with each target's thresholds and
   judge it as `chatbot eval-demo` does (routing only, no generator);
3. time ``Pipeline.retrieve`` per query (one query at a time, the embedder's cache off), with
   the reranker forced to score the top ``rerank_top_n`` (gate off) and with the gate on.

Each scorer gets a fresh embedder (an empty query cache). The index is an in-memory one of the
knowledge base; nothing is written outside bench/results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import load_average, write_report  # first: offline environment

from chatbot.answering.calibrate import score_questions, thresholds_for
from chatbot.answering.pipeline import build_pipeline
from chatbot.config import Settings
from chatbot.evaluation.demo import DEFAULT_DATA, Outcome, judge, read_demo, summarise
from chatbot.evaluation.metrics import percentile_ms
from chatbot.knowledge.ingest import load_knowledge_base
from chatbot.retrieval.embed import Embedder
from chatbot.retrieval.rerank import Reranker, resolve_weights_dir
from chatbot.retrieval.search import Retriever
from chatbot.types import Route

TARGETS = (0.75, 0.8, 0.82, 0.84, 0.85, 0.9, 0.95)
KEYS = ("answered_correct_share", "answered_wrong_in_scope_share", "fallback_in_scope_share",
        "oos_fallback", "precision")


class NoGenerator:
    """Routing only: the bench never generates (a generated route is judged on its sources)."""

    name = "none"
    loaded = True

    def load(self) -> None:
        return None

    def stream(self, messages: Any, **kwargs: Any) -> Any:
        raise AssertionError("the routing benchmark never generates")


def sweep_rows(pipeline: Any, rows: list[Any], retrieved: list[Any], scorer: str
               ) -> list[dict[str, Any]]:
    """The whole trade-off on these rows: one threshold (answer = faq) at every 5th percentile
    of the rows' top confidences. Thresholds read off the rows themselves: a description of the
    scorer, not an operating point anyone could have calibrated."""
    from chatbot.answering.policy import Thresholds, confidence

    tops = [max((confidence(h, scorer) for h in hits), default=0.0) for hits in retrieved]
    out = []
    for q in range(0, 100, 5):
        t = round(float(np.percentile(tops, q)), 4)
        thresholds = Thresholds(answer=t, faq=t, support=0.0, scorer=scorer)
        overall = summarise(route_rows(pipeline, rows, retrieved, thresholds))["overall"]
        out.append({"threshold": t, **{k: overall[k] for k in KEYS}})
    return out


def route_rows(pipeline: Any, rows: list[Any], retrieved: list[Any], thresholds: Any
               ) -> list[Outcome]:
    """Each row routed with ``thresholds`` on its already retrieved (and reranked) hits."""
    outcomes = []
    for row, hits in zip(rows, retrieved, strict=True):
        signals = pipeline.read_signals(row.message, row.history)
        d = pipeline.policy.decide(row.message, hits, row.history, thresholds, signals)
        sources = d.sources if d.route in (Route.FAQ, Route.GENERATED) else ()
        cited = tuple(h.document.record_id for h in sources)
        outcomes.append(Outcome(row, d.route, judge(row, d.route, cited), cited, d.confidence,
                                tuple(h.document.record_id for h in hits[:3]),
                                any(h.document.kind == "faq" for h in sources)))
    return outcomes


def run_scorer(name: str, settings: Settings, rows: list[Any], latency_rows: list[Any]
               ) -> dict[str, Any]:
    print(f"[rerank] {name}: calibrating", flush=True)
    embedder = Embedder(settings)  # a fresh query cache for this scorer
    reranker = None
    weights = resolve_weights_dir(settings.reranker)
    if weights is not None:
        reranker = Reranker(settings, weights)
    scored = score_questions(settings, embedder=embedder, progress=True, reranker=reranker)
    calibration_stats = dict(reranker.stats) if reranker else None
    if reranker:
        reranker.stats.update(dict.fromkeys(reranker.stats, 0))
    documents = load_knowledge_base(settings.knowledge_base)
    retriever = Retriever.from_documents(documents, settings, embedder)
    pipeline = build_pipeline(settings, retriever=retriever, generator=NoGenerator(),
                              reranker=reranker)
    print(f"[rerank] {name}: routing {len(rows)} rows", flush=True)
    with embedder.no_cache():
        retrieved = [pipeline.retrieve(r.message, r.history) for r in rows]
    gate = dict(reranker.stats) if reranker else None
    sweep = sweep_rows(pipeline, rows, retrieved, scored.scorer)
    curve = {}
    for target in TARGETS:
        thresholds, calibration = thresholds_for(scored, settings, target)
        summary = summarise(route_rows(pipeline, rows, retrieved, thresholds))
        curve[str(target)] = {
            "thresholds": {"answer": thresholds.answer, "faq": thresholds.faq,
                           "support": thresholds.support, "scorer": thresholds.scorer},
            "calibration_set": calibration,
            **{k: summary["overall"][k] for k in KEYS},
            "by_kind": {kind: {k: g[k] for k in ("rows", "answered_correct_share",
                                                 "answered_wrong_in_scope_share", "oos_fallback")}
                        for kind, g in summary["by_kind"].items()},
            "routes": summary["routes"],
            "wrong_answers": summary["wrong_answers"] if target == settings.target_precision
            else None,
        }
    return {"scorer": scored.scorer, "calibration_questions": {
        "in_scope": len(scored.in_hits), "out_of_scope": len(scored.out_texts)},
        "calibration_gate": calibration_stats, "gate": gate, "curve": curve, "sweep": sweep,
        "latency": latency(pipeline, embedder, latency_rows)}


def latency(pipeline: Any, embedder: Embedder, rows: list[Any]) -> dict[str, Any]:
    """ms per ``Pipeline.retrieve`` call (wall and process CPU), one query at a time, cache off;
    with a reranker also with the gate off (the model always scores the top ``rerank_top_n``),
    on each backend."""
    def timed(label: str) -> dict[str, Any]:
        pipeline.retrieve("warm-up question")
        walls, cpus = [], []
        with embedder.no_cache():
            for row in rows:
                wall, cpu = time.perf_counter(), time.process_time()
                pipeline.retrieve(row.message, row.history)
                walls.append((time.perf_counter() - wall) * 1000)
                cpus.append((time.process_time() - cpu) * 1000)
        return {"what": label, "queries": len(walls), "p50_ms": percentile_ms(walls, 50),
                "p90_ms": percentile_ms(walls, 90), "cpu_p50_ms": percentile_ms(cpus, 50),
                "load_average": load_average()}

    out = {"gate_on": timed("retrieve (+ rerank where the gate lets it run)")}
    reranker = pipeline.reranker
    if reranker is not None:
        s = reranker.settings
        for backend in ("onnx", "onnx-int8", "torch"):
            pipeline.reranker = Reranker(s.model_copy(update={
                "rerank_skip_below": -1.0, "rerank_skip_above": 1.01,
                "reranker_backend": backend}), reranker.weights_dir)
            out[f"always_{backend}"] = timed(
                f"retrieve + rerank of the top {s.rerank_top_n}, every query, {backend}")
        pipeline.reranker = reranker
    return out


def markdown(results: dict[str, Any]) -> str:
    c = results["conditions"]
    lines = ["# Routing scorers on the demo held-out set: " + ", ".join(results["scorers"]),
             "",
             f"{c['machine']}. Command: `{results['command']}`. Data: {c['data']} split "
             f"`{c['split']}` ({c['rows']} rows); knowledge base `knowledge_base/`; reranker "
             f"weights `{c['weights']}`. Routing only (no generator: a generated-route row "
             "counts as citing its top 3 sources, as `chatbot eval-demo` does). Each scorer "
             "calibrated on its own held-out questions, fresh embedder (empty query cache).", ""]
    default = str(c["target_precision"])
    lines += [f"## At the default target precision ({default})", "",
              "| scorer | answer / faq threshold | answered correct (in scope) | answered wrong "
              "(in scope) | in-scope fallback | off-topic + near-domain fallback | precision |",
              "|---|---|---|---|---|---|---|"]
    for name, r in results["scorers"].items():
        p = r["curve"][default]
        lines.append(f"| {name} | {p['thresholds']['answer']} / {p['thresholds']['faq']} | "
                     + " | ".join(str(p[k]) for k in KEYS) + " |")
    lines += ["", "Targets (issue 9): answered correct >= 0.90, answered wrong <= 0.02, "
              "off-topic/near-domain fallback >= 0.95.", "",
              "## Curve: answered correct against answered wrong as the target precision moves",
              "", "| scorer | target | answer / faq threshold | answered correct | answered "
              "wrong (in scope) | none rows declined | precision |",
              "|---|---|---|---|---|---|---|"]
    for name, r in results["scorers"].items():
        for target, p in r["curve"].items():
            lines.append(f"| {name} | {target} | {p['thresholds']['answer']} / "
                         f"{p['thresholds']['faq']} | {p['answered_correct_share']} | "
                         f"{p['answered_wrong_in_scope_share']} | {p['oos_fallback']} | "
                         f"{p['precision']} |")
    lines += ["", "## The whole trade-off (thresholds read off these rows; not an operating point)",
              "", "One threshold for both routes at every 5th percentile of the rows' top "
              "confidence: what each scorer could do at best on this split, at each rate of "
              "wrong answers.", "",
              "| scorer | best answered correct with answered wrong (in scope) <= 0.02 / <= 0.05 "
              "/ <= 0.10, none rows declined >= 0.95 |", "|---|---|"]
    for name, r in results["scorers"].items():
        cells = []
        for limit in (0.02, 0.05, 0.10):
            ok = [p for p in r["sweep"] if (p["answered_wrong_in_scope_share"] or 0) <= limit
                  and (p["oos_fallback"] or 0) >= 0.95]
            best = max(ok, key=lambda p: p["answered_correct_share"] or 0, default=None)
            cells.append("-" if best is None else f"{best['answered_correct_share']} (wrong "
                         f"{best['answered_wrong_in_scope_share']}, declined "
                         f"{best['oos_fallback']}, at {best['threshold']})")
        lines.append(f"| {name} | " + " / ".join(cells) + " |")
    lines += ["", "## By kind at the default target", "",
              "| scorer | kind | rows | answered correct | answered wrong (in scope) | "
              "declined (none rows) |", "|---|---|---|---|---|---|"]
    for name, r in results["scorers"].items():
        for kind, g in r["curve"][default]["by_kind"].items():
            lines.append(f"| {name} | {kind} | {g['rows']} | {g['answered_correct_share']} | "
                         f"{g['answered_wrong_in_scope_share']} | {g['oos_fallback']} |")
    lines += ["", "## Cost per query and the gate", ""]
    for name, r in results["scorers"].items():
        for row in r["latency"].values():
            lines.append(f"- {name}: {row['what']}: p50 {row['p50_ms']} ms, p90 "
                         f"{row['p90_ms']} ms wall, process CPU p50 {row['cpu_p50_ms']} ms, over "
                         f"{row['queries']} demo messages "
                         f"({c['threads']} torch threads, embedder cache off, 1-minute load "
                         f"average {row['load_average']} on {c['cores']} cores).")
        gate = r.get("gate")
        if gate:
            ran = gate["ran"] / max(gate["queries"], 1)
            lines.append(f"- {name}: the gate let the model run on {gate['ran']} of "
                         f"{gate['queries']} demo rows ({ran:.0%}); skipped as decisively low "
                         f"{gate['skipped_low']}, decisively high {gate['skipped_high']}.")
    lines += ["", "Target (issue 9): retrieve + rerank of the top 10, one query, 2 cores, "
              "p50 <= 40 ms.", ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--split", default="test", choices=("test", "dev"))
    parser.add_argument("--weights", default="shipped", help="shipped or a weights folder")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--latency-queries", type=int, default=60)
    parser.add_argument("--output", type=Path, default=None, help="write NAME.json/.md here "
                        "instead of bench/results (tuning runs on dev)")
    parser.add_argument("--scorers", default="cosine,tuned,reranker",
                        help="comma-separated: cosine (the shipped MiniLM as such), tuned (the "
                        "same with the shipped embedder tuning, the default), reranker")
    parser.add_argument("--name", default="rerank", help="report name: bench/results/NAME.*")
    args = parser.parse_args()
    root = Path(__file__).resolve().parent.parent
    # The reranker was trained on the untuned first stage's hits and scores: it runs on that.
    base = Settings(knowledge_base=root / "knowledge_base", var_dir=root / "var",
                    torch_threads=args.threads, reranker="off", embedder_tuning="off",
                    _env_file=None)  # type: ignore[call-arg]
    if "verifier" in Settings.model_fields:  # routing only: the support gate never runs
        base = base.model_copy(update={"verifier": "off"})
    rows = read_demo(DEFAULT_DATA, args.split)
    step = max(1, len(rows) // args.latency_queries)
    latency_rows = rows[::step][: args.latency_queries]
    results: dict[str, Any] = {
        "command": "bench/bench_rerank.py " + " ".join(sys.argv[1:]),
        "conditions": {"machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                       f"{args.threads} torch threads", "cores": os.cpu_count(),
                       "threads": args.threads, "data": "bench/data/demo_heldout.jsonl",
                       "split": args.split, "rows": len(rows), "weights": args.weights,
                       "target_precision": base.target_precision,
                       "load_average_start": load_average()},
        "scorers": {},
    }
    known = {"cosine": ("cosine, shipped MiniLM", base),
             "tuned": ("cosine, MiniLM + shipped embedder tuning (the default)",
                       base.model_copy(update={"embedder_tuning": "shipped"})),
             "reranker": ("reranker", base.model_copy(update={"reranker": args.weights}))}
    chosen = [name.strip() for name in args.scorers.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in known]
    if unknown or not chosen:
        parser.error(f"--scorers: unknown {unknown}; choose from {sorted(known)}")
    scorers = [known[name] for name in chosen]
    for name, settings in scorers:
        results["scorers"][name] = run_scorer(name, settings, rows, latency_rows)
    results["conditions"]["load_average_end"] = load_average()
    if args.output is None:
        write_report(args.name, results, markdown(results))
    else:
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / f"{args.name}.json").write_text(json.dumps(results, indent=2) + "\n")
        (args.output / f"{args.name}.md").write_text(markdown(results))
        print(markdown(results))


if __name__ == "__main__":
    main()
