"""Generation speed of the default model on this CPU: decode tokens/s, first-token latency for a
~300-token grounded prompt, and process RSS with every model loaded, before and after each
optimisation (threads, int8 dynamic quantisation, bf16 weights, KV-cache reuse of the fixed
prompt prefix, torch.compile, prompt lookup decoding). Writes bench/results/generation.json and
generation.md.

    .venv/bin/python bench/bench_generation.py [--quick] [--threads 2] [--no-compile]

Every configuration runs the same prompts, greedy, one request at a time; the table reports
medians. Timings are reported, never asserted. The machine's load average is recorded with the
results because other processes on a shared 2-core box change the numbers a lot.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from common import ROOT, write_report  # first: offline environment

from chatbot.answering import prompt
from chatbot.config import Settings
from chatbot.evaluation.metrics import rouge_l
from chatbot.generation.local import TransformersGenerator, render

TARGETS = {"decode_tokens_per_s": 30.0, "first_token_s": 0.5, "rss_gb": 1.5}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prompts(settings: Settings, n: int) -> list[list[dict[str, str]]]:
    """Grounded prompts built from the demo knowledge base: three sources and a question."""
    from chatbot.knowledge.ingest import load_knowledge_base
    from chatbot.types import Hit

    faqs = [d for d in load_knowledge_base(settings.knowledge_base) if d.kind == "faq"]
    out = []
    for i in range(n):
        docs = [faqs[(i * 7 + j) % len(faqs)] for j in range(3)]
        hits = [Hit(document=d, score=0.8, rank=r) for r, d in enumerate(docs, 1)]
        out.append(prompt.build_messages(docs[0].alternatives[0] if docs[0].alternatives
                                         else docs[0].question, hits))
    return out


def measure(gen: TransformersGenerator, messages: list[list[dict[str, str]]],
            max_new_tokens: int, prefix_cache: Any = None) -> dict[str, Any]:
    firsts, rates, prompt_tokens, texts = [], [], [], []
    for m in messages:
        if prefix_cache is None:
            r = gen.generate(m, max_new_tokens=max_new_tokens)
            firsts.append(r.first_token_ms)
            rates.append(r.tokens_per_s)
            prompt_tokens.append(r.prompt_tokens)
            texts.append(r.text)
        else:
            first, rate, n, text = _generate_with_prefix(gen, m, max_new_tokens, prefix_cache)
            firsts.append(first)
            rates.append(rate)
            prompt_tokens.append(n)
            texts.append(text)
    return {"first_token_ms_p50": round(statistics.median(firsts), 1),
            "decode_tokens_per_s": round(statistics.median(rates), 2),
            "prompt_tokens_p50": statistics.median(prompt_tokens), "texts": texts}


def _prefix(gen: TransformersGenerator) -> tuple[Any, int]:
    """KV cache of the fixed start of every prompt (system message), computed once."""
    import torch

    text = render(gen.tokenizer, [{"role": "system", "content": prompt.SYSTEM_PROMPT},
                                         {"role": "user", "content": "x"}])
    full = gen.tokenizer(text, add_special_tokens=False)["input_ids"]
    system = [{"role": "system", "content": prompt.SYSTEM_PROMPT}]
    system_only = gen.tokenizer(render(gen.tokenizer, system),
                                add_special_tokens=False)["input_ids"]
    n = 0
    while n < min(len(full), len(system_only)) and full[n] == system_only[n]:
        n += 1
    n -= 1  # leave at least one shared token to the generate call
    with torch.inference_mode():
        out = gen.model(input_ids=torch.tensor([full[:n]]), use_cache=True)
    return out.past_key_values, n


def _generate_with_prefix(gen: TransformersGenerator, messages: list[dict[str, str]],
                          max_new_tokens: int,
                          prefix: tuple[Any, int]) -> tuple[float, float, int, str]:
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    cache, n_cached = prefix
    text = render(gen.tokenizer, messages)
    ids = gen.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    times: list[float] = []

    class Clock(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kw: Any) -> Any:
            times.append(time.perf_counter())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    t0 = time.perf_counter()
    with torch.inference_mode():
        out = gen.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                 past_key_values=copy.deepcopy(cache), do_sample=False,
                                 max_new_tokens=max_new_tokens, eos_token_id=gen._stop_ids,
                                 pad_token_id=gen.tokenizer.pad_token_id,
                                 stopping_criteria=StoppingCriteriaList([Clock()]))
    t_end = time.perf_counter()
    new = out.shape[1] - ids.shape[1]
    first = (times[0] - t0) * 1000 if times else 0.0
    rate = (new - 1) / (t_end - times[0]) if times and new > 1 else 0.0
    assert n_cached < ids.shape[1]
    text = gen.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
    return first, rate, int(ids.shape[1]), text


SERVING_PROBE = """
import json, os, sys
os.environ["HF_HUB_OFFLINE"] = "1"
from chatbot.config import Settings
from chatbot.answering.pipeline import build_pipeline
s = Settings(torch_threads=int(sys.argv[1]), _env_file=None)
p = build_pipeline(s)
try:
    p.answer("where is my order?")
    index = "active index"
