"""The support gate on the held-out perturbation set: the lexical pass alone, the verifier alone
and both (the gate as served). Writes bench/results/verifier.json and verifier.md.

    .venv/bin/python bench/bench_verifier.py [--threads 1] [--weights shipped] [--latency 200]

Data: bench/data/verifier_heldout.jsonl, generated deterministically from the demo knowledge
base by ``chatbot.training.verifier_data.heldout_pairs`` (a test checks the file matches): the
claim sentences of the held-out FAQs (30% of FAQs by a hash of their id, none of them, nor the
dialogues closest to them, used in training), each faithful (itself, rewrites, one clause) or
perturbed (negation, number, price, duration, place, entity, condition dropped, a neighbouring
FAQ's claim), judged against that FAQ's answer. Each sentence is judged exactly as the gate
judges it (``grounding.check_sentence``), with the support threshold shipped in
``policy.DEFAULT_THRESHOLDS`` and the verifier's threshold from the settings.

Targets (issue 9): perturbed rejected >= 0.95 and faithful accepted >= 0.95.
Also: the issue's signature example, and the verifier's latency per sentence against one and
against three sources (the prompt's maximum), one sentence at a time as the gate runs it.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from typing import Any

from common import ROOT, load_average, write_report  # first: offline env, checkout on sys.path

from chatbot.answering.grounding import check_sentence, evidence, source_vocabulary
from chatbot.answering.policy import DEFAULT_THRESHOLDS
from chatbot.answering.verify import Verifier, make_verifier
from chatbot.config import Settings
from chatbot.evaluation.metrics import percentile_ms
from chatbot.training.verifier_data import Pair, read_pairs
from chatbot.types import Document, Hit

DATA = ROOT / "bench" / "data" / "verifier_heldout.jsonl"
TARGET = 0.95
SIGNATURE_SOURCE = ("Orders over $500 require a signature on delivery; other orders are usually "
                    "left at your door or mailbox. If you'll be out, use the carrier's tracking "
                    "link to reschedule, redirect to a pickup point, or sign for release where "
                    "available.")
SIGNATURE_CASES = [
    ("You need to sign for your order, but it's usually left at your door or mailbox.", 0),
    ("You need to sign for your order.", 0),
    ("Orders require a signature on delivery.", 0),
    ("Orders over $500 don't require a signature on delivery.", 0),
    ("Orders over $500 need a signature on delivery.", 1),
    ("Orders under $500 are usually left at your door or mailbox.", 1),
]


def _hit(source: str, rank: int = 1) -> Hit:
    document = Document(id=f"s{rank}", record_id=f"s{rank}", kind="faq", question="",
                        answer=source)
    return Hit(document=document, score=1.0, rank=rank)


def judge_all(pairs: list[Pair], verifier: Verifier, support: float) -> list[dict[str, Any]]:
    """Per pair: the lexical verdict, the verifier's probability and the gate's verdict. A
    sentence the lexical pass finds no claim in counts as let through (the gate shows it)."""
    rows = []
    for pair in pairs:
        sources = [_hit(pair.source)]
        vocabulary = source_vocabulary(sources)
        lexical, _ = check_sentence(pair.sentence, vocabulary, support)
        probability = verifier.entailment(pair.sentence, evidence(sources))
        lexical_ok = lexical is not False
        verifier_ok = probability >= verifier.threshold
        rows.append({"kind": pair.kind, "label": pair.label, "lexical": lexical_ok,
                     "verifier": verifier_ok, "gate": lexical_ok and verifier_ok,
                     "probability": round(probability, 4)})
    return rows


def _correct(row: dict[str, Any], which: str) -> bool:
    return row[which] if row["label"] else not row[which]


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for which in ("lexical", "verifier", "gate"):
        pos = [_correct(r, which) for r in rows if r["label"]]
        neg = [_correct(r, which) for r in rows if not r["label"]]
        out[which] = {"faithful_accepted": round(sum(pos) / len(pos), 4),
                      "perturbed_rejected": round(sum(neg) / len(neg), 4)}
    kinds: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        kinds[row["kind"]].append(row)
    out["by_kind"] = {
        kind: {"label": group[0]["label"], "n": len(group),
               **{which: round(sum(_correct(r, which) for r in group) / len(group), 4)
                  for which in ("lexical", "verifier", "gate")}}
        for kind, group in sorted(kinds.items(), key=lambda kv: (-kv[1][0]["label"], kv[0]))}
    return out


def latency(pairs: list[Pair], verifier: Verifier, n: int) -> dict[str, Any]:
    """ms per sentence, one at a time as the gate runs it, against 1 and 3 sources: with the
    sources' token vectors cached (as in serving, where the knowledge base's answers repeat)
    and cold (a fresh verifier per sentence: every source passage encoded too)."""
    sample = pairs[:: max(1, len(pairs) // n)][:n]
    others = sorted({p.source for p in pairs})
    out: dict[str, Any] = {}
    for count in (1, 3):
        for cold in (False, True):
            times = []
            for i, pair in enumerate(sample):
                sources = [pair.source] + [others[(i + k) % len(others)] for k in (1, 2)]
                judge = Verifier(verifier.weights_dir, verifier.threshold) if cold else verifier
                judge.load()
                started = time.perf_counter()
                judge.entailment(pair.sentence, sources[:count])
                times.append((time.perf_counter() - started) * 1000)
            name = f"{count} source(s), {'cold' if cold else 'sources cached'}"
            out[name] = {"n": len(times), "p50_ms": percentile_ms(times, 50, 1),
                         "p95_ms": percentile_ms(times, 95, 1),
                         "mean_ms": round(statistics.fmean(times), 1)}
    out["load_average_after"] = load_average()
    return out


def markdown(results: dict[str, Any]) -> str:
    s = results["summary"]
    lines = ["# Grounding verifier: the support gate on held-out perturbations", "",
             f"{results['machine']}. Command: `{results['command']}`. Data: "
             f"`bench/data/verifier_heldout.jsonl` ({results['pairs']} pairs: "
             f"{results['faithful']} faithful, {results['perturbed']} perturbed, from "
             f"{results['faqs']} held-out FAQs of the demo knowledge base, none used in "
             f"training). Lexical support threshold {results['support_threshold']} (shipped "
             f"default); verifier `{results['weights']}` at threshold "
             f"{results['verifier_threshold']}. Load average {results['load_average']} before.",
             "", f"Target (issue 9): perturbed rejected ≥ {TARGET} and faithful accepted ≥ "
             f"{TARGET}.", "",
             "| check | faithful accepted | perturbed rejected |", "|---|---|---|"]
    names = {"lexical": "lexical support alone (the old gate)", "verifier": "verifier alone",
             "gate": "lexical + verifier (the gate as served)"}
    for which, name in names.items():
        lines.append(f"| {name} | {s[which]['faithful_accepted']} | "
                     f"{s[which]['perturbed_rejected']} |")
    lines += ["", "By kind (share judged correctly: faithful accepted, perturbed rejected):", "",
              "| kind | faithful? | n | lexical | verifier | gate |", "|---|---|---|---|---|---|"]
    for kind, k in s["by_kind"].items():
        lines.append(f"| {kind} | {'yes' if k['label'] else 'no'} | {k['n']} | {k['lexical']} | "
                     f"{k['verifier']} | {k['gate']} |")
    lines += ["", "The issue's example (source: the signature FAQ, ship-012):", "",
              "| generated sentence | should pass | lexical | verifier probability | gate |",
              "|---|---|---|---|---|"]
    for case in results["signature"]:
        lines.append(f"| {case['sentence']} | {'yes' if case['label'] else 'no'} | "
                     f"{'pass' if case['lexical'] else 'fail'} | {case['probability']} | "
                     f"{'pass' if case['gate'] else 'fail'} |")
    lat = results["latency"]
    lines += ["", f"Verifier latency per sentence ({results['threads']} torch thread(s), one "
              "sentence per call as the gate runs it; load average "
              f"{results['load_average']} before, {lat['load_average_after']} after):", "",
              "| sources | n | p50 ms | p95 ms | mean ms |", "|---|---|---|---|---|"]
    for name, t in lat.items():
        if isinstance(t, dict):
            lines.append(f"| {name} | {t['n']} | {t['p50_ms']} | {t['p95_ms']} | "
                         f"{t['mean_ms']} |")
    lines += ["", "What these numbers are and are not: the faithful and perturbed sentences are"
              " made by the same rules for training and held-out FAQs (different FAQs, same"
              " rules), so they measure generalisation to new knowledge-base text, not to "
              "the paraphrases a real generator writes; the verifier's acceptance of real "
              "generated answers is measured by `bench_answers.py` (\"verifier accepts\"). "
              "Dropped conditions are the weak kind: the head sees that \"over $500\" is "
              "missing but has learned too little about which missing words matter (a "
              "dropped clause that is a separate claim is faithful). What would get there: "
              "more and more varied condition drops and faithful clause drops in training, "
              "pre-training on Bitext answers with the same perturbations, a cross-encoder "
              "fine-tuned for longer than this CPU allowed (one that read the pair jointly "
              "learned too slowly here: binary cross-entropy still about 0.5 after 600 "
              "steps of 16 pairs), and real generator outputs labelled by hand for the "
              "held-out set."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--weights", default="shipped", help="shipped or a weights folder")
    parser.add_argument("--latency", type=int, default=200, help="sentences timed")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    settings = Settings(_env_file=None, torch_threads=args.threads,  # type: ignore[call-arg]
                        verifier=args.weights)
    verifier = make_verifier(settings)
    assert verifier is not None, "--weights off measures nothing"
    verifier.load()
    pairs = read_pairs(DATA)
    before = load_average()
    support = DEFAULT_THRESHOLDS.support
    started = time.perf_counter()
    rows = judge_all(pairs, verifier, support)
    seconds = time.perf_counter() - started
    signature = []
    for sentence, label in SIGNATURE_CASES:
        row = judge_all([Pair(SIGNATURE_SOURCE, sentence, label, "issue", "ship-012")],
                        verifier, support)[0]
        signature.append({"sentence": sentence, **row})
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {args.threads} torch threads",
        "command": "bench/bench_verifier.py " + " ".join(sys.argv[1:]),
        "threads": args.threads, "load_average": before, "weights": args.weights,
        "verifier_threshold": verifier.threshold, "support_threshold": support,
        "pairs": len(pairs), "faithful": sum(p.label for p in pairs),
        "perturbed": sum(1 - p.label for p in pairs), "faqs": len({p.group for p in pairs}),
        "judge_seconds": round(seconds, 1), "summary": summarise(rows),
        "signature": signature, "latency": latency(pairs, verifier, args.latency),
    }
    write_report("verifier", results, markdown(results))


if __name__ == "__main__":
    main()
