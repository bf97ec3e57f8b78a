"""Encoder benchmark: the embedder's backends (PyTorch, ONNX fp32, ONNX int8) side by side in
one run, and micro-batching of concurrent queries. Writes bench/results/encoders.json and .md.

    .venv/bin/python bench/bench_encoders.py [--quick]

Sections, each number with its machine state, thread count and cache state:

1. One query at a time (query cache off): p50/p95 wall time and CPU time per query, for each
   backend at 1 and 2 threads.
2. Same vectors? Cosine of each backend's vectors to PyTorch's on real questions.
3. Same answers? Retrieval recall@1/@5 and MRR (hybrid and dense-only) on Bitext (its seeded
   80/20 split) and CLINC150 (train indexed, test asked), and CLINC150 routing (calibrated on
   val + oos_val at the default target precision, tested on test + oos_test): the same code as
   `chatbot eval-retrieval` and `chatbot eval-routing`. Each backend embeds every text once
   here, in batches at 1 thread (a per-text memo), since only quality is read from it.
4. Concurrent callers: N threads each asking distinct questions (cache off), with the
   BatchingEncoder (one model worker, 2 ms window) and without it (each caller runs the model
   in its own thread): queries/s, latency, CPU per query, encoder calls.

The ONNX export is made once into <repo>/var/models (reused afterwards, like in serving).
Timings are reported, never asserted; the machine is shared, so each section records the load
average around it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from common import (  # first: offline env
    DATASETS,
    RESULTS,
    ROOT,
    bitext_csvs,
    clinc150,
    load_average,
    write_csv,
    write_report,
)

from chatbot.config import Settings
from chatbot.evaluation.answers import eval_routing
from chatbot.evaluation.metrics import percentile_ms
from chatbot.evaluation.retrieval import eval_retrieval
from chatbot.retrieval.embed import Embedder, TextEncoder, load_encoder

BACKENDS = ("torch", "onnx", "onnx-int8")
THREADS = (1, 2)
CALLERS = (1, 8, 32)
WINDOW_MS = 2.0


def settings_for(backend: str, threads: int, *, window_ms: float = 0.0, cache: int = 0,
                 ) -> Settings:
    return Settings(var_dir=ROOT / "var", embedding_backend=backend,  # type: ignore[arg-type]
                    torch_threads=threads, embedding_threads=threads,
                    embedding_batch_window_ms=window_ms, query_cache_size=cache,
                    _env_file=None)  # type: ignore[call-arg]


class Counting:
    """A backend wrapper counting encoder calls and texts (thread-safe)."""

    def __init__(self, inner: TextEncoder) -> None:
        self.inner = inner
        self.calls = 0
        self.texts = 0
        self._lock = threading.Lock()

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def encode(self, texts: Sequence[str], *, batch_size: int, progress: bool = False
               ) -> np.ndarray:
        with self._lock:
            self.calls += 1
            self.texts += len(texts)
        return self.inner.encode(texts, batch_size=batch_size, progress=progress)


class Memo:
    """A backend wrapper remembering each text's vector (quality runs embed texts once)."""

    def __init__(self, inner: TextEncoder) -> None:
        self.inner = inner
        self.vectors: dict[str, np.ndarray] = {}

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def encode(self, texts: Sequence[str], *, batch_size: int, progress: bool = False
               ) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self.vectors))
        if missing:
            fresh = self.inner.encode(missing, batch_size=batch_size, progress=progress)
            self.vectors.update(zip(missing, fresh, strict=True))
        return np.stack([self.vectors[t] for t in texts])


class Backends:
    """One loaded encoder per (backend, threads); torch threads are process-wide, so the
    PyTorch model is loaded once and its thread count set before each use."""

    def __init__(self) -> None:
        self._loaded: dict[tuple[str, int], TextEncoder] = {}

    def get(self, backend: str, threads: int) -> TextEncoder:
        key = (backend, 0 if backend == "torch" else threads)
        if key not in self._loaded:
            self._loaded[key] = load_encoder(settings_for(backend, threads))
        if backend == "torch":
            import torch

            torch.set_num_threads(threads)
        return self._loaded[key]


# --- 1. one query at a time ------------------------------------------------------------------
def single(backends: Backends, queries: list[str]) -> list[dict[str, Any]]:
    rows = []
    runs = [(b, t, 0.0) for b in BACKENDS for t in THREADS] + [("onnx", 1, WINDOW_MS)]
    for backend, threads, window in runs:
        embedder = Embedder(settings_for(backend, threads, window_ms=window),
                            encoder=backends.get(backend, threads))
        for text in queries[:10]:  # warm-up: first-call allocations
            embedder.encode_query(text + " warm")
        wall, cpu = [], []
        load = load_average()
        for text in queries:
            w, c = time.perf_counter(), time.process_time()
            embedder.encode_query(text)
            cpu.append((time.process_time() - c) * 1000)
            wall.append((time.perf_counter() - w) * 1000)
        embedder.close()
        row = {"backend": backend, "threads": threads,
               "path": f"through the BatchingEncoder (window {window} ms), lone caller"
               if window else "direct", "queries": len(queries), "cache": "off",
               "p50_ms": percentile_ms(wall, 50), "p95_ms": percentile_ms(wall, 95),
               "cpu_ms_per_query_p50": percentile_ms(cpu, 50),
               "load_before": load, "load_after": load_average()}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


