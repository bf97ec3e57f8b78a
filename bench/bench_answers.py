"""Answer benchmarks: out-of-scope routing on CLINC150 and answer quality on Bitext.
Writes bench/results/answers.json and answers.md.

    .venv/bin/python bench/bench_answers.py [--limit 200] [--max-new-tokens 128] [--skip-clinc]
                                            [--skip-bitext] [--threads 2]

- CLINC150: index ``train``, calibrate on ``val`` + ``oos_val`` at several target precisions
  (and the uncalibrated defaults), test on ``test`` + ``oos_test``: ``in_scope_answered``,
  ``in_scope_correct``, ``oos_fallback``. Same code as `chatbot eval-routing`, searching each
  question once for all rows.
- Bitext: 80% of each intent indexed (question -> response), the other 20% asked (``--limit``
  evenly spread); rows side by side: the nearest neighbour's answer verbatim, the base model
  and the fine-tuned model generating from the top-3 sources, and the full pipeline (routing,
  support gate) with the fine-tuned model. Same code as `chatbot eval-answers`. Each row has a
  fresh embedder (an empty query cache), so its latency is never an earlier row's cache hit.

The datasets are read from ../shared/datasets; a missing dataset skips its section and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (  # first: offline environment
    DATASETS,
    RESULTS,
    clinc_csvs,
    write_csv,
    write_report,
)

from chatbot.answering.calibrate import CachingEmbedder
from chatbot.config import Settings
from chatbot.evaluation.answers import eval_answers, eval_routing_targets
from chatbot.evaluation.datasets import bitext_split
from chatbot.generation.local import DEFAULT_ADAPTER
from chatbot.retrieval.embed import Embedder


def clinc(settings: Settings, embedder: Any, tmp: Path) -> dict[str, Any]:
    files = clinc_csvs(tmp)
    names: dict[float | None, str] = {None: "uncalibrated defaults"}
    names.update({p: f"calibrated, target precision {p}" for p in (0.95, 0.90, 0.85)})
    print("[clinc150] one index, one search of every question, thresholds per row", flush=True)
    started = time.perf_counter()
    # The search results do not depend on the thresholds: search once, route once per row.
    results = eval_routing_targets(
        files["train"], files["test"], files["oos_test"], list(names), text_col="text",
        label_col="intent", settings=settings, embedder=embedder, progress=True,
        calibrate_in=files["val"], calibrate_out=files["oos_val"])
    rows: dict[str, Any] = {}
    for target, name in names.items():
        rows[name] = results[target]
        print(name, json.dumps({k: v for k, v in rows[name].items() if k != "calibration"}),
              flush=True)
    rows["seconds (all rows)"] = round(time.perf_counter() - started, 1)
    return rows


def bitext(settings: Settings, tmp: Path, limit: int) -> dict[str, Any]:
    source = next((DATASETS / "bitext").glob("*.csv"))
    train, test = bitext_split(source)
    kb = write_csv(tmp / "bitext_train.csv", ["instruction", "response"],
                   [(r["instruction"], r["response"]) for r in train])
    queries = write_csv(tmp / "bitext_test.csv", ["instruction", "response"],
                        [(r["instruction"], r["response"]) for r in test])
    rows: dict[str, Any] = {}
    runs = [("nearest neighbour, verbatim", "verbatim", "base"),
            ("base model, generate", "generate", "base")]
    if (DEFAULT_ADAPTER / "adapter_config.json").is_file():
        runs += [("fine-tuned model, generate", "generate", "finetuned"),
                 ("fine-tuned model, full pipeline", "pipeline", "finetuned")]
    else:
        rows["fine-tuned"] = {"skipped": f"no adapter at {DEFAULT_ADAPTER}"}
    for name, mode, which in runs:
        print(f"[bitext] {name}", flush=True)
        # A fresh embedder, so an empty query cache, for each row: a row must not answer from
        # the vectors an earlier row cached (its latency would be the cache's, not the model's).
        embedder = CachingEmbedder(Embedder(settings))
        started = time.perf_counter()
        rows[name] = eval_answers(kb, queries, question_col="instruction",
                                  answer_col="response", settings=settings, generator=which,
                                  mode=mode, limit=limit, embedder=embedder,  # type: ignore[arg-type]
                                  progress=True)
        rows[name]["seconds"] = round(time.perf_counter() - started, 1)
        print(json.dumps({k: v for k, v in rows[name].items() if k != "examples"}), flush=True)
    return rows


def markdown(results: dict[str, Any]) -> str:
    lines = ["# Answers: out-of-scope routing and answer quality", "",
             f"{results['machine']}. Command: `{results['command']}`.", ""]
    clinc_rows = results.get("clinc150")
    if isinstance(clinc_rows, dict) and "skipped" not in clinc_rows:
        lines += ["## CLINC150 out-of-scope (index train; calibrate val + oos_val; test test + "
                  "oos_test)", "",
                  "Target: `oos_fallback` ≥ 0.75 with `in_scope_answered` ≥ 0.90 (BERT with a "
                  "threshold, Larson et al. 2019: 52% out-of-scope recall). \"Uncalibrated "
                  "defaults\" are the thresholds shipped in "
                  "`chatbot.answering.policy.DEFAULT_THRESHOLDS` "
                  "(calibrated on the demo knowledge base, not on CLINC150).", "",
                  "| thresholds | answer / faq | in_scope_answered | in_scope_correct | "
                  "oos_fallback |", "|---|---|---|---|---|"]
        for name, r in clinc_rows.items():
            if not isinstance(r, dict):
                continue  # the timing entry
            t = r["thresholds"]
            lines.append(f"| {name} | {t['answer']:.3f} / {t['faq']:.3f} | "
                         f"{r['in_scope_answered']} | {r['in_scope_correct']} | "
                         f"{r['oos_fallback']} |")
        lines.append("")
    elif clinc_rows:
        lines += [f"CLINC150: {clinc_rows['skipped']}", ""]
    bitext_rows = results.get("bitext")
    if isinstance(bitext_rows, dict) and "skipped" not in bitext_rows:
        lines += [f"## Bitext answers (80/20 per intent, {results['limit']} test questions, "
                  f"max {results['max_new_tokens']} new tokens)", "",
                  "| answers by | ROUGE-L | lexical support | verifier accepts | routes | "
                  "p50 latency (ms) | tokens/s |", "|---|---|---|---|---|---|---|"]
        for name, r in bitext_rows.items():
            if "skipped" in r:
                lines.append(f"| {name} | skipped: {r['skipped']} | | | | | |")
                continue
            routes = ", ".join(f"{k} {v:.0%}" for k, v in r["routes"].items())
            lines.append(f"| {name} | {r['rouge_l']} | {r['groundedness']} | "
                         f"{'' if r.get('verifier_accepted') is None else r['verifier_accepted']}"
                         f" | {routes} | "
                         f"{r['latency_ms_p50']} | {r['tokens_per_s'] or ''} |")
        lines += ["", "Targets: fine-tuned ROUGE-L ≥ base + 0.10 and above the verbatim "
                  "baseline; groundedness ≥ 0.90. Lexical support is the share of claim "
                  "sentences whose content words the sources contain (the gate's first pass; "
                  "blind to negation, conditions and which number goes with what); verifier "
                  "accepts is the share that also pass the grounding verifier "
                  "(`chatbot/answering/verify.py`), the gate as served.", ""]
    elif bitext_rows:
        lines += [f"Bitext: {bitext_rows['skipped']}", ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, default=200, help="Bitext test questions")
    # The server's default: 67% of Bitext reference answers are longer than 128 tokens, so a
    # lower cap would cut generated answers short against a verbatim baseline that is not cut.
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-clinc", action="store_true")
    parser.add_argument("--skip-bitext", action="store_true")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    settings = Settings(torch_threads=args.threads, query_cache_size=50_000,  # type: ignore[call-arg]
                        max_new_tokens=args.max_new_tokens, _env_file=None)
    embedder = CachingEmbedder(Embedder(settings))
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {args.threads} torch threads",
        "command": "bench/bench_answers.py " + " ".join(sys.argv[1:]),
        "limit": args.limit, "max_new_tokens": args.max_new_tokens,
    }
    out = RESULTS / "answers.json"
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if not DATASETS.is_dir():
            results["clinc150"] = results["bitext"] = {"skipped": "../shared/datasets is absent"}
        if not args.skip_clinc and "clinc150" not in results:
            results["clinc150"] = clinc(settings, embedder, tmp)
        if not args.skip_bitext and "bitext" not in results:
            results["bitext"] = bitext(settings, tmp, args.limit)
    # A skipped section keeps the last run's numbers (read now: another run may have finished).
    previous = json.loads(out.read_text()) if out.exists() else {}
    for section, flag in (("clinc150", args.skip_clinc), ("bitext", args.skip_bitext)):
        if flag:
            skipped = {"skipped": "--skip-clinc" if section == "clinc150" else "--skip-bitext"}
            results[section] = previous.get(section, skipped)
            if section == "bitext" and "limit" in previous:
                results["limit"], results["max_new_tokens"] = (previous["limit"],
                                                               previous["max_new_tokens"])
    write_report("answers", results, markdown(results))


if __name__ == "__main__":
    main()
