"""Server CPU per uncached request, stage by stage: the real ChatService (SQLite and PostgreSQL)
driven in-process on fresh FAQ-route questions, and the latency of one query (embed + search).
Writes bench/results/stages.json and stages.md.

    .venv/bin/python bench/bench_stages.py [--quick] [--backends sqlite,postgresql]

Each stage is timed with ``time.thread_time`` (the CPU of the thread that ran it): subclasses of
the embedder, retriever, policy and signal reader go in through the factories
(``build_pipeline(settings, retriever=..., policy=..., signals=...)``), and the built pipeline's
``answer`` and ``suggestions``, its reranker's ``rerank`` and the service's redactor are wrapped
on the instances; the serving code itself is not instrumented. Stages: embed (the query
embedding, including the cache look-up and, under micro-batching, the model call in the batching
worker's thread), search (FAISS + BM25 + fusion: the retriever minus embed), rerank (when the
pipeline has a reranker), signals (sentiment and frustration), policy (routing), suggestions
(the chips under the answer), pipeline other (the rest of ``Pipeline.answer``), redaction,
database/logging (the service minus the pipeline, the signals and the redaction: history read,
two write transactions, the Core statements). ``unattributed`` is the process CPU
(``time.process_time``) not inside any timed stage: other threads (ONNX Runtime's pool with 2
threads, the event bus) and the harness's own loop. HTTP and the web framework are not in this
process: ``http_estimate`` estimates them from ``bench_load.py``'s rows in load.json.

Two ways of driving it, each on its own questions (never one the process has embedded before):
sequential (one conversation at a time, micro-batching off, so every stage runs in the caller's
thread) and concurrent (50 conversations in threads, as many as the load benchmark's, with
micro-batching on as a server runs it: concurrent queries share model calls). Questions:
``fresh_questions.faq_route_questions`` (fresh paraphrases of the knowledge base's questions,
routed FAQ on their own), asked in conversations of 4 turns, query cache on as in production.
FAISS runs on one thread (OMP_NUM_THREADS=1 in the load benchmark's servers); the one-query
table also shows it on every core. Timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from common import CLINC150, load_average, write_report  # noqa: E402
from stagetimers import Clock, build, make_service  # noqa: E402

from chatbot.answering.pipeline import Pipeline  # noqa: E402
from chatbot.config import Settings  # noqa: E402
from chatbot.retrieval.search import Retriever  # noqa: E402

STAGES = ("embed", "search", "rerank", "signals", "policy", "suggestions", "pipeline other",
          "redaction", "database/logging")
CONCURRENT_CALLERS = 50  # as the load benchmark's conversations: similar embedding batches
TURNS = 4


def converse(service: Any, clock: Clock, questions: Sequence[str]) -> Counter[str]:
    """Ask ``questions`` in conversations of ``TURNS`` turns; the routes observed."""
    routes: Counter[str] = Counter()
    conversation = None
    for n, question in enumerate(questions):
        if n % TURNS == 0:
            conversation = None
        with clock.stage("service"):
            result = service.chat(question, conversation_id=conversation)
        conversation = result.conversation_id
        routes[result.reply.route.value] += 1
    return routes


def drive(service: Any, clock: Clock, questions: Sequence[str], callers: int) -> dict[str, Any]:
    """Run ``questions`` through ``service`` from ``callers`` threads; CPU per stage."""
    clock.totals.clear()
    clock.counts.clear()
    per = [questions[i::callers] for i in range(callers)]
    per = [p[: len(p) - len(p) % TURNS] for p in per]  # whole conversations
    routes: Counter[str] = Counter()
    lock = threading.Lock()

    def work(part: Sequence[str]) -> None:
        found = converse(service, clock, part)
        with lock:
            routes.update(found)

    threads = [threading.Thread(target=work, args=(p,)) for p in per]
    load_before = load_average()
    cpu, wall = time.process_time(), time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    requests = sum(len(p) for p in per)
    t = clock.totals
    stages = {
        "embed": t["embed caller"] + t["embed worker"],
        "search": t["retrieve"] - t["embed caller"],
        "rerank": t["rerank"],
        "signals": t["signals"],
        "policy": t["policy"],
        "suggestions": t["suggestions"],
        "pipeline other": (t["pipeline"] - t["retrieve"] - t["rerank"] - t["policy"]
                           - t["suggestions"]),
        "redaction": t["redaction"],
        "database/logging": t["service"] - t["pipeline"] - t["signals"] - t["redaction"],
    }
    attributed = t["service"] + t["embed worker"]
    return {"requests": requests, "callers": callers, "routes": dict(routes),
            "wall_s": round(wall, 2), "requests_per_s": round(requests / wall, 1),
            "process_cpu_ms": _ms(cpu, requests),
            "stages_ms": {k: _ms(v, requests) for k, v in stages.items()},
            "attributed_ms": _ms(attributed, requests),
            "unattributed_ms": _ms(max(0.0, cpu - attributed), requests),
            # 1.0: each request embeds its question only; its history turns come from the cache
            "texts_embedded_per_request": round(clock.counts["texts embedded"] / requests, 3),
            "load_average_before": load_before, "load_average_after": load_average()}


def _ms(seconds: float, n: int) -> float:
    return round(seconds * 1000 / n, 2) if n else 0.0


# --- one query at a time: embed + search -------------------------------------------------------
def one_query(retriever: Retriever, queries: Sequence[str]) -> dict[str, Any]:
    """Wall and CPU time of ``search`` (embed + FAISS + BM25 + fusion) per query, one at a
    time, query cache bypassed; after one warm-up search."""
    retriever.search("warm-up question")
    wall: list[float] = []
    cpu: list[float] = []
    with retriever.embedder.no_cache():
        for query in queries:
            w, c = time.perf_counter(), time.process_time()
            retriever.search(query)
            wall.append((time.perf_counter() - w) * 1000)
            cpu.append((time.process_time() - c) * 1000)
    wall.sort()
    return {"queries": len(queries), "p50_ms": round(statistics.median(wall), 2),
            "p95_ms": round(wall[int(0.95 * (len(wall) - 1))], 2),
            "cpu_p50_ms": round(statistics.median(cpu), 2)}


def one_query_rows(questions: Sequence[str], clinc_queries: int) -> list[dict[str, Any]]:
    """The demo knowledge base's index (fresh questions) and, when the dataset is there,
    10,000 CLINC150 training texts asked its test questions (the old retrieval.md condition),
    at 1 and 2 embedder threads with FAISS on 1 thread, and once with FAISS on every core (its
    default when OMP_NUM_THREADS is unset)."""
    import faiss

    rows: list[dict[str, Any]] = []
    clinc: Retriever | None = None
    clinc_questions: list[str] = []

    def measure(name: str, retriever: Retriever, queries: Sequence[str], threads: int,
                faiss_threads: int) -> None:
        faiss.omp_set_num_threads(faiss_threads)
        before = load_average()
        result = one_query(retriever, queries)
        rows.append({"index": name, "threads": threads, "faiss_threads": faiss_threads,
                     **result, "load_average": f"{before} / {load_average()}"})
        print(rows[-1], flush=True)

    for n in (1, 2):
        settings = Settings(embedding_threads=n, torch_threads=n, embedding_batch_window_ms=0.0)
        retriever = Retriever(settings)
        name = (f"demo KB ({len(retriever.documents)} documents, "
                f"{len(retriever.phrasing_vectors())} phrasings), fresh questions")
        measure(name, retriever, questions, n, 1)
        if CLINC150.is_file():
            if clinc is None:
                from common import clinc150

                from chatbot.evaluation.datasets import LabelledText, documents_from_rows

                data = clinc150()
                documents = documents_from_rows([LabelledText(t, lab)
                                                 for t, lab in data["train"][:10_000]])
                clinc = Retriever.from_documents(documents, settings, retriever.embedder)
                clinc_questions = [t for t, _ in data["test"][:clinc_queries]]
            clinc.settings, clinc.embedder = settings, retriever.embedder  # same index
            name = f"CLINC150 train ({len(clinc.documents)} documents), its test questions"
            measure(name, clinc, clinc_questions, n, 1)
            if n == 1:
                measure(name, clinc, clinc_questions, n, os.cpu_count() or 1)
                faiss.omp_set_num_threads(1)
        retriever.embedder.close()
    return rows


# --- the report --------------------------------------------------------------------------------
def http_estimate(backend: str, result: dict[str, Any]) -> str:
    """What HTTP and the web framework add per request, two ways, from bench_load's rows on
    the same database (1 worker, 1 thread) in load.json: its fresh-question server CPU minus
    this in-process total (50 concurrent either way, so similar embedding batches), and its
    stand-in server CPU (serving and logging around a pipeline that costs next to nothing)
    minus this run's database/logging, signals and redaction."""
    try:
        runs = json.loads((BENCH / "results" / "load.json").read_text())["runs"]
    except (OSError, ValueError, KeyError):
        return "n/a (no load.json)"
    found = {row.get("mode"): row for row in runs
             if (row.get("backend"), row.get("workers"), row.get("threads")) == (backend, 1, 1)
             and row.get("server_cpu_ms_per_request")}
    stages = result["stages_ms"]
    parts = []
    if "fresh" in found:
        http = found["fresh"]["server_cpu_ms_per_request"]
        parts.append(f"{http - result['attributed_ms']:.1f} (fresh over HTTP {http} minus "
                     f"{result['attributed_ms']})")
    if "standin" in found:
        http = found["standin"]["server_cpu_ms_per_request"]
        around = stages["database/logging"] + stages["signals"] + stages["redaction"]
        parts.append(f"{http - around:.1f} (stand-in over HTTP {http} minus {around:.2f})")
    return "; ".join(parts) or "n/a (load.json has no 1-worker row on " + backend + ")"