# --- 2. same vectors? --------------------------------------------------------------------------
def cosines(backends: Backends, texts: list[str]) -> dict[str, Any]:
    reference = backends.get("torch", 2).encode(texts, batch_size=64)
    out: dict[str, Any] = {"texts": len(texts), "reference": "torch (sentence-transformers)"}
    for backend in BACKENDS[1:]:
        vectors = backends.get(backend, 2).encode(texts, batch_size=64)
        cos = np.sum(reference * vectors, axis=1)
        out[backend] = {"mean": round(float(cos.mean()), 5), "min": round(float(cos.min()), 5),
                        "p1": round(float(np.percentile(cos, 1)), 5)}
        print(backend, json.dumps(out[backend]), flush=True)
    return out


# --- 3. same answers? --------------------------------------------------------------------------
def _rows(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))[1:]


def quality_files(tmp: Path) -> dict[str, Path]:
    files = dict(zip(("bitext_train", "bitext_test"), bitext_csvs(tmp), strict=True))
    data = clinc150()
    for part in ("train", "val", "test"):
        files[f"clinc_{part}"] = write_csv(tmp / f"clinc_{part}.csv", ["text", "label"],
                                           data[part])
    for part in ("oos_val", "oos_test"):
        files[f"clinc_{part}"] = write_csv(tmp / f"clinc_{part}.csv", ["text"],
                                           [(t,) for t, _ in data[part]])
    return files


def quality(backends: Backends, files: dict[str, Path], quick: bool) -> dict[str, Any]:
    used = [name for name in files if not quick or not name.startswith(("clinc_val", "clinc_oos"))]
    texts = [row[0] for name in used for row in _rows(files[name])]
    out: dict[str, Any] = {}
    for backend in BACKENDS:
        settings = settings_for(backend, 1, cache=4096)
        memo = Memo(backends.get(backend, 1))
        block: dict[str, Any] = {"load_before": load_average()}
        # Every text once, in batches (1 thread: the box is shared); the searches then only
        # look their vectors up.
        print(f"[quality] {backend}: embedding {len(set(texts))} texts", flush=True)
        memo.encode(list(dict.fromkeys(texts)), batch_size=64, progress=True)
        embedder = Embedder(settings, encoder=memo)
        for name in ("bitext", "clinc"):
            queries = files[f"{name}_test"]
            if quick:
                lines = queries.read_text().splitlines()
                queries = queries.with_name(f"{name}_quick.csv")
                queries.write_text("\n".join(lines[:301]) + "\n")
            print(f"[quality] {backend} {name}", flush=True)
            result = eval_retrieval(files[f"{name}_train"], queries, text_col="text",
                                    label_col="label", settings=settings, k=5,
                                    modes=("hybrid", "dense"), embedder=embedder, progress=True)
            block[name] = {mode: {k: r[k] for k in ("n", "recall@1", "recall@5", "mrr")}
                           for mode, r in result["modes"].items()}
            print(json.dumps(block[name]), flush=True)
        if not quick:
            print(f"[routing] {backend} clinc150", flush=True)
            routing = eval_routing(files["clinc_train"], files["clinc_test"],
                                   files["clinc_oos_test"], text_col="text", label_col="label",
                                   settings=settings, calibrate_in=files["clinc_val"],
                                   calibrate_out=files["clinc_oos_val"], embedder=embedder,
                                   progress=True)
            block["routing"] = {k: routing.get(k) for k in (
                "in_scope_answered", "in_scope_correct", "oos_fallback", "thresholds")}
            print(json.dumps(block["routing"]), flush=True)
        block["load_after"] = load_average()
        out[backend] = block
    return out


# --- 4. concurrent callers ---------------------------------------------------------------------
def concurrent(backends: Backends, texts: list[str], quick: bool) -> list[dict[str, Any]]:
    rows = []
    for backend in BACKENDS:
        for threads in THREADS:
            for callers in CALLERS:
                for batching in (True, False):
                    if callers == 1 and not batching:
                        continue  # the same as section 1
                    rows.append(one_load(backends, backend, threads, callers, batching,
                                         texts[: 160 if quick else 480]))
                    print(json.dumps(rows[-1]), flush=True)
    return rows


