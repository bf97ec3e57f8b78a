"""Retrieval benchmark: quality on Bitext and CLINC150, query latency, ANN speed/recall, and
re-index throughput. Writes bench/results/retrieval.json and retrieval.md.

    .venv/bin/python bench/bench_retrieval.py [--quick]

Quality rows come from the same code as `chatbot eval-retrieval` (chatbot.evaluation.retrieval),
with hybrid, dense-only and BM25-only side by side in one run. Timings are reported, never asserted.
The datasets are read from ../shared/datasets; the sections that need them are skipped (and
say so) when it is absent.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
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
from tqdm import tqdm

from chatbot.config import Settings
from chatbot.evaluation.datasets import (
    LabelledText,
    documents_from_rows,
    read_labelled_csv,
)
from chatbot.evaluation.retrieval import eval_retrieval, score_queries
from chatbot.retrieval.embed import Embedder
from chatbot.retrieval.index import build_index_data, reindex
from chatbot.retrieval.search import Retriever

CACHE = RESULTS / "cache"
SEED = 13
THREADS = 2


def write_labelled(path: Path, rows: list[tuple[str, str]]) -> Path:
    return write_csv(path, ["text", "label"], rows)


def clinc_split(tmp: Path, train_part: str = "train", test_part: str = "test") -> tuple[Path, Path]:
    data = clinc150()
    return (
        write_labelled(tmp / f"clinc_{train_part}.csv", [tuple(r) for r in data[train_part]]),
        write_labelled(tmp / f"clinc_{test_part}.csv", [tuple(r) for r in data[test_part]]),
    )


def quality(settings: Settings, embedder: Embedder, tmp: Path, quick: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    modes = ("hybrid", "dense", "keyword")
    for name, (kb, queries) in {
        "bitext": bitext_csvs(tmp),
        "clinc150": clinc_split(tmp),
    }.items():
        if quick:
            rows = read_labelled_csv(queries, "text", "label")[:300]
            queries = write_labelled(tmp / f"{name}_quick.csv", [(r.text, r.label) for r in rows])
        print(f"[quality] {name}", flush=True)
        out[name] = eval_retrieval(
            kb,
            queries,
            text_col="text",
            label_col="label",
            settings=settings,
            k=5,
            modes=modes,
            embedder=embedder,
            progress=True,
        )
        print(json.dumps(out[name]), flush=True)
    return out


def fusion_sweep(settings: Settings, embedder: Embedder, tmp: Path, quick: bool) -> dict[str, Any]:
    """Tune fusion on CLINC150's validation split (never on test)."""
    kb, val = clinc_split(tmp, "train", "val")
    documents = documents_from_rows(read_labelled_csv(kb, "text", "label"))
    queries = read_labelled_csv(val, "text", "label")[: 300 if quick else None]
    retriever = Retriever.from_documents(documents, settings, embedder)
    rows = {}
    for fusion, weight in [
        ("rrf", None),
        ("weighted", 0.6),
        ("weighted", 0.7),
        ("weighted", 0.8),
        ("weighted", 0.9),
    ]:
        update: dict[str, Any] = {"fusion": fusion}
        if weight is not None:
            update["dense_weight"] = weight
        retriever.settings = settings.model_copy(update=update)
        label = fusion if weight is None else f"weighted w={weight}"
        print(f"[fusion] {label}", flush=True)
        rows[label] = score_queries(retriever, queries, k=5)
        print(json.dumps(rows[label]), flush=True)
    return rows


def latency_10k(settings: Settings, embedder: Embedder) -> dict[str, Any]:
    """embed + search + fuse for one query at a time, 10k documents, cache off."""
    data = clinc150()
    documents = documents_from_rows([LabelledText(t, lab) for t, lab in data["train"][:10_000]])
    retriever = Retriever.from_documents(documents, settings, embedder)
    queries = [t for t, _ in data["test"][:500]]
    retriever.search(queries[0])
    stages: dict[str, list[float]] = {"embed": [], "total": []}
    for query in tqdm(queries, desc="latency 10k", leave=False):
        with embedder.no_cache():
            t0 = time.perf_counter()
            embedder.encode_query(query)
            t1 = time.perf_counter()
            retriever.search(query)
            t2 = time.perf_counter()
        stages["embed"].append((t1 - t0) * 1000)
        stages["total"].append((t2 - t1) * 1000)
    return {
        "documents": len(documents),
        "queries": len(queries),
        "p50_ms": round(statistics.median(stages["total"]), 2),
        "p95_ms": round(sorted(stages["total"])[int(0.95 * len(queries))], 2),
        "embed_p50_ms": round(statistics.median(stages["embed"]), 2),
        "search_and_fuse_p50_ms": round(
            statistics.median(stages["total"]) - statistics.median(stages["embed"]), 2
        ),
    }


