"""The load benchmark's report: bench/results/load.json and load.md from its rows, each row
with its conditions (mode, database, workers, threads, load average, start time), what limits it
(CPU per request against the cores, the share of them the run got, Little's law), and rows
replaced by a rerun kept as earlier runs (``--append``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from datetime import UTC, datetime
from typing import Any

from common import RESULTS, load_average

MODE_NAMES = {
    "standin": "stand-in (serving + logging only)",
    "cached": "real, repeated FAQ questions, cache on",
    "fresh": "real, fresh questions (each once), cache on",
    "cache-off": "real, repeated FAQ questions, cache off",
}


def analysis(row: dict[str, Any]) -> str:
    """What limits the run: the measured CPU per request against the 2 cores (and the share of
    them the run actually got on the shared box), and Little's law for the latency of
    closed-loop conversations."""
    parts = [f"- {MODE_NAMES[row['mode']]} / {row['backend']} / {row['workers']} worker(s), "
             f"{row['threads']} thread(s): routes {row['routes']}"]
    costs = {k: row.get(f"{k}_cpu_ms_per_request") for k in ("server", "postgres", "client")}
    known = {k: v for k, v in costs.items() if v is not None and v >= 0}
    if known:
        total = sum(known.values())
        cores = os.cpu_count() or 1
        parts.append("CPU per request " + " + ".join(f"{k} {_na(v)}" for k, v in known.items())
                     + f" = {total:.1f} ms: the {cores} cores allow at most "
                     f"{1000 * cores / total:.0f} req/s")
        if row["rps"]:
            parts.append(f"the run used {row['rps'] * total / 1000:.2f} of the {cores} cores "
                         f"(load average {row.get('load_average_before')} -> "
                         f"{row.get('load_average_after')}: other work had the rest)")
        server = known.get("server")
        if server and row["workers"] == 1:
            parts.append(f"one process: {1000 / server:.0f} req/s if all of its CPU held the "
                         "GIL (the ONNX model call, about 4 ms of an uncached request in "
                         "stages.md, does not)")
    if row["rps"]:
        parts.append(f"{row['concurrency']} closed-loop conversations: mean latency = "
                     f"{row['concurrency']} / throughput = "
                     f"{1000 * row['concurrency'] / row['rps']:.0f} ms (Little's law)")
    return "; ".join(parts) + "."


def verdict(row: dict[str, Any]) -> str:
    check = row["db_check"]
    if check["exact"]:
        return "yes"
    if check["passed"]:
        return (f"yes, apart from the {row['error_count']} failed requests (late replies: "
                f"{check['late_bot_messages']}, customer messages "
                f"{check['customer_messages_in_db']}/{check['customer_messages_expected']})")
    return (f"NO ({check['conversations_in_db']}/{check['conversations_expected']} conv, "
            f"{check['bot_messages_in_db']}/{check['bot_messages_expected']} bot msgs)")


def merged(rows: list[dict[str, Any]], fresh_filter: dict[str, Any] | None
           ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str],
                      dict[str, Any] | None]:
    """``rows`` added to load.json's (``--append``): a row of the same mode, database, workers
    and threads replaces the older one, which is kept as an earlier run (a rerun never hides
    the first result). (rows, earlier runs, commands that produced them, fresh filter)."""
    try:
        old = json.loads((RESULTS / "load.json").read_text())
    except (OSError, ValueError):
        return rows, [], [], fresh_filter
    key = ("mode", "backend", "workers", "threads")
    new = {tuple(r.get(k) for k in key) for r in rows}
    kept = [r for r in old.get("runs", []) if tuple(r.get(k) for k in key) not in new]
    replaced = [r for r in old.get("runs", []) if tuple(r.get(k) for k in key) in new]
    meta = old.get("meta", {})
    return (kept + rows, meta.get("earlier_runs", []) + replaced, meta.get("commands", []),
            fresh_filter or meta.get("fresh_filter"))


def ran_between(rows: list[dict[str, Any]]) -> str:
    """When the rows ran (their start times), so a report re-written later (``--report-only``)
    still dates its measurements."""
    starts = sorted(r["started"] for r in rows if r.get("started"))
    return f"rows started {starts[0]} to {starts[-1]}; " if starts else ""


def write_results(rows: list[dict[str, Any]], args: argparse.Namespace,
                  fresh_filter: dict[str, Any] | None) -> None:
    """Write load.json and load.md (with ``args.append``: merged with the saved rows)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    command = " ".join(["bench/bench_load.py", *sys.argv[1:]])
    commands: list[str] = []
    earlier: list[dict[str, Any]] = []
    ran = bool(rows)
    if args.append:
        rows, earlier, commands, fresh_filter = merged(rows, fresh_filter)
    order = list(MODE_NAMES)
    rows = sorted(rows, key=lambda r: (order.index(r["mode"]), r["backend"] != "sqlite",
                                       r["workers"], r["threads"]))
    commands = [*commands, command] if ran else commands
    meta = {**vars(args), "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "commands": commands,
            "cores": os.cpu_count(), "load_average_at_end": load_average(),
            "machine": platform.machine(), "python": platform.python_version(),
            "server": "uvicorn with the app factory (as `chatbot serve --workers N`), rate limit "
                      "off, UI not mounted, OMP_NUM_THREADS=1, warmed before traffic",
            "client_kind": args.client,
            "client": ("a minimal asyncio HTTP/1.1 keep-alive client (RawClient)"
                       if args.client == "raw" else "httpx.AsyncClient")
                      + " in a separate process on the same machine",
            "fresh_filter": fresh_filter, "earlier_runs": earlier}
    (RESULTS / "load.json").write_text(json.dumps({"meta": meta, "runs": rows}, indent=2))
    lines = ["# Load benchmark", "",
             f"Report written {meta['date']}; {ran_between(rows)}{meta['cores']} cores; "
             + "; ".join(f"`{c}`" for c in commands) + ". "
             f"{args.concurrency} concurrent conversations of {args.turns} questions each, at "
             f"most {args.requests} requests or {args.max_seconds:.0f} s per row. Server: "
             f"{meta['server']}; threads = the ONNX embedder's and torch's intra-op threads per "
             f"worker. Client: {meta['client']} (it competes for the same cores). Each row gives "
             "the 1-minute load average before and after it and its start time: it counts the "
             "benchmark's own server, client and database processes (the previous row's too, as "
             "the average decays over minutes) and any other work on the machine, so a load near "
             "2-5 is the benchmark itself on an otherwise idle box; CPU per request is the "
             "robust number.", ""]
    envs = sorted({json.dumps(r.get("chatbot_env", {}), sort_keys=True) for r in rows})
    lines += ["Settings from the environment of the runs: " + "; ".join(
        ", ".join(f"{k}={v}" for k, v in json.loads(e).items()) or "none" for e in envs)
        + ".", ""]
    if fresh_filter:
        lines += [f"Fresh questions: {fresh_filter['candidates']} paraphrases made from the "
                  f"{fresh_filter['sources']} question texts of knowledge_base/ (FAQ questions, "
                  "alternatives and dialogue customer turns, with greetings, sign-offs, typos "
                  f"and casing; seed {fresh_filter['seed']}), routed one by one without "
                  f"history: {fresh_filter['candidate_routes']}; only the FAQ-route ones are "
                  f"sent, each once (thresholds {fresh_filter['thresholds']}).", ""]
    lines += ["| mode | database | workers | threads | requests ok | errors | req/s | p50 ms "
              "| p95 ms | p99 ms | server CPU ms/req | PostgreSQL CPU ms/req | client CPU ms/req "
              "| load avg before/after (start, UTC) | DB holds exactly what was sent |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if "skipped" in row:
            lines.append(f"| {MODE_NAMES[row['mode']]} | {row['backend']} | {row['workers']} | "
                         f"{row['threads']} | skipped: {row['skipped']} |" + " |" * 10)
            continue
        lines.append(
            f"| {MODE_NAMES[row['mode']]} | {row['backend']} | {row['workers']} | "
            f"{row['threads']} | {row['ok']} | {row['error_count']} | {row['rps']} | "
            f"{row['p50_ms']} | {row['p95_ms']} | {row['p99_ms']} | "
            f"{_na(row['server_cpu_ms_per_request'])} | "
            f"{_na(row['postgres_cpu_ms_per_request'])} | "
            f"{_na(row['client_cpu_ms_per_request'])} | {row['load_average_before']} / "
            f"{row['load_average_after']} ({row.get('started', '')[11:16]}) | {verdict(row)} |")
    if earlier:
        lines += ["", "Earlier runs of rows above (replaced by a rerun, kept here): " + "; ".join(
            f"{MODE_NAMES[r['mode']]} / {r['backend']} / {r['workers']} worker(s), "
            f"{r['threads']} thread(s) at {r.get('started', '?')[11:16]}: {r['rps']} req/s, "
            f"p95 {r['p95_ms']} ms, server CPU {_na(r.get('server_cpu_ms_per_request'))} "
            f"ms/req, load average {r.get('load_average_before')} / "
            f"{r.get('load_average_after')}" for r in earlier if "skipped" not in r) + "."]
    lines += ["", "The database check compares the rows in the database with what the client "
              "sent and received, warm-up included: the number of conversations opened (and "
              "every id the client got back), the count of customer messages, and the set of "
              "bot message ids returned. PostgreSQL CPU: the backends serving the run's "
              "connections (by application name), not the rest of the database server; a backend "
              "closed during a run (pool overflow) takes its share with it, so it is a lower "
              "bound.", "",
              "What limits it:", ""]
    lines += [analysis(row) for row in rows if "skipped" not in row]
    (RESULTS / "load.md").write_text("\n".join(lines) + "\n")


def _na(value: float | None) -> str:
    # Below zero only from the accounting before per-backend deltas (a closed backend's CPU
    # was subtracted): not a measurement.
    return "n/a" if value is None or value < 0 else str(value)