def one_load(backends: Backends, backend: str, threads: int, callers: int, batching: bool,
             texts: list[str]) -> dict[str, Any]:
    counting = Counting(backends.get(backend, threads))
    settings = settings_for(backend, threads, window_ms=WINDOW_MS if batching else 0.0)
    embedder = Embedder(settings, encoder=counting)
    embedder.encode_query("warm-up question")
    counting.calls = counting.texts = 0
    latencies: list[float] = []
    errors: list[str] = []
    barrier = threading.Barrier(callers + 1)

    def caller(index: int) -> None:
        barrier.wait()
        for text in texts[index::callers]:
            started = time.perf_counter()
            try:
                embedder.encode_query(text)
            except Exception as error:  # reported, the run goes on
                errors.append(repr(error))
                continue
            latencies.append((time.perf_counter() - started) * 1000)

    pool = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
    for thread in pool:
        thread.start()
    load = load_average()
    barrier.wait()
    wall, cpu = time.perf_counter(), time.process_time()
    for thread in pool:
        thread.join()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    embedder.close()
    done = len(latencies)
    return {
        "backend": backend, "threads": threads, "callers": callers,
        "batching": f"BatchingEncoder, {WINDOW_MS} ms window" if batching else "off",
        "cache": "off", "queries": done, "errors": len(errors),
        "queries_per_s": round(done / wall, 1),
        "p50_ms": percentile_ms(latencies, 50), "p95_ms": percentile_ms(latencies, 95),
        "cpu_ms_per_query": round(cpu * 1000 / max(done, 1), 2),
        "encoder_calls": counting.calls,
        "mean_batch": round(counting.texts / max(counting.calls, 1), 1),
        "load_before": load, "load_after": load_average(),
        **({"first_error": errors[0]} if errors else {}),
    }


# --- report --------------------------------------------------------------------------------------
RECALL_TOLERANCE = 0.005  # |recall@1 - torch's| allowed before a backend may be the default
ROUTING_TOLERANCE = 0.01  # the same for each CLINC150 routing rate


def verdict(quality: dict[str, Any]) -> dict[str, Any]:
    """Each backend against PyTorch: the largest recall@1 and routing differences, and
    whether they stay within the tolerances."""
    base = quality.get("torch")
    out: dict[str, Any] = {}
    for backend, block in quality.items():
        if backend == "torch" or base is None:
            continue
        recall = max(abs(block[d][m]["recall@1"] - base[d][m]["recall@1"])
                     for d in ("bitext", "clinc") for m in block[d])
        row: dict[str, Any] = {"max_recall@1_difference": round(recall, 4)}
        ok = recall <= RECALL_TOLERANCE
        if "routing" in block and "routing" in base:
            routing = max(abs(block["routing"][k] - base["routing"][k])
                          for k in ("in_scope_answered", "in_scope_correct", "oos_fallback"))
            row["max_routing_difference"] = round(routing, 4)
            ok = ok and routing <= ROUTING_TOLERANCE
        row["within_tolerance"] = ok
        out[backend] = row
    return out


def conditions(results: dict[str, Any]) -> str:
    """Data, cache, threads and route mix of each section, from the results themselves."""
    parts = ["Data: distinct questions of CLINC150's test split"]
    if "single" in results:
        parts.append(f"the first {results['single'][0]['queries']} timed one at a time")
    if "cosine_to_torch" in results:
        parts.append(f"the first {results['cosine_to_torch']['texts']} compared as vectors "
                     "(batches of 64, 2 threads)")
    if "concurrent" in results:
        parts.append(f"the next {results['concurrent'][0]['queries']} spread over the "
                     "concurrent callers")
    text = ", ".join(parts) + (
        ". Timed sections run the encoder alone (query embedding: no retrieval, routing or "
        "generation, so no route mix) with the query cache off, after a warm-up; threads are "
        "the intra-op threads of the backend, as in each row.")
    if "quality" in results:
        text += (" Quality: Bitext (seeded 80/20 split within each intent) and CLINC150 "
                 "(train indexed, test asked), k=5; every text embedded once per backend at 1 "
                 "thread in batches of 64 and memoised (nothing is timed there). CLINC150 "
                 "routing: calibrated on val + oos_val at the default target precision, tested "
                 "on test (in scope) + oos_test (out of scope).")
    return text


