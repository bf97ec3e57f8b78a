"""Evaluation data: labelled CSV columns, documents built from rows, and the dataset splits
shared by the evaluators, the fine-tuning commands and ``bench/``.

One implementation of each: ``read_columns`` (names the file and line of a bad row),
``documents_from_rows`` (one FAQ document per row, the label kept as its category, which is what
a hit is judged by), ``bitext_split`` (Bitext's seeded 80/20 split within each intent: the
generator and embedder train on the 80%, the benchmarks test on the 20%) and ``spread``.
"""

from __future__ import annotations

import csv
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatbot.errors import IngestError
from chatbot.types import Document

BITEXT_SEED = 13  # one seed for every user of the split, so train and test never overlap
Rows = list[dict[str, str]]


@dataclass(frozen=True)
class LabelledText:
    text: str
    label: str
    answer: str = ""


def read_columns(path: Path, columns: Sequence[str]) -> list[tuple[str, ...]]:
    """The given columns of every row; names the file and line of an empty cell."""
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as error:
        raise IngestError(str(path), None, f"cannot open: {error.strerror}") from error
    with handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        for column in columns:
            if column not in header:
                raise IngestError(str(path), 1, f"no column '{column}'",
                                  f"columns are {', '.join(header)}")
        rows = []
        try:
            for row in reader:
                values = tuple((row.get(c) or "").strip() for c in columns)
                if not all(values):
                    raise IngestError(str(path), reader.line_num,
                                      f"empty value in {', '.join(columns)}")
                rows.append(values)
        except UnicodeDecodeError as error:
            raise IngestError(str(path), reader.line_num, "not valid UTF-8") from error
    if not rows:
        raise IngestError(str(path), None, "no rows")
    return rows


def read_labelled_csv(
    path: Path, text_col: str, label_col: str, answer_col: str | None = None
) -> list[LabelledText]:
    """Rows of a CSV as (text, label[, answer]); names the file and line of a bad row."""
    columns = (text_col, label_col, *((answer_col,) if answer_col else ()))
    return [LabelledText(*values) for values in read_columns(path, columns)]


def documents_from_rows(rows: Sequence[LabelledText]) -> list[Document]:
    """One document per row, its label kept as the category (what a hit is judged by)."""
    documents = []
    for i, row in enumerate(rows):
        record_id = f"row-{i}"
        documents.append(
            Document(
                id=Document.content_hash(
                    kind="faq", record_id=record_id, question=row.text,
                    answer=row.answer, category=row.label,
                ),
                record_id=record_id, kind="faq", question=row.text, answer=row.answer,
                category=row.label, source=f"row:{i + 2}",
            )
        )
    return documents


BITEXT_COLUMNS = ("instruction", "intent", "response")  # what the users of the split read


def bitext_split(path: Path, seed: int = BITEXT_SEED) -> tuple[Rows, Rows]:
    """Bitext rows split 80/20 within each intent with a seeded shuffle (train, test)."""
    by_intent: dict[str, Rows] = defaultdict(list)
    try:
        handle = path.open(encoding="utf-8")  # as the published splits were made: keep it
    except OSError as error:
        raise IngestError(str(path), None, f"cannot open: {error.strerror}",
                          "pass the Bitext customer-support CSV") from error
    with handle:
        reader = csv.DictReader(handle)
        missing = [c for c in BITEXT_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise IngestError(str(path), 1, f"no column {', '.join(missing)}",
                              f"a Bitext CSV has the columns {', '.join(BITEXT_COLUMNS)}")
        for row in reader:
            by_intent[row["intent"]].append(row)
    rng = random.Random(seed)
    train: Rows = []
    test: Rows = []
    for _intent, rows in sorted(by_intent.items()):
        rng.shuffle(rows)
        cut = int(round(len(rows) * 0.8))
        train += rows[:cut]
        test += rows[cut:]
    return train, test


def spread(items: Sequence[Any], limit: int | None) -> list[Any]:
    """``limit`` items evenly spaced over ``items`` (test files are often sorted by label)."""
    if not limit or limit >= len(items):
        return list(items)
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]