def markdown(results: dict[str, Any]) -> str:
    runs = results["runs"]
    lines = ["# Server CPU per uncached request, by stage", "",
             f"{results['date']}, {results['machine']}, `{results['command']}`. "
             f"{results['conditions']}", "",
             f"Reranker: {results['reranker']}.", "",
             "CPU milliseconds per request (thread CPU of each stage, summed over threads, "
             "divided by the requests):", ""]
    heads = [f"{r['backend']}, {r['way']}" for r in runs]
    lines += ["| stage | " + " | ".join(heads) + " |", "|---|" + "---|" * len(runs)]
    for stage in STAGES:
        lines.append(f"| {stage} | " + " | ".join(str(r["stages_ms"][stage]) for r in runs)
                     + " |")
    for key, label in (("attributed_ms", "**in-process total (stages above)**"),
                       ("unattributed_ms", "unattributed (other threads, harness loop)"),
                       ("process_cpu_ms", "process CPU (`process_time`)")):
        lines.append(f"| {label} | " + " | ".join(str(r[key]) for r in runs) + " |")
    lines.append("| HTTP + framework (estimate, from load.json) | " + " | ".join(
        http_estimate(r["backend"], r) if r["callers"] > 1 else "(concurrent column)"
        for r in runs) + " |")
    lines += ["| texts embedded per request (history turns from the cache: 1.0) | " + " | ".join(
        str(r.get("texts_embedded_per_request", "n/a")) for r in runs) + " |",
        "| requests (routes) | " + " | ".join(
        f"{r['requests']} ({r['routes']})" for r in runs) + " |",
        "| wall s (req/s in-process) | " + " | ".join(
            f"{r['wall_s']} ({r['requests_per_s']})" for r in runs) + " |",
        "| load average before / after | " + " | ".join(
            f"{r['load_average_before']} / {r['load_average_after']}" for r in runs) + " |", ""]
    lines += ["Suggestion statistics built before the runs (what every worker does in the "
              f"background at start-up): {results['suggestions_build_s']} s CPU.", "",
              "## One query at a time: embed + search (FAISS + BM25 + fusion)", "",
              "Query cache bypassed, micro-batching off, one warm-up search first; wall time "
              "and process CPU per query.", "",
              "| index | embedder threads | FAISS threads | queries | p50 ms | p95 ms | CPU p50 ms "
              "| load average before / after |", "|---|---|---|---|---|---|---|---|"]
    for row in results["one_query"]:
        lines.append(f"| {row['index']} | {row['threads']} | {row['faiss_threads']} | "
                     f"{row['queries']} | "
                     f"{row['p50_ms']} | {row['p95_ms']} | {row['cpu_p50_ms']} | "
                     f"{row['load_average']} |")
    return "\n".join(lines) + "\n"