def markdown(results: dict[str, Any]) -> str:
    lines = ["# Embedding backends and micro-batching", "",
             f"Machine: {results['machine']}. Command: `{results['command']}`. "
             f"{results['note']}", "", conditions(results), ""]
    if "quality" in results:
        lines += [f"Quality gate against PyTorch (recall@1 within {RECALL_TOLERANCE} on Bitext "
                  f"and CLINC150, hybrid and dense; CLINC150 routing rates within "
                  f"{ROUTING_TOLERANCE}):", ""]
        for backend, v in verdict(results["quality"]).items():
            routing = v.get("max_routing_difference", "not measured")
            lines.append(f"- {backend}: largest recall@1 difference "
                         f"{v['max_recall@1_difference']}, largest routing difference "
                         f"{routing}: {'within' if v['within_tolerance'] else 'OUTSIDE'} "
                         "tolerance.")
        lines.append("")
    if "single" in results:
        lines += ["## One query at a time (query cache off; medians over the queries)", "",
                  "| backend | threads | path | n | p50 ms | p95 ms | CPU ms/query p50 | "
                  "load avg before/after |", "|---|---|---|---|---|---|---|---|"]
        for r in results["single"]:
            lines.append(f"| {r['backend']} | {r['threads']} | {r['path']} | {r['queries']} | "
                         f"{r['p50_ms']} | {r['p95_ms']} | {r['cpu_ms_per_query_p50']} | "
                         f"{r['load_before']} / {r['load_after']} |")
        lines.append("")
    if "cosine_to_torch" in results:
        c = results["cosine_to_torch"]
        lines += [f"## Same vectors? Cosine to PyTorch's vectors ({c['texts']} real questions)",
                  "", "| backend | mean | 1st percentile | min |", "|---|---|---|---|"]
        lines += [f"| {b} | {c[b]['mean']} | {c[b]['p1']} | {c[b]['min']} |"
                  for b in BACKENDS[1:] if b in c]
        lines.append("")
    if "quality" in results:
        lines += ["## Same answers? Retrieval (k=5) and CLINC150 routing per backend", "",
                  "| backend | dataset | mode | n | recall@1 | recall@5 | MRR |",
                  "|---|---|---|---|---|---|---|"]
        for backend, block in results["quality"].items():
            for name in ("bitext", "clinc"):
                for mode, r in block[name].items():
                    lines.append(f"| {backend} | {name} | {mode} | {r['n']} | {r['recall@1']} | "
                                 f"{r['recall@5']} | {r['mrr']} |")
        routed = {b: v["routing"] for b, v in results["quality"].items() if "routing" in v}
        if routed:
            lines += ["", "| backend | thresholds answer / faq | in_scope_answered | "
                      "in_scope_correct | oos_fallback |", "|---|---|---|---|---|"]
            for backend, r in routed.items():
                t = r["thresholds"]
                lines.append(f"| {backend} | {t['answer']:.3f} / {t['faq']:.3f} | "
                             f"{r['in_scope_answered']} | {r['in_scope_correct']} | "
                             f"{r['oos_fallback']} |")
        lines.append("")
    if "concurrent" in results:
        lines += ["## Concurrent callers (distinct questions, query cache off)", "",
                  "| backend | threads | callers | batching | queries | q/s | p50 ms | p95 ms | "
                  "CPU ms/query | encoder calls | mean batch | errors | load before/after |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in results["concurrent"]:
            lines.append(
                f"| {r['backend']} | {r['threads']} | {r['callers']} | {r['batching']} | "
                f"{r['queries']} | {r['queries_per_s']} | {r['p50_ms']} | {r['p95_ms']} | "
                f"{r['cpu_ms_per_query']} | {r['encoder_calls']} | {r['mean_batch']} | "
                f"{r['errors']} | {r['load_before']} / {r['load_after']} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="fewer queries, 300 per quality set, no routing")
    parser.add_argument("--render", action="store_true",
                        help="only rewrite encoders.md from encoders.json")
    args = parser.parse_args()
    if args.render:
        results = json.loads((RESULTS / "encoders.json").read_text())
        if "quality" in results:
            results["verdict"] = verdict(results["quality"])
        write_report("encoders", results, markdown(results))
        return
    if not DATASETS.is_dir():
        print("../shared/datasets is absent: encoder benchmark skipped")
        return
    data = clinc150()
    questions = list(dict.fromkeys(t for t, _ in data["test"]))
    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                   f"1-minute load average at the start {load_average()}",
        "command": "bench/bench_encoders.py" + (" --quick" if args.quick else ""),
        "note": "The machine was shared with other work while this ran (see the load averages "
                "next to each row): read medians, and compare rows with similar load.",
    }
    backends = Backends()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_name:
        files = quality_files(Path(tmp_name))
        results["single"] = single(backends, questions[: 100 if args.quick else 400])
        write_report("encoders", results, markdown(results))
        results["cosine_to_torch"] = cosines(backends, questions[:1000])
        results["concurrent"] = concurrent(backends, questions[1000:], args.quick)
        write_report("encoders", results, markdown(results))
        results["quality"] = quality(backends, files, args.quick)
        results["verdict"] = verdict(results["quality"])
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["machine"] += f", at the end {load_average()}"
    write_report("encoders", results, markdown(results))


if __name__ == "__main__":
    main()
