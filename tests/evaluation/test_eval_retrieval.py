"""eval-retrieval: works on any labelled CSV pair, counts hits by label, reports latency."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from chatbot.config import Settings
from chatbot.errors import IngestError
from chatbot.evaluation.retrieval import eval_retrieval
from chatbot.retrieval.embed import Embedder


def write_csv(
    path: Path, rows: list[tuple[str, str]], cols: tuple[str, str] = ("utterance", "topic")
) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(cols)
        writer.writerows(rows)
    return path


TRAIN = [
    ("what is the weather tomorrow", "weather"),
    ("will it rain today", "weather"),
    ("set an alarm for 7am", "alarm"),
    ("wake me up at six", "alarm"),
    ("play some jazz music", "music"),
    ("put on my workout playlist", "music"),
]


def test_perfect_and_wrong_labels_are_counted(
    tmp_path: Path, settings: Settings, embedder: Embedder
) -> None:
    kb = write_csv(tmp_path / "train.csv", TRAIN)
    good = write_csv(
        tmp_path / "good.csv", [("is it going to rain", "weather"), ("alarm at 8 please", "alarm")]
    )
    result = eval_retrieval(
        kb, good, text_col="utterance", label_col="topic", settings=settings, embedder=embedder, k=2
    )
    assert result["n"] == 2 and result["recall@1"] == 1.0 and result["mrr"] == 1.0
    assert result["p50_ms"] > 0 and result["p95_ms"] >= result["p50_ms"]
    wrong = write_csv(
        tmp_path / "wrong.csv", [("is it going to rain", "music"), ("alarm at 8 please", "alarm")]
    )
    result = eval_retrieval(
        kb,
        wrong,
        text_col="utterance",
        label_col="topic",
        settings=settings,
        embedder=embedder,
        k=2,
    )
    assert result["recall@1"] == 0.5


def test_all_modes_are_reported_side_by_side(
    tmp_path: Path, settings: Settings, embedder: Embedder
) -> None:
    kb = write_csv(tmp_path / "train.csv", TRAIN)
    queries = write_csv(tmp_path / "q.csv", [("rain tomorrow?", "weather")])
    result = eval_retrieval(
        kb,
        queries,
        text_col="utterance",
        label_col="topic",
        settings=settings,
        embedder=embedder,
        modes=("hybrid", "dense", "keyword"),
    )
    assert set(result["modes"]) == {"hybrid", "dense", "keyword"}
    assert result["documents"] == len(TRAIN)


def test_missing_column_names_the_file_and_the_columns(
    tmp_path: Path, settings: Settings, embedder: Embedder
) -> None:
    kb = write_csv(tmp_path / "train.csv", TRAIN)
    with pytest.raises(
        IngestError, match=r"train.csv:1: no column 'text' \(columns are utterance, topic\)"
    ):
        eval_retrieval(
            kb, kb, text_col="text", label_col="topic", settings=settings, embedder=embedder
        )


def test_empty_label_names_the_line(tmp_path: Path, settings: Settings, embedder: Embedder) -> None:
    kb = write_csv(tmp_path / "train.csv", [*TRAIN, ("orphan row", "")])
    with pytest.raises(IngestError, match=r"train.csv:8: empty value in utterance, topic"):
        eval_retrieval(
            kb, kb, text_col="utterance", label_col="topic", settings=settings, embedder=embedder
        )


def test_bitext_split_is_seeded_80_20_within_each_intent(tmp_path: Path) -> None:
    from chatbot.evaluation.datasets import bitext_split

    path = tmp_path / "bitext.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["flags", "instruction", "category", "intent", "response"])
        writer.writerows([("B", f"{intent} question {i}", "C", intent, f"answer {i}")
                          for intent, n in (("cancel", 10), ("refund", 5)) for i in range(n)])
    train, test = bitext_split(path)
    assert [len([r for r in part if r["intent"] == "cancel"]) for part in (train, test)] == [8, 2]
    assert [len([r for r in part if r["intent"] == "refund"]) for part in (train, test)] == [4, 1]
    assert {r["instruction"] for r in train}.isdisjoint(r["instruction"] for r in test)
    assert bitext_split(path) == (train, test)  # the same seed, the same split
    assert bitext_split(path, seed=14) != (train, test)

    with pytest.raises(IngestError, match=r"missing.csv: cannot open"):
        bitext_split(tmp_path / "missing.csv")
    other = write_csv(tmp_path / "other.csv", TRAIN)
    with pytest.raises(IngestError, match=r"other.csv:1: no column instruction, intent, response"):
        bitext_split(other)