def reranker_note(pipeline: Pipeline, settings: Settings) -> str:
    """Which reranker the timed pipeline ran, as the report states it."""
    reranker = getattr(pipeline, "reranker", None)
    if reranker is not None:
        stats = getattr(reranker, "stats", None)
        return (f"CHATBOT_RERANKER={getattr(settings, 'reranker', '?')} "
                f"({getattr(reranker, 'scorer_id', type(reranker).__name__)}); its gate's "
                f"counts over the whole run: {stats}")
    if importlib.util.find_spec("chatbot.retrieval.rerank") is not None:
        return (f"CHATBOT_RERANKER={getattr(settings, 'reranker', 'off')}: no reranker in the "
                "pipeline, rerank 0")
    return "no reranker yet (0)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--sequential", type=int, default=400,
                        help="Requests asked one at a time, per backend.")
    parser.add_argument("--concurrent", type=int, default=1000,
                        help=f"Requests asked by {CONCURRENT_CALLERS} threads, per backend.")
    parser.add_argument("--one-query", type=int, default=300,
                        help="Fresh questions timed one at a time (and CLINC150 queries).")
    parser.add_argument("--quick", action="store_true", help="A fifth of each.")
    parser.add_argument("--report-only", action="store_true",
                        help="Only rewrite stages.md from stages.json (after a new load.json).")
    args = parser.parse_args()
    if args.report_only:
        results = json.loads((BENCH / "results" / "stages.json").read_text())
        write_report("stages", results, markdown(results))
        return 0
    if args.quick:
        args.sequential, args.concurrent, args.one_query = 80, 200, 60
    import faiss
    from bench_load import ensure_index
    from fresh_questions import faq_route_questions
    from serverstats import drop_schema, prepare_database

    faiss.omp_set_num_threads(1)  # as the load benchmark's servers (OMP_NUM_THREADS=1)
    ensure_index()
    backends = [b for b in args.backends.split(",") if b]
    per_backend = args.sequential + args.concurrent
    warm = TURNS * 2  # per run: warms the SQL paths before the timed requests
    needed = (per_backend + 2 * warm) * len(backends) + args.one_query
    questions, question_filter = faq_route_questions(needed)
    if len(questions) < needed:
        print(f"only {len(questions)} fresh FAQ-route questions for {needed}", flush=True)
    take = iter(range(len(questions)))

    def next_questions(n: int) -> list[str]:
        return [questions[next(take)] for _ in range(min(n, len(questions)))]

    threads = 1
    ways = (("sequential", 1, args.sequential, 0.0),
            ("concurrent", CONCURRENT_CALLERS, args.concurrent, 2.0))
    clock = Clock()
    pipelines: dict[str, Pipeline] = {}
    suggestions_s = []
    for way, _, _, window in ways:  # one per way (micro-batching on or off), for both backends
        settings = Settings(embedding_threads=threads, torch_threads=threads,
                            embedding_batch_window_ms=window)
        pipeline = pipelines[way] = build(settings, clock)
        pipeline.retriever.search("warm-up question")
        pipeline.read_signals("warm-up question")
        started = time.process_time()
        pipeline.warm_up_suggestions()
        suggestions_s.append(round(time.process_time() - started, 1))
        runs = []
    for backend in backends:
        tmp = Path(tempfile.mkdtemp(prefix=f"stages-{backend}-"))
        try:
            url, schema = prepare_database(backend, tmp)
        except Exception as error:
            print(f"{backend} skipped: {error}", flush=True)
            continue
        try:
            for way, callers, n, _ in ways:
                pipeline = pipelines[way]
                settings = pipeline.settings.model_copy(update={"database_url": url})
                service = make_service(settings, pipeline, clock)
                converse(service, clock, next_questions(warm))  # warm the SQL paths
                result = drive(service, clock, next_questions(n), callers)
                result.update(backend=backend, way=f"{way} ({callers} caller"
                              f"{'s' if callers > 1 else ''}, batching "
                              f"{'on' if callers > 1 else 'off'})")
                print(result, flush=True)
                runs.append(result)
                service.engine.dispose()
        finally:
            if schema:
                drop_schema(schema)
    reranker = reranker_note(pipelines["sequential"], pipelines["sequential"].settings)
    for pipeline in pipelines.values():
        pipeline.close()
    one = one_query_rows(next_questions(args.one_query), args.one_query)
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.uname().machine}, {os.cpu_count()} cores",
        "command": " ".join(["bench/bench_stages.py", *sys.argv[1:]]),
        "conditions": (
            f"Real ChatService and pipeline (ONNX embedder, {threads} intra-op thread; signals "
            "and suggestions on; FAQ route, so no generation), fresh FAQ-route questions each "
            f"asked once in conversations of {TURNS} turns, query cache on; filter: "
            f"{question_filter['candidate_routes']} of {question_filter['candidates']} "
            "candidates on their own. SQLite in a temp file, PostgreSQL in a fresh schema on "
            "127.0.0.1 (its server's own CPU is not in these numbers: see load.md)."),
        "reranker": reranker, "runs": runs,
        "suggestions_build_s": " and ".join(map(str, suggestions_s)),
        "one_query": one, "fresh_filter": question_filter,
    }
    write_report("stages", results, markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
