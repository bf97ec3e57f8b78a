"""What the benchmark scripts share: the offline environment (set on import, before any model
library loads), the repository paths, the shared datasets (CLINC150, the Bitext split as CSVs),
the machine's load average, CSV writing for throw-away datasets, and the report writer (JSON +
Markdown in bench/results/). Each bench_*.py runs as a script, so bench/ is on sys.path and
``from common import ...`` finds this module.
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
CLINC150 = DATASETS / "clinc150" / "data_full.json"
RESULTS = ROOT / "bench" / "results"


def load_average() -> float | None:
    """The 1-minute load average, rounded (None where the OS has none): every report states
    the machine's load next to its timings."""
    return round(os.getloadavg()[0], 1) if hasattr(os, "getloadavg") else None


def clinc150() -> dict[str, list[list[str]]]:
    """CLINC150's data_full.json: part (train, val, test, oos_val, ...) -> [text, intent] rows."""
    return json.loads(CLINC150.read_text())


def bitext_csvs(tmp: Path) -> tuple[Path, Path]:
    """Bitext's seeded 80/20 split within each intent (the one the fine-tuning commands train
    on the 80% of) as ``text,label`` CSVs in ``tmp``: (the 80% to index, the 20% to ask)."""
    from chatbot.evaluation.datasets import bitext_split

    train, test = bitext_split(next((DATASETS / "bitext").glob("*.csv")))
    return tuple(write_csv(tmp / f"bitext_{name}.csv", ["text", "label"],  # type: ignore[return-value]
                           [(r["instruction"], r["intent"]) for r in rows])
                 for name, rows in (("train", train), ("test", test)))


def clinc_csvs(tmp: Path, data: dict[str, list[list[str]]] | None = None) -> dict[str, Path]:
    """CLINC150's parts as CSVs in ``tmp``: train, val and test as ``text,intent``; oos_val and
    oos_test as ``text`` (what ``eval_routing`` reads: index train, calibrate val + oos_val,
    test test + oos_test)."""
    data = data or clinc150()
    files = {part: write_csv(tmp / f"{part}.csv", ["text", "intent"], data[part])
             for part in ("train", "val", "test")}
    for part in ("oos_val", "oos_test"):
        files[part] = write_csv(tmp / f"{part}.csv", ["text"], [(t,) for t, _ in data[part]])
    return files


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
