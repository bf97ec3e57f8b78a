"""CLI: retrieval commands print what they promise; bad data is one line and exit 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chatbot.cli import _calibrated, app
from chatbot.config import Settings
from chatbot.retrieval.embed import Embedder
from chatbot.retrieval.index import reindex, write_thresholds

runner = CliRunner()


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("CHATBOT_VAR_DIR", str(settings.var_dir))
    monkeypatch.setenv("CHATBOT_KNOWLEDGE_BASE", str(settings.knowledge_base))
    return settings


def test_reindex_then_search(env: Settings) -> None:
    result = runner.invoke(app, ["reindex"])
    assert result.exit_code == 0, result.output
    assert "8 documents (8 added, 0 changed, 0 removed, 0 unchanged)" in result.output
    again = runner.invoke(app, ["reindex"])
    assert "is up to date" in again.output
    found = runner.invoke(app, ["search", "can I pay with paypal", "--k", "2"])
    assert found.exit_code == 0
    assert found.output.startswith("1. [faq pay-001]")
    assert "2. [" in found.output and "3. [" not in found.output


def test_reindex_on_bad_data_is_one_clean_line(env: Settings) -> None:
    (env.knowledge_base / "bad.csv").write_text("id,question,answer\nx,Q?,\n")
    result = runner.invoke(app, ["reindex"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith("error: ")
    assert "bad.csv:2: missing answer" in result.output
    assert "Traceback" not in result.output


def test_eval_retrieval_prints_the_promised_json(env: Settings, tmp_path: Path) -> None:
    csv = tmp_path / "d.csv"
    csv.write_text("text,label\nwill it rain,weather\nset an alarm,alarm\nis it sunny,weather\n")
    out = tmp_path / "out.json"
    result = runner.invoke(
        app,
        [
            "eval-retrieval",
            "--kb",
            str(csv),
            "--queries",
            str(csv),
            "--text-col",
            "text",
            "--label-col",
            "label",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert {"n", "recall@1", "recall@5", "mrr", "p50_ms", "p95_ms"} <= set(data)
    assert data["n"] == 3 and data["recall@1"] == 1.0


def test_calibrate_if_needed_knows_when_thresholds_are_current(
    settings: Settings, embedder: Embedder
) -> None:
    reindex(settings, progress=False, embedder=embedder)
    assert not _calibrated(settings)
    write_thresholds(
        settings,
        {"answer": 0.7, "faq": 0.8, "metrics": {"target_precision": settings.target_precision}},
    )
    assert _calibrated(settings)
    other = settings.model_copy(update={"target_precision": 0.99})
    assert not _calibrated(other)