except Exception as error:
    from chatbot.knowledge.ingest import load_knowledge_base
    from chatbot.retrieval.search import Retriever
    r = Retriever.from_documents(load_knowledge_base(s.knowledge_base), s)
    p = build_pipeline(s, retriever=r)
    p.answer("where is my order?")
    index = "in-memory index (" + type(error).__name__ + ")"
p.generator.generate("Say hello.", max_new_tokens=8)
rss = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:")][0]
print(json.dumps({"rss_mb": round(rss / 1024), "index": index, "generator": p.generator.name}))
"""


def serving_rss(threads: int) -> dict[str, Any]:
    """RSS of a fresh process holding what a server holds: embedder, index and generator."""
    import subprocess

    out = subprocess.run([sys.executable, "-c", SERVING_PROBE, str(threads)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"rss_mb": None, "error": out.stderr[-500:]}


def markdown(results: dict[str, Any]) -> str:
    lines = ["# Generation speed (SmolLM2-135M-Instruct, default adapter)", "",
             f"{results['machine']}; load average during the run: {results['load_average']}. "
             f"Command: `{results['command']}`.", "",
             "| configuration | decode tokens/s | first token (ms), ~300-token prompt | "
             "output vs fp32 (ROUGE-L) | RSS added (MB) |", "|---|---|---|---|---|"]
    for name, row in results["configurations"].items():
        if "error" in row:
            lines.append(f"| {name} | failed: {row['error'][:80]} | | | |")
            continue
        lines.append(f"| {name} | {row['decode_tokens_per_s']} | {row['first_token_ms_p50']} | "
                     f"{row['same_output_rouge_l']} | {row.get('rss_mb', '')} |")
    a = results["all_models_loaded"]
    lines += ["", f"Whole process with embedder, index and generator loaded: **{a['rss_mb']} MB** "
              f"RSS (target ≤ {TARGETS['rss_gb'] * 1024:.0f} MB).", "",
              "Targets from the issue: decode ≥ 30 tokens/s, first token ≤ 0.5 s, RSS ≤ 1.5 GB.",
              "", "An optimisation only counts when its output stays the same as fp32's "
              "(ROUGE-L near 1.0); a fast configuration that writes different words is a "
              "different, worse model.", ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="3 prompts instead of 8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    import torch

    # The baseline is plain greedy decoding; prompt lookup gets its own rows below.
    settings = Settings(torch_threads=args.threads, prompt_lookup_tokens=0,  # type: ignore[call-arg]
                        _env_file=None)
    messages = prompts(settings, 3 if args.quick else 8)
    configs: dict[str, dict[str, Any]] = {}
    reference: dict[str, list[str]] = {}  # the fp32 outputs every configuration is compared to
    base_rss = rss_mb()

    def run(name: str, gen: TransformersGenerator, **kw: Any) -> None:
        print(f"[generation] {name}", flush=True)
        try:
            gen.generate(messages[0], max_new_tokens=4)  # warm-up: first-call allocations
            row = measure(gen, messages, args.max_new_tokens, **kw)
            row["rss_mb"] = round(rss_mb() - base_rss)
            # Same greedy prompts: an optimisation that changes the words changed the model.
            texts = row.pop("texts")
            reference.setdefault("texts", texts)
            row["same_output_rouge_l"] = round(statistics.fmean(
                rouge_l(a, b) for a, b in zip(texts, reference["texts"], strict=True)), 3)
        except Exception as error:  # a failed optimisation is a result, not a crash
            row = {"error": f"{type(error).__name__}: {error}"}
        configs[name] = row
        print(json.dumps(row), flush=True)

    gen = TransformersGenerator(settings.model_copy(update={"torch_threads": 1}))
    gen.load()
    torch.set_num_threads(1)
    run("fp32, 1 thread", gen)
    torch.set_num_threads(args.threads)
    run(f"fp32, {args.threads} threads (baseline)", gen)
    try:
        run(f"fp32, {args.threads} threads, KV cache of the system prompt reused", gen,
            prefix_cache=_prefix(gen))
    except Exception as error:
        configs["kv cache reuse"] = {"error": f"{type(error).__name__}: {error}"}
    for n in (3, 5, 8):
        gen.settings = settings.model_copy(update={"prompt_lookup_tokens": n})
        run(f"fp32, {args.threads} threads, prompt lookup decoding ({n} tokens)", gen)
    gen.settings = settings
    bf16 = TransformersGenerator(settings)
    bf16.load()
    bf16.model.to(torch.bfloat16)  # half the bytes per token; fast where the CPU has native bf16
    run(f"bf16 weights, {args.threads} threads", bf16)
    del bf16
    int8 = TransformersGenerator(settings, int8=True)
    int8.load()
    run(f"int8 dynamic quantisation, {args.threads} threads", int8)
    del int8
    if not args.no_compile:
        compiled = TransformersGenerator(settings)
        compiled.load()
        compiled.model.forward = torch.compile(compiled.model.forward, dynamic=True)
        run(f"torch.compile (dynamic), {args.threads} threads", compiled)
        del compiled

    serving = serving_rss(args.threads)
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "load_average": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "command": "bench/bench_generation.py " + " ".join(sys.argv[1:]),
        "max_new_tokens": args.max_new_tokens, "prompts": len(messages),
        "configurations": configs,
        "all_models_loaded": serving,
        "targets": TARGETS,
    }
    write_report("generation", results, markdown(results))


if __name__ == "__main__":
    main()
