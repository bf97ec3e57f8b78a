"""Load benchmark: 50 concurrent conversations on FAQ-route questions against a real uvicorn
server, SQLite and PostgreSQL side by side. Writes bench/results/load.json and load.md.

    .venv/bin/python bench/bench_load.py [--quick] [--pipeline real|standin|both]

The server runs in its own process (``create_app`` with the real pipeline from
``chatbot.answering.pipeline.build_pipeline``, or the deterministic stand-in from tests/standin.py,
which
measures the serving and logging layers alone); this process is the loopback client (a minimal
asyncio HTTP/1.1 client by default, httpx with --client httpx), bounded both in requests and in
seconds, so it always stops by itself. Each conversation asks several questions in a row,
continuing its conversation id.

After each run the script checks the database directly: it must hold exactly the conversations
the client started and, message by message, the customer messages sent and the bot replies
received (the reply ids returned must be exactly the bot messages stored). The check's outcome
is part of the results. Timings are reported, never asserted; the rate limit is turned off for
the run (one client IP sends everything).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT / "tests"))  # the stand-in pipeline lives with the tests
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SERVER_THREADS = 1

import numpy as np  # noqa: E402  (after the offline environment is set)  # torch threads in the server: concurrency comes from requests, not ops


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
@dataclass
class Run:
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    routes: Counter[str] = field(default_factory=Counter)
    conversations: set[str] = field(default_factory=set)
    bot_message_ids: set[str] = field(default_factory=set)
    sent: int = 0  # requests whose customer message the server accepted (or may have)
    started: int = 0  # of those, first turns: each opens a conversation
    error_samples: list[str] = field(default_factory=list)
    unsure: int = 0  # requests lost in transport: delivered or not, the client cannot tell
    unsure_first: int = 0  # of those, first turns


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_until_up(base: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=5) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}")
            try:
                await client.get(f"{base}/api/v1/health")
                return
            except httpx.HTTPError:
                await asyncio.sleep(0.2)
    raise RuntimeError("server did not come up")


async def ask(client: Any, base: str, run: Run, message: str,
              conversation_id: str | None) -> str | None:
    body: dict[str, Any] = {"message": message, "channel": "api"}
    if conversation_id:
        body["conversation_id"] = conversation_id
    started = time.perf_counter()
    run.sent += 1
    run.started += conversation_id is None
    try:
        response = await client.post(f"{base}/api/v1/chat", json=body)
    except Exception as error:  # count, never crash the run
        run.errors[type(error).__name__] += 1
        # a transport error leaves open whether the server got the message: see check_database
        run.unsure += 1
        run.unsure_first += conversation_id is None
        if len(run.error_samples) < 5:
            run.error_samples.append(
                f"{type(error).__name__} after {time.perf_counter() - started:.2f} s: {error!r}")
        return conversation_id
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        run.errors[f"HTTP {response.status_code}"] += 1
        if response.status_code == 422:
            run.sent -= 1  # rejected before anything was stored
            run.started -= conversation_id is None
        return conversation_id
    data = response.json()
    run.latencies_ms.append(elapsed)
    run.routes[data["route"]] += 1
    run.conversations.add(data["conversation_id"])
    run.bot_message_ids.add(data["message_id"])
    return str(data["conversation_id"])


class RawResponse:
    def __init__(self, status_code: int, body: bytes) -> None:
        self.status_code = status_code
        self._body = body

    def json(self) -> Any:
        return json.loads(self._body)


class RawClient:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams, one connection per worker.

    httpx costs about 4 ms of CPU per request, more than the server spends answering an FAQ
    question; on a 2-core machine the load generator would then measure itself. This client
    only builds a request, reads the status line, headers and a Content-Length body (the
    JSON endpoints do not use chunked encoding), costing a fraction of that.
    """

    def __init__(self, base: str) -> None:
        host_port = base.split("://", 1)[1].rstrip("/")
        self.host, port = host_port.split(":")
        self.port = int(port)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, url: str, json: Any) -> RawResponse:  # noqa: A002 - httpx's name
        path = "/" + url.split("://", 1)[1].split("/", 1)[1]
        payload = _json_dumps(json).encode()
        request = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        ).encode() + payload
        if self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        self._writer.write(request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        fields = (line.partition(":") for line in lines[1:] if line)
        headers = {k.strip().lower(): v.strip() for k, _, v in fields}
        body = await self._reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self.aclose()
        return RawResponse(status, body)

    async def aclose(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _json_dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


async def find_faq_questions(base: str, candidates: list[str], run: Run) -> list[str]:
    """Ask each candidate once (logged like any request) and keep those routed to an FAQ."""
    import httpx

    kept = []
    async with httpx.AsyncClient(timeout=120) as client:
        for question in candidates:
            before = run.routes["faq"]
            await ask(client, base, run, question, None)
            if run.routes["faq"] > before:
                kept.append(question)
    return kept


async def load(base: str, questions: list[str], *, concurrency: int, turns: int,
               max_requests: int, max_seconds: float, run: Run,
               raw_client: bool = True) -> float:
    """``concurrency`` conversations at once, each asking ``turns`` questions in a row."""
    import httpx

    budget = {"left": max_requests}
    deadline = time.monotonic() + max_seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def conversation(worker: int, client: httpx.AsyncClient) -> None:
        n = worker
        while time.monotonic() < deadline and budget["left"] > 0:
            conversation_id = None
            for _ in range(turns):
                if time.monotonic() >= deadline or budget["left"] <= 0:
                    return
                budget["left"] -= 1
                n += concurrency
                conversation_id = await ask(client, base, run, questions[n % len(questions)],
                                            conversation_id)

    started = time.perf_counter()
    if raw_client:
        clients = [RawClient(base) for _ in range(concurrency)]
        try:
            await asyncio.gather(*(conversation(w, c) for w, c in enumerate(clients)))  # type: ignore[arg-type]
        finally:
            for raw in clients:
                await raw.aclose()
        return time.perf_counter() - started
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await asyncio.gather(*(conversation(w, client) for w in range(concurrency)))
    return time.perf_counter() - started


def check_database(url: str, run: Run) -> dict[str, Any]:
    """The database must hold exactly what was sent: conversations, customer and bot messages."""
    from sqlalchemy import func, select

    from chatbot.conversations.engine import make_engine
    from chatbot.conversations.models import Conversation, Message

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            conversations = set(connection.scalars(select(Conversation.id)))
            customer = connection.scalar(
                select(func.count(Message.id)).where(Message.role == "customer"))
            bot_ids = set(connection.scalars(select(Message.id).where(Message.role == "bot")))
    finally:
        engine.dispose()
    client_errors = sum(run.errors.values())
    late = len(bot_ids - run.bot_message_ids)
    result: dict[str, Any] = {
        "conversations_expected": run.started,
        "conversations_in_db": len(conversations),
        "customer_messages_expected": run.sent,
        "customer_messages_in_db": int(customer or 0),
        "bot_messages_expected": len(run.bot_message_ids),
        "bot_messages_in_db": len(bot_ids),
        # replies the server logged after the client had given up on them (timeouts)
        "late_bot_messages": late,
    }
    result["requests_lost_in_transport"] = run.unsure
    customer_in_db = result["customer_messages_in_db"]
    result["passed"] = (
        run.started - run.unsure_first <= len(conversations) <= run.started
        and run.conversations <= conversations
        and run.sent - run.unsure <= customer_in_db <= run.sent
        and run.bot_message_ids <= bot_ids and late <= client_errors
    )
    result["exact"] = (result["passed"] and late == 0 and customer_in_db == run.sent
                       and len(conversations) == run.started)
    return result


def knowledge_questions(pipeline: str) -> list[str]:
    if pipeline == "standin":
        from standin import FAQS

        return [q for _, _, question, _, alts in FAQS for q in (question, *alts)]
    from chatbot.config import Settings
    from chatbot.knowledge.ingest import load_knowledge_base

    docs = load_knowledge_base(Settings().knowledge_base)
    return [d.question for d in docs if d.kind == "faq"]


def prepare_database(backend: str, tmp: Path) -> tuple[str, str | None]:
    """(url, PostgreSQL schema to drop afterwards) for a blank, migrated database."""
    from chatbot.conversations.engine import upgrade

    if backend == "sqlite":
        url = f"sqlite:///{(tmp / 'load.db').as_posix()}"
        upgrade(url)
        return url, None
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    base = os.environ.get("CHATBOT_BENCH_DATABASE_URL") or os.environ.get(
        "CHATBOT_TEST_DATABASE_URL") or DEFAULT_PG
    schema = "bench_" + uuid.uuid4().hex[:10]
    admin = create_engine(base)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    scoped = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    url = scoped.render_as_string(hide_password=False)
    upgrade(url)
    return url, schema


def drop_schema(schema: str) -> None:
    from sqlalchemy import create_engine, text

    base = os.environ.get("CHATBOT_BENCH_DATABASE_URL") or os.environ.get(
        "CHATBOT_TEST_DATABASE_URL") or DEFAULT_PG
    admin = create_engine(base)
    with admin.begin() as connection:
        connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    admin.dispose()


def run_one(backend: str, pipeline: str, cache: bool,
            args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"load-{backend}-"))
    try:
        url, schema = prepare_database(backend, tmp)
    except Exception as error:
        return {"backend": backend, "pipeline": pipeline, "skipped": f"database: {error}"}
    port = free_port()
    env = {**os.environ, "CHATBOT_DATABASE_URL": url, "CHATBOT_RATE_LIMIT_PER_MINUTE": "0",
           "CHATBOT_TORCH_THREADS": str(SERVER_THREADS), "CHATBOT_LOG_LEVEL": "WARNING",
           "BENCH_PIPELINE": pipeline, "OMP_NUM_THREADS": str(SERVER_THREADS)}
    if not cache:
        env["CHATBOT_QUERY_CACHE_SIZE"] = "0"  # every request embeds its question
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), "--workers", str(args.workers)],
        env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    run = Run()
    try:
        asyncio.run(wait_until_up(base, process, timeout=300))
        started = time.perf_counter()
        candidates = knowledge_questions(pipeline)
        questions = asyncio.run(find_faq_questions(base, candidates, run))
        warmup_s = time.perf_counter() - started
        if not questions:
            raise RuntimeError("no knowledge-base question was routed to an FAQ answer")
        warm_ok, warm_errors = len(run.latencies_ms), Counter(run.errors)
        server_cpu, client_cpu = process_cpu_s(process.pid), time.process_time()
        seconds = asyncio.run(load(base, questions, concurrency=args.concurrency,
                                   turns=args.turns, max_requests=args.requests,
                                   max_seconds=args.max_seconds, run=run,
                                   raw_client=args.client == "raw"))
        measured = run.latencies_ms[warm_ok:]
        server_cpu = _minus(process_cpu_s(process.pid), server_cpu)
        client_cpu = time.process_time() - client_cpu
        errors = run.errors - warm_errors
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
        "backend": backend, "pipeline": pipeline, "query_cache": cache,
        "workers": args.workers, "concurrency": args.concurrency,
        "turns_per_conversation": args.turns, "requests": ok + error_count, "ok": ok,
        "errors": dict(errors), "error_count": error_count, "seconds": round(seconds, 2),
        "rps": round(ok / seconds, 1) if seconds else None,
        "p50_ms": _r(p50), "p95_ms": _r(p95), "p99_ms": _r(p99),
        "max_ms": _r(max(measured, default=None)), "routes": dict(run.routes),
        "distinct_questions": len(questions), "warmup_requests": len(candidates),
        "warmup_errors": dict(warm_errors), "error_samples": run.error_samples,
        "warmup_seconds": round(warmup_s, 1),
        "server_cpu_ms_per_request": _r(server_cpu * 1000 / ok) if server_cpu and ok else None,
        "client_cpu_ms_per_request": _r(client_cpu * 1000 / ok) if ok else None,
        "db_check": check,
    }


