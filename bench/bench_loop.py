"""Benchmark of the learning loop on the demo knowledge base: does approving what agents answered
teach the bot, without making it answer what it should not? Writes bench/results/loop.json and
loop.md.

    .venv/bin/python bench/bench_loop.py [--faqs 20] [--generator real|none] [--threads 2]

1. Hold out FAQs: the 20 FAQ ids with the most single-label customer phrasings in
   bench/data/demo_heldout.jsonl (kinds in_scope and follow_up, both splits; at least one a
   single-turn in_scope row, which is the one asked in the loop; ties by id). The index is built
   from a copy of knowledge_base/ without them.
2. Before: route (no generation) the loop phrasings, the other phrasings of the held-out FAQs and
   the near_domain and off_topic rows (no right FAQ: they should fall back).
3. The loop, through the real server wiring (``create_app``: ChatService, the agent desk, the
   learning loop): each loop phrasing is asked; an answer (it cannot be right: its FAQ is held
   out) gets a thumbs-down; the customer asks for a person; a scripted agent replies with the
   held-out FAQ's answer and resolves. The admin approves every pending suggestion unedited; the
   server's background re-index runs; the time from each approval to the index serving it is
   measured (polling the serving retriever's documents every 10 ms).
4. After: the same rows routed again. A reply is correct when it cites a right FAQ, or the
   approved entry whose answer is a right FAQ's answer (eval-demo's rule; a generated-route row
   counts as citing its top 3 sources, an upper bound for that route).
5. Two references for the other phrasings: the admin edits each approved entry's question into
   the held-out FAQ's own question (what an editor would write; the customer's words stay as an
   alternative), and the held-out FAQs as written in knowledge_base/ (question and alternatives)
   indexed again.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import os
import platform
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml
from common import ROOT, load_average, write_report  # first: offline environment

from chatbot.answering.pipeline import build_pipeline
from chatbot.config import Settings
from chatbot.conversations.engine import upgrade
from chatbot.evaluation.demo import DemoRow, Outcome, answer_row, read_demo, summarise
from chatbot.knowledge.ingest import load_knowledge_base
from chatbot.retrieval.index import reindex
from chatbot.types import Route
from chatbot.web.app import create_app

KB = ROOT / "knowledge_base"
ASK_FOR_PERSON = "can I talk to a person please"
AGENT = "bench-agent"


def pick(rows: list[DemoRow], count: int) -> dict[str, tuple[DemoRow, list[DemoRow]]]:
    """FAQ id -> (the loop phrasing, the other phrasings), see the module docstring."""
    phrasings: dict[str, list[DemoRow]] = defaultdict(list)
    for row in rows:
        if len(row.faq_ids) == 1 and row.kind in ("in_scope", "follow_up"):
            phrasings[row.faq_ids[0]].append(row)
    chosen: dict[str, tuple[DemoRow, list[DemoRow]]] = {}
    for faq_id in sorted(phrasings, key=lambda f: (-len(phrasings[f]), f)):
        found = sorted(phrasings[faq_id], key=lambda r: r.id)
        loop = next((r for r in found if r.kind == "in_scope" and not r.history), None)
        if loop is not None and len(found) >= 2 and len(chosen) < count:
            chosen[faq_id] = (loop, [r for r in found if r is not loop])
    return chosen


def copy_without(held_out: set[str], target: Path) -> None:
    """knowledge_base/ without the held-out FAQs (CSV rows and Markdown entries)."""
    shutil.copytree(KB, target)
    with (KB / "faq.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(
        [rows[0], *(r for r in rows[1:] if r and r[0] not in held_out)])
    (target / "faq.csv").write_text(out.getvalue(), encoding="utf-8")
    for path in (target / "faq").glob("*.md"):
        front = path.read_text(encoding="utf-8").split("---")[1]
        if str(yaml.safe_load(front).get("id")) in held_out:
            path.unlink()


def route_all(pipeline: Any, rows: list[DemoRow], expected: dict[str, set[str]]) -> list[Outcome]:
    """Route each row; its right answers are its FAQ ids plus ``expected`` (approved entries)."""
    return [answer_row(pipeline, dataclasses.replace(
        row, faq_ids=tuple(sorted({*row.faq_ids, *(e for f in row.faq_ids
                                                   for e in expected.get(f, ()))}))),
        generate=False) for row in rows]


def scores(outcomes: list[Outcome]) -> dict[str, Any]:
    overall = summarise(outcomes)["overall"]
    keep = ("rows", "answered_correct", "answered_correct_share", "answered_wrong",
            "fallback_in_scope", "oos_fallback_rows", "oos_fallback")
    return {k: overall[k] for k in keep}


def serving(pipeline: Any, suggestion: Any) -> bool:
    """Whether the serving index holds the approved entry as it is now (or its phrasings)."""
    document = next((d for d in pipeline.retriever.documents
                     if d.record_id == suggestion.record_id), None)
    if document is None:
        return False
    if suggestion.status == "merged_into_faq":
        return suggestion.question in document.phrasings
    return document.question == suggestion.question


def wait_served(pipeline: Any, clicks: list[tuple[float, Any]]) -> dict[int, float]:
    """Suggestion id -> when the serving retriever first held it (polled every 10 ms)."""
    served: dict[int, float] = {}
    deadline = time.perf_counter() + 600
    while len(served) < len(clicks) and time.perf_counter() < deadline:
        now = time.perf_counter()
        for _, s in clicks:
            if s.id not in served and serving(pipeline, s):
                served[s.id] = now
        time.sleep(0.01)
    return served


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faqs", type=int, default=20)
    parser.add_argument("--generator", choices=("real", "none"), default="real",
                        help="real: SmolLM2 answers the generated route in the loop's chats; "
                        "none: no language model (those replies fall back)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    load_before = load_average()

    rows = read_demo()
    chosen = pick(rows, args.faqs)
    held_out = set(chosen)
    loop_rows = [loop for loop, _ in chosen.values()]
    other_rows = sorted((r for _, others in chosen.values() for r in others), key=lambda r: r.id)
    oos_rows = [r for r in rows if r.kind in ("near_domain", "off_topic")]
    faqs = {d.record_id: d for d in load_knowledge_base(KB) if d.kind == "faq"}
    answers = {record: d.answer for record, d in faqs.items()}

    tmp = Path(tempfile.mkdtemp(prefix="bench-loop-"))
    copy_without(held_out, tmp / "kb")
    # var_dir is the repository's var/ for the converted models only (the exported ONNX
    # embedder, SmolLM2); index and database live in the temporary folder.
    options: dict[str, Any] = dict(
        var_dir=ROOT / "var", index_dir=tmp / "index", knowledge_base=tmp / "kb",
        database_url=f"sqlite:///{tmp / 'loop.db'}", torch_threads=args.threads,
        max_new_tokens=96, _env_file=None)
    if args.generator == "none":
        options.update(generator_backend="openai", generator_url="http://127.0.0.1:9/v1",
                       generator_retries=0, generator_timeout_s=1.0)
    settings = Settings(**options)
    upgrade(settings)
    started = time.perf_counter()
    first_index = reindex(settings, progress=False)
    first_index_s = time.perf_counter() - started
    pipeline = build_pipeline(settings)
    kb_faqs = {d.record_id for d in pipeline.retriever.documents if d.kind == "faq"}
    assert not held_out & kb_faqs, "held-out FAQs are still indexed"
    app = create_app(settings, pipeline=pipeline, mount_ui=False)
    service, learning = app.state.service, app.state.learning
    if args.generator == "real":
        pipeline.generator.load()

    before = {name: route_all(pipeline, group, {}) for name, group in (
        ("loop", loop_rows), ("other", other_rows), ("oos", oos_rows))}

    # The loop: customer, bot, person.
    agent, _ = service.agents.add(AGENT)
    loop_routes: dict[str, int] = defaultdict(int)
    chat_started = time.perf_counter()
    for faq_id, (loop, _) in chosen.items():
        first = service.chat(loop.message, channel="web")
        loop_routes[first.reply.route.value] += 1
        if first.reply.route in (Route.FAQ, Route.GENERATED):
            service.feedback(message_id=first.message_id, rating="down")
        handoff = service.chat(ASK_FOR_PERSON, conversation_id=first.conversation_id)
        loop_routes["then " + handoff.reply.route.value] += 1
        service.agents.reply(first.conversation_id, agent, answers[faq_id])
        service.agents.resolve(first.conversation_id, agent)
    learning.flush(300)
    chat_s = time.perf_counter() - chat_started

    _, pending = learning.list(status="pending", limit=500)
    approved, waits = [], []
    for suggestion in pending:
        clicked = time.perf_counter()
        approved.append(learning.approve(suggestion.id).suggestion)
        waits.append((clicked, approved[-1]))
    served_at = wait_served(pipeline, waits)
    latencies = [served_at[s.id] - clicked for clicked, s in waits if s.id in served_at]
    last_click = max((c for c, _ in waits), default=0.0)
    status = service.reindex_status()

    # Which held-out FAQ each approved entry answers for (by its answer), so a reply citing it
    # can be judged like one citing the FAQ.
    by_answer = {answer: faq_id for faq_id, answer in answers.items() if faq_id in held_out}
    expected: dict[str, set[str]] = defaultdict(set)
    for s in approved:
        if s.status == "approved" and s.answer in by_answer:
            expected[by_answer[s.answer]].add(s.record_id)
    after = {name: route_all(pipeline, group, expected) for name, group in (
        ("loop", loop_rows), ("other", other_rows), ("oos", oos_rows))}

    # Reference 1: the admin rewrites each approved question as the held-out FAQ's question.
    edits = []
    for s in approved:
        held = by_answer.get(s.answer)
        if s.status == "approved" and held:
            edits.append((time.perf_counter(), learning.update(
                s.id, question=faqs[held].question).suggestion))
    wait_served(pipeline, edits)
    edited = {name: route_all(pipeline, group, expected) for name, group in (
        ("other", other_rows), ("oos", oos_rows))}
    # Reference 2: the held-out FAQs as written, indexed again (no suggestions).
    full = settings.model_copy(update={"knowledge_base": KB})
    reindex(full, progress=False, embedder=pipeline.retriever.embedder)
    pipeline.reload()
    written = {name: route_all(pipeline, group, {}) for name, group in (
        ("other", other_rows), ("oos", oos_rows))}

    results = {
        "data": "knowledge_base/ without the held-out FAQs; bench/data/demo_heldout.jsonl "
                "(both splits)",
        "held_out_faqs": sorted(held_out),
        "rows": {"loop": len(loop_rows), "other": len(other_rows), "oos": len(oos_rows)},
        "other_by_kind": {k: sum(r.kind == k for r in other_rows)
                          for k in ("in_scope", "follow_up")},
        "generator_in_loop_chats": args.generator,
        "thresholds": pipeline.thresholds().to_json(),
        "first_index": {"documents": first_index.documents, "seconds": round(first_index_s, 2)},
        "loop_chats": {"routes": dict(loop_routes), "seconds": round(chat_s, 2)},
        "suggestions": {
            "pending": len(pending),
            "linked_to_existing_faq": sum(s.linked_faq_id is not None for s in pending),
            "merged_counts": [s.count for s in pending if s.count > 1],
            "approved_as_new": sum(s.status == "approved" for s in approved),
            "approved_as_phrasings": sum(s.status == "merged_into_faq" for s in approved),
            "links": {s.question: s.linked_faq_id for s in pending if s.linked_faq_id},
        },
        "approval_to_serving_s": {
            "first": round(latencies[0], 3) if latencies else None,
            "median": round(sorted(latencies)[len(latencies) // 2], 3) if latencies else None,
            "max": round(max(latencies), 3) if latencies else None,
            "last_approval_to_all_served": round(max(served_at.values()) - last_click, 3)
            if served_at else None,
            "served": len(served_at), "approved": len(waits),
        },
        "last_reindex": {"summary": status.summary, "report": status.report},
        "before": {name: scores(o) for name, o in before.items()},
        "after": {name: scores(o) for name, o in after.items()},
        "edited_questions": {name: scores(o) for name, o in edited.items()},
        "faqs_as_written": {name: scores(o) for name, o in written.items()},
        "after_other_by_kind": {k: scores([o for o in after["other"] if o.row.kind == k])
                                for k in ("in_scope", "follow_up")},
        "after_wrong_or_missed": [
            {"id": o.row.id, "kind": o.row.kind, "message": o.row.message,
             "expected": list(o.row.faq_ids), "route": o.route.value, "cited": list(o.cited)}
            for o in after["other"] if o.verdict != "correct"],
        "newly_answered_oos": [
            {"id": b.row.id, "message": b.row.message, "cited": list(a.cited)}
            for b, a in zip(before["oos"], after["oos"], strict=True)
            if b.verdict == "fallback" and a.verdict != "fallback"],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {args.threads} threads",
        "load_average": {"start": load_before, "end": load_average()},
        "query_cache": settings.query_cache_size,
        "index_reload_interval_s": settings.index_reload_interval_s,
    }
    write_report("loop", results, markdown(results))
    shutil.rmtree(tmp, ignore_errors=True)


def markdown(r: dict[str, Any]) -> str:
    b, a = r["before"], r["after"]
    e, w = r["edited_questions"], r["faqs_as_written"]
    wait = r["approval_to_serving_s"]
    s = r["suggestions"]

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f}%"

    lines = [
        "# Learning loop (bench/bench_loop.py)",
        "",
        f"Demo knowledge base with {len(r['held_out_faqs'])} FAQs held out of the index "
        f"({', '.join(r['held_out_faqs'])}); customer phrasings from "
        "bench/data/demo_heldout.jsonl (both splits). One phrasing per FAQ went through the "
        "real server wiring (ChatService, agent desk, learning loop): the bot's reply, a "
        "thumbs-down on any answer, a request for a person, a scripted agent replying with the "
        "held-out FAQ's answer, resolve. Every pending suggestion was then approved unedited "
        "and the server's background re-index ran.",
        "",
        "**Scoring is routing only** (no language model; eval-demo's rule): correct = answered "
        "(FAQ or generated route) citing a right FAQ or the approved entry holding that FAQ's "
        "answer; a generated-route row counts as citing its top 3 sources, an upper bound; an "
        "answer citing past dialogues only counts as wrong. "
        f"Thresholds: {r['thresholds']['source']} (answer {r['thresholds']['answer']}, "
        f"faq {r['thresholds']['faq']}). Generator in the loop's chats: "
        f"{r['generator_in_loop_chats']}. {r['machine']}.",
        "",
        "Conditions: one process, the server wiring in it (no HTTP), SQLite in a temporary "
        "folder. The routed rows share the pipeline's query-embedding cache "
        f"({r.get('query_cache', 4096)} entries; only routes are scored there, nothing is "
        "timed). The first index is a full build in an empty folder; each re-index after an "
        "approval is incremental (only new phrasings are embedded, unchanged documents keep "
        "their vectors). Route mix: the loop's chats are listed below; the scored rows are "
        "routed, never answered. 1-minute load average "
        + (f"{r['load_average']['start']} at the start, {r['load_average']['end']} at the end."
           if "load_average" in r else "not recorded for this run."),
        "",
        "| rows | n | answered correct before | after | fallback before | after |",
        "|---|---|---|---|---|---|",
        f"| loop phrasings (asked in the loop) | {b['loop']['rows']} | "
        f"{b['loop']['answered_correct']} | {a['loop']['answered_correct']} | "
        f"{b['loop']['fallback_in_scope']} | {a['loop']['fallback_in_scope']} |",
        f"| other phrasings of the held-out FAQs ({r['other_by_kind']['in_scope']} single-turn, "
        f"{r['other_by_kind']['follow_up']} follow-ups) | {b['other']['rows']} | "
        f"{b['other']['answered_correct']} ({pct(b['other']['answered_correct_share'])}) | "
        f"{a['other']['answered_correct']} ({pct(a['other']['answered_correct_share'])}) | "
        f"{b['other']['fallback_in_scope']} | {a['other']['fallback_in_scope']} |",
        f"| other phrasings, after the admin edits each question into the FAQ's own | "
        f"{e['other']['rows']} | — | {e['other']['answered_correct']} "
        f"({pct(e['other']['answered_correct_share'])}) | — | {e['other']['fallback_in_scope']} |",
        f"| other phrasings, the held-out FAQs as written in knowledge_base/ (reference) | "
        f"{w['other']['rows']} | — | {w['other']['answered_correct']} "
        f"({pct(w['other']['answered_correct_share'])}) | — | {w['other']['fallback_in_scope']} |",
        f"| near_domain + off_topic (should fall back) | {b['oos']['rows']} | "
        f"— | — | {b['oos']['oos_fallback_rows']} ({pct(b['oos']['oos_fallback'])}) | "
        f"{a['oos']['oos_fallback_rows']} ({pct(a['oos']['oos_fallback'])}) |",
        "",
        f"Off-topic fallback with the edited questions: {pct(e['oos']['oos_fallback'])}; with "
        f"the FAQs as written: {pct(w['oos']['oos_fallback'])}.",
        "",
        f"After, by kind: single-turn {r['after_other_by_kind']['in_scope']['answered_correct']}"
        f" of {r['after_other_by_kind']['in_scope']['rows']}, follow-ups "
        f"{r['after_other_by_kind']['follow_up']['answered_correct']} of "
        f"{r['after_other_by_kind']['follow_up']['rows']} answered correctly. Wrong answers "
        f"among the other phrasings: before {b['other']['answered_wrong']}, after "
        f"{a['other']['answered_wrong']}.",
        "",
        f"Suggestions: {s['pending']} from {len(r['held_out_faqs'])} conversations "
        f"({len(s['merged_counts'])} merged from several), {s['linked_to_existing_faq']} linked "
        f"to an existing FAQ; approved as {s['approved_as_new']} new entries and "
        f"{s['approved_as_phrasings']} sets of phrasings. Loop chats: "
        f"{', '.join(f'{k} {v}' for k, v in r['loop_chats']['routes'].items())}.",
        "",
        f"**Approval to serving** (the approve call returns, then the serving retriever holds "
        f"the entry): first {wait['first']} s, median {wait['median']} s, max {wait['max']} s "
        f"over {wait['approved']} approvals made one after another (later ones wait for the "
        f"running re-index and share the next one); last approval to all served "
        f"{wait['last_approval_to_all_served']} s. Last re-index: {r['last_reindex']['summary']}."
        f" Other replicas switch within CHATBOT_INDEX_RELOAD_INTERVAL_S "
        f"({r.get('index_reload_interval_s', 10.0):g} s) of the new "
        f"ACTIVE version. The first full index of the reduced knowledge base took "
        f"{r['first_index']['seconds']} s ({r['first_index']['documents']} documents).",
        "",
    ]
    if r["newly_answered_oos"]:
        lines += ["Off-topic rows answered after but not before:", ""]
        lines += [f"- {x['id']} {x['message']!r} -> {', '.join(x['cited'])}"
                  for x in r["newly_answered_oos"]]
        lines.append("")
    if r["after_wrong_or_missed"]:
        lines += ["Other phrasings still missed or answered wrongly after:", ""]
        lines += [f"- {x['id']} ({x['kind']}) {x['message']!r}: {x['route']}, cited "
                  f"{', '.join(x['cited']) or 'nothing'}, expected {', '.join(x['expected'])}"
                  for x in r["after_wrong_or_missed"]]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
