"""What the benchmark scripts share: the offline environment (set on import, before any model
library loads), the repository paths, CSV writing for throw-away datasets, and the report writer
(JSON + Markdown in bench/results/). Each bench_*.py runs as a script, so bench/ is on sys.path
and ``from common import ...`` finds this module.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `chatbot` from the checkout even without an editable install
    sys.path.insert(0, str(ROOT))
DATASETS = ROOT.parent / "shared" / "datasets"
RESULTS = ROOT / "bench" / "results"


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_report(name: str, results: dict[str, Any], markdown: str) -> None:
    """bench/results/NAME.json and NAME.md, and the Markdown on stdout."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown)
    print(markdown)