def process_cpu_s(pid: int) -> float | None:
    """User+system CPU seconds of a process (Linux /proc), to see what a request costs."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _minus(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def mode(row: dict[str, Any]) -> str:
    if row["pipeline"] == "standin":
        return "stand-in (serving + logging only)"
    return "real pipeline" if row.get("query_cache", True) else (
        "real pipeline, query cache off")


def analysis(row: dict[str, Any], concurrency: int) -> str:
    """What limits the run, from the measured CPU per request and Little's law."""
    parts = [f"- {mode(row)} / {row['backend']}: routes {row['routes']} over "
             f"{row['distinct_questions']} FAQ-route questions"]
    server, client = row.get("server_cpu_ms_per_request"), row.get("client_cpu_ms_per_request")
    if server:
        parts.append(f"server CPU {server} ms/request (one Python process runs on about one "
                     f"core: ≤ {1000 / server:.0f} req/s from it)")
    if client:
        parts.append(f"client CPU {client} ms/request on the same cores")
    if row["rps"]:
        parts.append(f"with {concurrency} closed-loop conversations the mean latency is "
                     f"{concurrency} / throughput = {1000 * concurrency / row['rps']:.0f} ms "
                     "(Little's law)")
    return "; ".join(parts) + "."


def write_results(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    load_avg = round(os.getloadavg()[0], 1) if hasattr(os, "getloadavg") else None
    meta = {**vars(args), "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "cores": os.cpu_count(),
            "load_average_at_end": load_avg, "machine": platform.machine(),
            "python": platform.python_version(),
            "server": f"uvicorn, {args.workers} process(es), torch threads {SERVER_THREADS}, "
                      "rate limit off, UI not mounted",
            "client": ("a minimal asyncio HTTP/1.1 keep-alive client (RawClient)"
                       if args.client == "raw" else "httpx.AsyncClient")
                      + " in a separate process on the same machine",
            "target": "≥200 req/s, p95 ≤200 ms, zero errors (2 cores)"}
    (RESULTS / "load.json").write_text(json.dumps({"meta": meta, "runs": rows}, indent=2))
    lines = ["# Load benchmark", "",
             f"{meta['date']}, {meta['cores']} cores (1-minute load average at the end: "
             f"{load_avg}). {args.concurrency} concurrent conversations of {args.turns} "
             f"FAQ-route questions each, at most {args.requests} requests or "
             f"{args.max_seconds:.0f} s per run. Server: {meta['server']}; client: "
             f"{meta['client']} (it competes for the same cores). Target: {meta['target']}.",
             "",
             "| pipeline | database | requests ok | errors | req/s | p50 ms | p95 ms | p99 ms "
             "| DB holds exactly what was sent |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if "skipped" in row:
            lines.append(f"| {row['pipeline']} | {row['backend']} | skipped: {row['skipped']} "
                         "| | | | | | |")
            continue
        check = row["db_check"]
        verdict = "yes" if check["exact"] else (
            f"yes, apart from the {row['error_count']} failed requests (late replies: "
            f"{check['late_bot_messages']}, customer messages {check['customer_messages_in_db']}"
            f"/{check['customer_messages_expected']})"
        ) if check["passed"] else (
            f"NO ({check['conversations_in_db']}/{check['conversations_expected']} conv, "
            f"{check['bot_messages_in_db']}/{check['bot_messages_expected']} bot msgs)")
        lines.append(f"| {mode(row)} | {row['backend']} | {row['ok']} | "
                     f"{row['error_count']} | {row['rps']} | {row['p50_ms']} | {row['p95_ms']} | "
                     f"{row['p99_ms']} | {verdict} |")
    lines += ["", "The database check compares the rows in the database with what the client "
              "sent and received, warm-up included: the number of conversations opened (and "
              "every id the client got back), the count of customer messages, and the set of "
              "bot message ids returned.", "", "What limits it:", ""]
    lines += [analysis(row, args.concurrency) for row in rows if "skipped" not in row]
    (RESULTS / "load.md").write_text("\n".join(lines) + "\n")


def ensure_index() -> None:
    """The real pipeline serves the active index under var/; build it once when missing."""
    from chatbot.config import Settings
    from chatbot.retrieval.index import active_version, reindex

    settings = Settings()
    if active_version(settings) is None:
        print(reindex(settings).summary(), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--pipeline", choices=["real", "standin", "both"], default="both")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes.")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--turns", type=int, default=4, help="Questions per conversation.")
    parser.add_argument("--requests", type=int, default=3000, help="Request cap per run.")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="Time cap per run.")
    parser.add_argument("--quick", action="store_true", help="300 requests, 20 s per run.")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw",
                        help="Load client: a minimal asyncio HTTP client (cheap) or httpx.")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.workers)
        return 0
    if args.quick:
        args.requests, args.max_seconds = 300, 20.0
    modes = [("standin", True)] if args.pipeline != "real" else []
    if args.pipeline != "standin":
        modes += [("real", True), ("real", False)]
    backends = args.backends.split(",")
    rows: list[dict[str, Any]] = []
    for pipeline, cache in modes:
        if pipeline == "real" and importlib.util.find_spec("chatbot.answering.pipeline") is None:
            rows += [{"backend": b, "pipeline": "real", "query_cache": cache,
                      "skipped": "chatbot.answering.pipeline is not available"} for b in backends]
            continue
        if pipeline == "real":
            ensure_index()
        for backend in backends:
            print(f"== {pipeline} pipeline (query cache {cache}) on {backend}", flush=True)
            row = run_one(backend, pipeline, cache, args)
            print(json.dumps(row), flush=True)
            rows.append(row)
    write_results(rows, args)
    print(f"wrote {RESULTS / 'load.md'}")
    failed = [r for r in rows if "db_check" in r and not r["db_check"]["passed"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
