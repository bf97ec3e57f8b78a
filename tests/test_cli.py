"""CLI: retrieval commands print what they promise; bad data is one line and exit 1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


# --- secrets and retention -------------------------------------------------------------------
PASSWORD = "hunter2-Secret"


def _clean(result: Any) -> str:
    """Everything the command printed, stdout and stderr (CliRunner mixes them by default)."""
    return result.output + (getattr(result, "stderr", "") or "")


def test_config_show_masks_the_database_password_and_the_secrets(
        env: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATBOT_DATABASE_URL",
                       f"postgresql+psycopg://bob:{PASSWORD}@db.example:5432/chat")
    monkeypatch.setenv("CHATBOT_ADMIN_TOKEN", "admin-" + PASSWORD)
    monkeypatch.setenv("CHATBOT_GENERATOR_API_KEY", "key-" + PASSWORD)
    monkeypatch.setenv("CHATBOT_GENERATOR_URL", f"http://gen:{PASSWORD}@vllm.local:8000/v1")
    for args in (["config", "show"], ["config", "show", "--json"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert PASSWORD not in _clean(result)
        assert "postgresql+psycopg://bob:***@db.example:5432/chat" in result.output
    shown = json.loads(runner.invoke(app, ["config", "show", "--json"]).output)
    assert shown["CHATBOT_ADMIN_TOKEN"] == shown["CHATBOT_GENERATOR_API_KEY"] == "***"


@pytest.mark.parametrize("url", [
    f"postgresql+psycopg://bob:{PASSWORD}@127.0.0.1:1/chat",  # nothing listens on port 1
    f"postgresql+psycopg://bob:{PASSWORD}@127.0.0.1:notaport/chat",  # not a URL
    f"postgresql+psycopg://bob:{PASSWORD}@127.0.0.1:1/chat?sslmode=nonsense",
])
def test_database_errors_never_print_the_password(
        env: Settings, monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("CHATBOT_DATABASE_URL", url)
    for args in (["db", "upgrade"], ["purge", "--older-than", "30"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 1, _clean(result)
        assert PASSWORD not in _clean(result)
        assert _clean(result).strip().splitlines()[-1].startswith("error: ")


def test_db_upgrade_prints_the_url_without_its_password(postgres_url: str) -> None:
    from dbfixtures import create_schema, drop_schema, postgres_schema_url
    from sqlalchemy.engine import make_url

    schema = create_schema(postgres_url)
    try:
        # The test server trusts local connections, so any password is accepted.
        url = make_url(postgres_schema_url(postgres_url, schema)).set(password=PASSWORD)
        result = runner.invoke(app, ["db", "upgrade"], env={
            "CHATBOT_DATABASE_URL": url.render_as_string(hide_password=False)})
        assert result.exit_code == 0, _clean(result)
        assert PASSWORD not in _clean(result)
        assert ":***@" in result.output and result.output.startswith("database at head: ")
    finally:
        drop_schema(postgres_url, schema)


def test_purge_deletes_old_conversations(env: Settings) -> None:
    from datetime import timedelta

    from sqlalchemy import update
    from standin import StandInPipeline

    from chatbot.conversations.engine import make_engine
    from chatbot.conversations.models import Conversation, Message, utcnow
    from chatbot.conversations.service import ChatService

    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    nothing = runner.invoke(app, ["purge"])  # CHATBOT_RETENTION_DAYS is 0: keep forever
    assert nothing.exit_code == 1 and "CHATBOT_RETENTION_DAYS is 0" in _clean(nothing)
    engine = make_engine(env)
    try:
        service = ChatService(env, StandInPipeline(), engine)
        old = service.chat("how long is delivery").conversation_id
        new = service.chat("do you ship to canada").conversation_id
        then = utcnow() - timedelta(days=45)
        with engine.begin() as connection:
            connection.execute(update(Conversation).where(Conversation.id == old)
                               .values(started_at=then))
            connection.execute(update(Message).where(Message.conversation_id == old)
                               .values(created_at=then))
        result = runner.invoke(app, ["purge", "--older-than", "30"])
        assert result.exit_code == 0, _clean(result)
        assert result.output.strip() == "deleted 1 conversation(s) inactive for more than 30 days"
        assert [c.id for c in service.list_conversations()] == [new]
        zero = runner.invoke(app, ["purge", "--older-than", "0"])
        assert zero.exit_code == 1 and "positive number of days" in _clean(zero)
    finally:
        engine.dispose()


# --- help and errors of every command ---------------------------------------------------------


def _commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every command and group of the CLI, with its path of names."""
    found = [(path, group)]
    for name, command in getattr(group, "commands", {}).items():
        found += _commands(command, (*path, name))
    return found


def test_every_command_and_option_has_help() -> None:
    import typer

    commands = _commands(typer.main.get_command(app))
    names = {" ".join(path) for path, _ in commands}
    assert {"reindex", "eval-demo", "finetune generator", "finetune embedder", "agents add",
            "agents list", "agents remove", "purge", "db upgrade", "config show"} <= names
    for path, command in commands:
        assert command.help and command.help.strip(), path
        for param in command.params:
            if param.name != "help" and param.param_type_name == "option":
                assert getattr(param, "help", None), (path, param.name)
        shown = runner.invoke(app, [*path, "--help"])
        assert shown.exit_code == 0 and "Usage:" in shown.output, path


def test_a_bad_setting_is_one_line_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATBOT_PORT", "port-" + PASSWORD)
    monkeypatch.setenv("CHATBOT_TOP_K", "many")
    result = runner.invoke(app, ["config", "show"])
    assert result.exit_code == 1 and "Traceback" not in _clean(result)
    line = result.output.strip()  # stdout and stderr together: nothing but the error line
    assert len(line.splitlines()) == 1 and line.startswith("error: bad settings: ")
    assert "CHATBOT_PORT: " in line and "CHATBOT_TOP_K: " in line
    assert PASSWORD not in _clean(result)  # values are not echoed: one may be a secret


def test_finetune_embedder_tuning_writes_a_tuning_that_reindex_then_uses(
        env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "tuning"
    result = runner.invoke(app, ["finetune", "embedder", "--tuning", "--epochs", "1",
                                 "--batch-size", "4", "--train-layers", "1", "--output",
                                 str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output[result.output.index("{"):])
    assert metrics["train_layers"] == 1 and metrics["steps"] >= 1
    assert metrics["use_it"].startswith(f"CHATBOT_EMBEDDER_TUNING={out}")
    monkeypatch.setenv("CHATBOT_EMBEDDER_TUNING", str(out))
    assert runner.invoke(app, ["reindex"]).exit_code == 0
    manifest = json.loads(next((env.var_dir / "index").glob("*/manifest.json")).read_text())
    assert manifest["embedding_model"].startswith("all-MiniLM-L6-v2+tuned-")


def test_finetune_embedder_tuning_refuses_labelled_data_in_one_line(env: Settings,
                                                                    tmp_path: Path) -> None:
    result = runner.invoke(app, ["finetune", "embedder", "--tuning", "--labelled",
                                 str(tmp_path / "x.csv")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith("error: ")
    assert "--tuning trains on the knowledge base's phrasings" in result.output
    assert "Traceback" not in result.output