def real_vectors(embedder: Embedder) -> tuple[np.ndarray, np.ndarray]:
    """Real MiniLM vectors of every Bitext and CLINC150 text (cached): base set and queries."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / "real_vectors.npz"
    if path.exists():
        cached = np.load(path)
        return cached["base"], cached["queries"]
    data = clinc150()
    plus = json.loads((DATASETS / "clinc150" / "data_oos_plus.json").read_text())
    texts = [r[0] for part in ("train", "val", "oos_train", "oos_val") for r in data[part]]
    texts += [r[0] for r in plus.get("oos_train", [])]
    with next((DATASETS / "bitext").glob("*.csv")).open(encoding="utf-8") as handle:
        texts += [row["instruction"] for row in csv.DictReader(handle)]
    queries = [r[0] for r in data["test"][:1000]]
    texts = list(dict.fromkeys(texts))
    print(f"[ann] embedding {len(texts)} real texts (cached afterwards)", flush=True)
    base = embedder.encode(texts, progress=True)
    query_vectors = embedder.encode(queries)
    np.savez(path, base=base, queries=query_vectors)
    return base, query_vectors


def ann(embedder: Embedder, n: int = 100_000) -> dict[str, Any]:
    """HNSW vs exact search at ``n`` vectors: p50 per single query and recall@10."""
    import faiss

    base, queries = real_vectors(embedder)
    rng = np.random.default_rng(SEED)
    # Only ~27k real texts exist here. The rest are convex mixtures of two real vectors,
    # re-normalised: they stay on the real data's manifold (clustered, low intrinsic
    # dimension), unlike uniform random vectors, which make ANN look worse than it is.
    extra = n - len(base)
    if extra > 0:
        a, b = rng.integers(0, len(base), size=(2, extra))
        mix = rng.uniform(0.55, 0.9, size=(extra, 1)).astype(np.float32)
        synthetic = mix * base[a] + (1 - mix) * base[b]
        synthetic /= np.linalg.norm(synthetic, axis=1, keepdims=True)
        vectors = np.concatenate([base, synthetic]).astype(np.float32)
    else:
        vectors = base[:n]
    faiss.omp_set_num_threads(1)
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    _, truth = exact.search(queries, 10)
    results: dict[str, Any] = {
        "vectors": len(vectors),
        "real_vectors": int(min(len(base), n)),
        "queries": len(queries),
    }

    def timed(index: Any) -> tuple[float, np.ndarray]:
        times, found = [], []
        for q in queries:
            t = time.perf_counter()
            _, ids = index.search(q[None, :], 10)
            times.append((time.perf_counter() - t) * 1000)
            found.append(ids[0])
        return statistics.median(times), np.array(found)

    p50, _ = timed(exact)
    results["exact"] = {"p50_ms": round(p50, 3)}
    started = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(vectors.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = 80
    faiss.omp_set_num_threads(THREADS)
    hnsw.add(vectors)
    faiss.omp_set_num_threads(1)
    results["hnsw_build_s"] = round(time.perf_counter() - started, 1)
    for ef in (32, 64, 128):
        hnsw.hnsw.efSearch = ef
        p50, found = timed(hnsw)
        recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
        results[f"hnsw_M32_ef{ef}"] = {
            "p50_ms": round(p50, 3),
            "recall@10": round(float(recall), 4),
        }
    return results


def reindex_speed(settings: Settings, embedder: Embedder, tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    source = next((DATASETS / "bitext").glob("*.csv"))
    rows = read_labelled_csv(source, "instruction", "intent", "response")
    documents = documents_from_rows(rows)
    embedder.encode(["warm-up"])
    started = time.perf_counter()
    build_index_data(documents, embedder, settings, progress=True)
    seconds = time.perf_counter() - started
    out["bitext_full_build"] = {
        "documents": len(documents),
        "seconds": round(seconds, 2),
        "documents_per_s": round(len(documents) / seconds, 1),
    }
    demo = settings.model_copy(
        update={"var_dir": tmp / "var", "knowledge_base": ROOT / "knowledge_base"}
    )
    full = reindex(demo, full=True, progress=False, embedder=embedder)
    out["demo_full_reindex"] = {
        "documents": full.documents,
        "phrasings": full.embedded,
        "seconds": round(full.seconds, 2),
        "documents_per_s": round(full.documents / full.seconds, 1),
    }
    again = reindex(demo, progress=False, embedder=embedder)
    out["demo_incremental_nothing_changed_s"] = round(again.seconds, 3)
    env = {
        **os.environ,
        "CHATBOT_VAR_DIR": str(tmp / "var"),
        "CHATBOT_KNOWLEDGE_BASE": str(ROOT / "knowledge_base"),
    }
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "chatbot", "reindex"], env=env, check=True, capture_output=True
    )
    out["demo_incremental_cli_wall_s"] = round(time.perf_counter() - started, 2)
    return out


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Retrieval benchmark",
        "",
        f"Machine: {results['machine']}. Command: `{results['command']}`.",
        "",
    ]
    if "quality" in results:
        lines += [
            "## Quality (recall by label; k=5)",
            "",
            "| dataset | mode | n | recall@1 | recall@5 | MRR | p50 ms | p95 ms |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, block in results["quality"].items():
            for mode, r in block["modes"].items():
                lines.append(
                    f"| {name} | {mode} | {r['n']} | {r['recall@1']} | {r['recall@5']} | "
                    f"{r['mrr']} | {r['p50_ms']} | {r['p95_ms']} |"
                )
        lines.append("")
    if "fusion_sweep_clinc_val" in results:
        lines += [
            "## Fusion tuned on CLINC150 validation",
            "",
            "| fusion | recall@1 | MRR |",
            "|---|---|---|",
        ]
        for label, r in results["fusion_sweep_clinc_val"].items():
            lines.append(f"| {label} | {r['recall@1']} | {r['mrr']} |")
        lines.append("")
    if "latency_10k" in results:
        r = results["latency_10k"]
        lines += [
            "## Query latency, 10k documents (embed + search + fuse, cache off)",
            "",
            f"p50 {r['p50_ms']} ms, p95 {r['p95_ms']} ms (embedding alone p50 "
            f"{r['embed_p50_ms']} ms) over {r['queries']} queries.",
            "",
        ]
    if "ann" in results:
        r = results["ann"]
        lines += [
            f"## FAISS alone at {r['vectors']} vectors ({r['real_vectors']} real MiniLM "
            "vectors, the rest mixtures of two real ones), one query at a time, 1 thread",
            "",
            "| index | p50 ms | recall@10 vs exact |",
            "|---|---|---|",
            f"| exact IndexFlatIP | {r['exact']['p50_ms']} | 1.0 |",
        ]
        for key, v in r.items():
            if key.startswith("hnsw_M"):
                lines.append(f"| {key} | {v['p50_ms']} | {v['recall@10']} |")
        lines += ["", f"HNSW build: {r['hnsw_build_s']} s.", ""]
    if "reindex" in results:
        r = results["reindex"]
        lines += [
            "## Re-index",
            "",
            f"- Full build, Bitext ({r['bitext_full_build']['documents']} documents): "
            f"{r['bitext_full_build']['documents_per_s']} documents/s.",
            f"- Full re-index of the demo knowledge base ({r['demo_full_reindex']['documents']} "
            f"documents, {r['demo_full_reindex']['phrasings']} phrasings): "
            f"{r['demo_full_reindex']['seconds']} s, "
            f"{r['demo_full_reindex']['documents_per_s']} documents/s.",
            f"- Incremental re-index, nothing changed: {r['demo_incremental_nothing_changed_s']} s "
            f"in process; `chatbot reindex` wall time including Python start-up: "
            f"{r['demo_incremental_cli_wall_s']} s.",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="300 queries per dataset")
    args = parser.parse_args()
    if not DATASETS.is_dir():
        print("../shared/datasets is absent: retrieval benchmark skipped")
        return
    import torch

    torch.set_num_threads(THREADS)
    settings = Settings(torch_threads=THREADS, _env_file=None)  # type: ignore[call-arg]
    embedder = Embedder(settings)
    results: dict[str, Any] = {
        "machine": (f"{platform.machine()}, {os.cpu_count()} cores; embedder "
                    f"{settings.embedding_backend} with {settings.resolved_embedding_threads} "
                    f"intra-op threads, FAISS {settings.search_threads} thread(s); 1-minute load "
                    f"average at the start {load_average()}"),
        "command": "make bench (bench/bench_retrieval.py" + (" --quick)" if args.quick else ")"),
        "settings": {
            "fusion": settings.fusion,
            "dense_weight": settings.dense_weight,
            "candidates": settings.candidates,
        },
    }
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        results["quality"] = quality(settings, embedder, tmp, args.quick)
        results["fusion_sweep_clinc_val"] = fusion_sweep(settings, embedder, tmp, args.quick)
        results["latency_10k"] = latency_10k(settings, embedder)
        results["ann"] = ann(embedder)
        results["reindex"] = reindex_speed(settings, embedder, tmp)
    results["machine"] += f", at the end {load_average()}"
    write_report("retrieval", results, markdown(results))


if __name__ == "__main__":
    main()
