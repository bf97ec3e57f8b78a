"""Load benchmark: 50 concurrent conversations against a real uvicorn server, SQLite and
PostgreSQL, one or more worker processes. Writes bench/results/load.json and load.md.

    .venv/bin/python bench/bench_load.py [--quick] [--modes standin,cached,fresh]
        [--backends sqlite,postgresql] [--workers 1,2] [--threads 1,2]

Modes (rows):
- ``standin``: the deterministic stand-in pipeline of tests/standin.py: serving and logging alone.
- ``cached``: the real pipeline on the knowledge base's FAQ questions that route to an FAQ,
  repeated (186 distinct texts): with the query cache on, nearly every embedding is a cache hit.
- ``fresh``: the real pipeline on fresh questions (``fresh_questions``: paraphrases of the
  knowledge base's questions and dialogue turns, each distinct as the query cache sees it), each
  sent once, query cache on as in production: every request embeds its question, as real traffic
  does. Only questions the bot answers from an FAQ are sent (the route filter below), so the run
  measures the FAQ route; the routes actually observed are reported.
- ``cache-off``: the repeated FAQ questions with the query cache off (the older uncached row;
  its history turns are re-embedded too, unlike production).

The server runs in its own process (``uvicorn.run(..., workers=N)`` with the app factory, as
``chatbot serve --workers N`` does; UI not mounted, rate limit off), with ``--threads`` as both
the ONNX embedder's and torch's intra-op threads and OMP_NUM_THREADS=1 (FAISS and BLAS on one
query gain nothing from more). Before traffic it is warmed: /health answers, then the process
tree is idle (each worker has loaded its models and built its suggestion statistics), then a
warm-up round of requests not counted. This process is the loopback client (a minimal asyncio
HTTP/1.1 client by default, httpx with --client httpx), bounded both in requests and in seconds.
Each conversation asks several questions in a row, continuing its conversation id.

CPU per request: the server's whole process tree (every worker) from /proc, the PostgreSQL
backends serving it (by application name), and this client, each divided by the requests
answered; their sum against the 2 cores is the ceiling of the throughput.

After each run the script checks the database directly: it must hold exactly the conversations
the client started and, message by message, the customer messages sent and the bot replies
received (the reply ids returned must be exactly the bot messages stored). The check's outcome
is part of the results. Timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the stand-in pipeline lives with the tests
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402  (after the offline environment is set)
from common import RESULTS, load_average  # noqa: E402
from fresh_questions import faq_route_questions  # noqa: E402
from loadclient import (  # noqa: E402
    Run,
    check_database,
    find_faq_questions,
    free_port,
    load,
    wait_until_up,
)
from loadreport import MODE_NAMES, write_results  # noqa: E402
from serverstats import (  # noqa: E402
    cpu_since,
    drop_schema,
    pg_base,
    pids_cpu_map,
    postgres_backends,
    prepare_database,
    process_tree_cpu_s,
    wait_until_idle,
)


# --- server side (runs in a child process) -----------------------------------------------------
def make_app() -> Any:
    """uvicorn factory: settings from CHATBOT_* variables, pipeline chosen by BENCH_PIPELINE."""
    from chatbot.config import Settings
    from chatbot.web.app import create_app

    settings = Settings()
    pipeline = None
    if os.environ.get("BENCH_PIPELINE") == "standin":
        from standin import StandInPipeline

        pipeline = StandInPipeline()
    return create_app(settings, pipeline=pipeline, mount_ui=False)


def serve(port: int, workers: int) -> None:
    import uvicorn

    sys.path.insert(0, str(ROOT / "bench"))
    uvicorn.run("bench_load:make_app", factory=True, host="127.0.0.1", port=port,
                workers=workers, log_level="warning", access_log=False)


# --- client side -----------------------------------------------------------------------------


def knowledge_questions(pipeline: str) -> list[str]:
    if pipeline == "standin":
        from standin import FAQS

        return [q for _, _, question, _, alts in FAQS for q in (question, *alts)]
    from chatbot.config import Settings
    from chatbot.knowledge.ingest import load_knowledge_base

    docs = load_knowledge_base(Settings().knowledge_base)
    return [d.question for d in docs if d.kind == "faq"]


@dataclass(frozen=True)
class Config:
    """One row: what runs (``mode``, see the module docstring) on what."""

    mode: str
    backend: str
    workers: int
    threads: int  # intra-op threads of the embedder (ONNX) and torch, per worker

    @property
    def pipeline(self) -> str:
        return "standin" if self.mode == "standin" else "real"


def server_env(config: Config, url: str) -> dict[str, str]:
    env = {**os.environ, "CHATBOT_DATABASE_URL": url, "CHATBOT_RATE_LIMIT_PER_MINUTE": "0",
           "CHATBOT_TORCH_THREADS": str(config.threads),
           "CHATBOT_EMBEDDING_THREADS": str(config.threads), "CHATBOT_LOG_LEVEL": "WARNING",
           "BENCH_PIPELINE": config.pipeline, "OMP_NUM_THREADS": "1"}
    if config.mode == "cache-off":
        env["CHATBOT_QUERY_CACHE_SIZE"] = "0"  # every request embeds its question and turns
    return env


def run_one(config: Config, args: argparse.Namespace,
            fresh: list[str] | None = None) -> dict[str, Any]:
    """Start a server for ``config``, warm it, load it, check the database; one result row."""
    row: dict[str, Any] = {**asdict(config),
                           "started": datetime.now(UTC).isoformat(timespec="seconds"),
                           # settings given to the server from this environment (e.g. a stage
                           # turned off), beyond the ones the benchmark sets itself
                           "chatbot_env": {k: v for k, v in sorted(os.environ.items())
                                           if k.startswith("CHATBOT_") and "URL" not in k
                                           and "TOKEN" not in k and "KEY" not in k
                                           and "SECRET" not in k}}
    tmp = Path(tempfile.mkdtemp(prefix=f"load-{config.backend}-"))
    try:
        url, schema = prepare_database(config.backend, tmp)
    except Exception as error:
        return {**row, "skipped": f"database: {error}"}
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), "--workers", str(config.workers)],
        env=server_env(config, url), cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    run = Run()
    try:
        started = time.perf_counter()
        asyncio.run(wait_until_up(base, process, timeout=300))
        idle_s = wait_until_idle(process.pid)
        if config.mode == "fresh":
            assert fresh is not None
            warm, questions = fresh[: args.warmup], fresh[args.warmup :]
            asyncio.run(load(base, warm, concurrency=10, turns=args.turns,
                             max_requests=len(warm), max_seconds=120, run=run))
            budget = min(args.requests, len(questions))  # each fresh question once
        else:
            questions = asyncio.run(find_faq_questions(
                base, knowledge_questions(config.pipeline), run))
            budget = args.requests
        warmup_s = time.perf_counter() - started
        if not questions:
            raise RuntimeError("no question was routed to an FAQ answer")
        warm_ok, warm_errors = len(run.latencies_ms), Counter(run.errors)
        warm_routes = Counter(run.routes)
        backends = (postgres_backends(pg_base(), schema) if schema else [])
        load_before = load_average()
        server_cpu, client_cpu = process_tree_cpu_s(process.pid), time.process_time()
        pg_before = pids_cpu_map(backends) if schema else None
        seconds = asyncio.run(load(base, questions, concurrency=args.concurrency,
                                   turns=args.turns, max_requests=budget,
                                   max_seconds=args.max_seconds, run=run,
                                   raw_client=args.client == "raw"))
        server_cpu = _minus(process_tree_cpu_s(process.pid), server_cpu)
        client_cpu = time.process_time() - client_cpu
        # Backends opened during the run count from zero; one closed during it is lost.
        pg_cpu = (cpu_since(pg_before, pids_cpu_map(postgres_backends(pg_base(), schema)))
                  if schema else None)
        load_after = load_average()
        measured = run.latencies_ms[warm_ok:]
        errors = run.errors - warm_errors
        routes = run.routes - warm_routes
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
    check = check_database(url, run)
    if schema:
        drop_schema(schema)
    ok, error_count = len(measured), sum(errors.values())
    p50, p95, p99 = (np.percentile(measured, [50, 95, 99]).tolist() if measured
                     else (None, None, None))
    return {
        **row, "query_cache": config.mode != "cache-off",
        "concurrency": args.concurrency,
        "turns_per_conversation": args.turns, "requests": ok + error_count, "ok": ok,
        "errors": dict(errors), "error_count": error_count, "seconds": round(seconds, 2),
        "rps": round(ok / seconds, 1) if seconds else None,
        "p50_ms": _r(p50), "p95_ms": _r(p95), "p99_ms": _r(p99),
        "max_ms": _r(max(measured, default=None)), "routes": dict(routes),
        "distinct_questions": len(questions) if config.mode != "fresh" else ok + error_count,
        "questions_reused": config.mode != "fresh",
        "warmup_requests": warm_ok + sum(warm_errors.values()),
        "warmup_errors": dict(warm_errors), "error_samples": run.error_samples,
        "warmup_seconds": round(warmup_s, 1), "idle_wait_seconds": round(idle_s, 1),
        "server_cpu_ms_per_request": _per_request(server_cpu, ok),
        "postgres_cpu_ms_per_request": _per_request(pg_cpu, ok),
        "client_cpu_ms_per_request": _per_request(client_cpu, ok),
        "load_average_before": load_before, "load_average_after": load_after,
        "client": args.client, "db_check": check,
    }


def _per_request(seconds: float | None, ok: int) -> float | None:
    return _r(seconds * 1000 / ok) if seconds is not None and ok else None


def _minus(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def ensure_index() -> None:
    """The real pipeline serves the active index under var/; build it once when missing."""
    from chatbot.config import Settings
    from chatbot.retrieval.index import active_version, reindex

    settings = Settings()
    if active_version(settings) is None:
        print(reindex(settings).summary(), flush=True)


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--modes", default="standin,cached,fresh",
                        help="Comma-separated: standin, cached, fresh, cache-off.")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--workers", default="1,2", help="uvicorn worker processes, e.g. 1,2.")
    parser.add_argument("--threads", default="1",
                        help="ONNX/torch intra-op threads per worker, e.g. 1,2.")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--turns", type=int, default=4, help="Questions per conversation.")
    parser.add_argument("--requests", type=int, default=3000, help="Request cap per row.")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="Time cap per row.")
    parser.add_argument("--warmup", type=int, default=100,
                        help="Fresh mode: warm-up requests before the measured ones.")
    parser.add_argument("--quick", action="store_true", help="300 requests, 20 s per row.")
    parser.add_argument("--report-only", action="store_true",
                        help="Only rewrite load.md from load.json (no runs).")
    parser.add_argument("--append", action="store_true",
                        help="Add the rows to load.json's (same mode, database, workers and "
                        "threads: replaced) instead of starting a new report.")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw",
                        help="Load client: a minimal asyncio HTTP client (cheap) or httpx.")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, int(args.workers))
        return 0
    if args.report_only:
        meta = json.loads((RESULTS / "load.json").read_text())["meta"]
        for name in ("concurrency", "turns", "requests", "max_seconds"):
            setattr(args, name, meta.get(name, getattr(args, name)))
        # meta["client"] is the label written for the report; the choice is "client_kind"
        # (older reports: read from the label).
        args.client = meta.get("client_kind") or (
            "raw" if "RawClient" in meta.get("client", "RawClient") else "httpx")
        args.append = True
        write_results([], args, None)
        return 0
    if args.quick:
        args.requests, args.max_seconds = 300, 20.0
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODE_NAMES)
    if unknown:
        parser.error(f"unknown mode(s) {sorted(unknown)}; choose from {sorted(MODE_NAMES)}")
    configs = [Config(mode, backend, workers, threads)
               for mode in modes for workers in _ints(args.workers)
               for threads in (_ints(args.threads) if mode != "standin" else [1])
               for backend in args.backends.split(",")]
    real = [c for c in configs if c.pipeline == "real"]
    rows: list[dict[str, Any]] = []
    if real and importlib.util.find_spec("chatbot.answering.pipeline") is None:
        rows += [{**asdict(c), "skipped": "chatbot.answering.pipeline is not available"}
                 for c in real]
        configs = [c for c in configs if c.pipeline != "real"]
    fresh, fresh_filter = None, None
    if any(c.pipeline == "real" for c in configs):
        ensure_index()
    if any(c.mode == "fresh" for c in configs):
        fresh, fresh_filter = faq_route_questions(args.requests + args.warmup)
    for config in configs:
        print(f"== {config}", flush=True)
        row = run_one(config, args, fresh)
        print(json.dumps(row), flush=True)
        rows.append(row)
    write_results(rows, args, fresh_filter)
    print(f"wrote {RESULTS / 'load.md'}")
    failed = [r for r in rows if "db_check" in r and not r["db_check"]["passed"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
