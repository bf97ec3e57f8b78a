"""Run every benchmark (`bench/bench_*.py`) one after another and collect their Markdown
reports into bench/results/SUMMARY.md. `make bench` calls this.

Benchmarks run in sequence, never in parallel: on a 2-core machine two at once would measure
each other. A benchmark that fails is reported in the summary and does not stop the others.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
# Order: cheap and foundational first, the end-to-end runs last. Each script writes
# results/<name>.md. signals needs no model (seconds); retrieval and encoders measure the
# embedder; rerank routes the demo held-out set with the untuned cosine, the cosine with the
# embedder tuning and the second-stage cross-encoder; suggest maps the demo dialogues with the
# embedder; verifier scores the held-out perturbations with the support gate's verifier;
# generation and answers add the language model; embedder_finetune trains; loop runs the
# server wiring with both models; load starts servers and saturates the machine; stages splits
# an uncached request's CPU by stage and reads load's results for the HTTP share. A script not
# listed here runs after these, by name.
ORDER = ["signals", "retrieval", "encoders", "rerank", "suggest", "verifier", "generation",
         "answers", "embedder_finetune", "loop", "load", "stages"]


def main() -> int:
    RESULTS.mkdir(parents=True, exist_ok=True)
    scripts = {p.stem.removeprefix("bench_"): p for p in BENCH.glob("bench_*.py")}
    names = [n for n in ORDER if n in scripts] + sorted(set(scripts) - set(ORDER))
    missing = [n for n in ORDER if n not in scripts]
    if missing:  # a renamed script would otherwise silently leave the summary
        print(f"warning: ORDER lists {', '.join(missing)} but bench/ has no such script",
              flush=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    status: dict[str, str] = {}
    # --collect: only rebuild SUMMARY.md from the reports already in results/ (each says when
    # and how it was run), e.g. after running one benchmark by hand.
    collect_only = "--collect" in sys.argv[1:]
    for name in [] if collect_only else names:
        print(f"== bench {name}", flush=True)
        started = time.perf_counter()
        result = subprocess.run([sys.executable, str(scripts[name])], env=env)
        minutes = (time.perf_counter() - started) / 60
        status[name] = f"ok ({minutes:.1f} min)" if result.returncode == 0 else (
            f"FAILED with exit code {result.returncode}")
    how = "collected from the reports below" if collect_only else "run by `make bench`"
    lines = [
        "# Benchmark summary",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{os.cpu_count()} cores: {how}; each report names its own command and conditions.",
        "",
        *(f"- {name}: {state}" for name, state in status.items()),
        "",
    ]
    for name in names:
        report = RESULTS / f"{name}.md"
        if report.exists():
            # Nest each report one heading level below the summary's title.
            text = report.read_text()
            lines += ["#" + line if line.startswith("#") else line for line in text.splitlines()]
            lines.append("")
    (RESULTS / "SUMMARY.md").write_text("\n".join(lines))
    print(f"wrote {RESULTS / 'SUMMARY.md'}")
    return 0 if all(s.startswith("ok") for s in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
