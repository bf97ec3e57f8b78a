"""chatbot.conversations.engine: engines for SQLite (WAL, foreign keys, folder created) and
PostgreSQL, schema checks, and that the migrated schema enforces its constraints on both
databases."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from dbfixtures import database_url, migrated_engine  # noqa: F401
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from chatbot.config import Settings
from chatbot.conversations.engine import check_schema, make_engine, make_sessionmaker
from chatbot.conversations.models import Conversation, Message
from chatbot.errors import ConfigError


def test_sqlite_engine_creates_folder_and_sets_wal_and_foreign_keys(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path / "deep" / "var", _env_file=None)  # type: ignore[call-arg]
    engine = make_engine(settings)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert (tmp_path / "deep" / "var" / "chatbot.db").exists()
    finally:
        engine.dispose()


def test_default_database_is_sqlite_under_var_dir(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path / "v", _env_file=None)  # type: ignore[call-arg]
    expected = f"sqlite:///{(tmp_path / 'v' / 'chatbot.db').as_posix()}"
    assert settings.resolved_database_url == expected


def test_plain_postgresql_url_uses_psycopg3() -> None:
    engine = make_engine("postgresql://postgres@127.0.0.1:5432/test")
    try:
        assert engine.url.drivername == "postgresql+psycopg"
    finally:
        engine.dispose()


@pytest.mark.parametrize("url", ["not a url", "mysql://u@h/db"])
def test_bad_or_unsupported_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="CHATBOT_DATABASE_URL|not supported"):
        make_engine(url)


def test_blank_database_asks_for_db_upgrade(database_url: str) -> None:  # noqa: F811
    engine = make_engine(database_url)
    try:
        with pytest.raises(ConfigError, match="chatbot db upgrade"):
            check_schema(engine)
    finally:
        engine.dispose()


def test_migrated_schema_passes_check(migrated_engine: Engine) -> None:  # noqa: F811
    check_schema(migrated_engine)


def test_foreign_keys_are_enforced(migrated_engine: Engine) -> None:  # noqa: F811
    sessions = make_sessionmaker(migrated_engine)
    with sessions() as session, pytest.raises(IntegrityError):
        session.add(Message(id="m1", conversation_id="no-such-conversation", role="customer",
                            text="hi", created_at=datetime.now(UTC)))
        session.commit()


def test_check_constraints_reject_unknown_channel(migrated_engine: Engine) -> None:  # noqa: F811
    sessions = make_sessionmaker(migrated_engine)
    with sessions() as session, pytest.raises(IntegrityError):
        session.add(Conversation(id="c1", channel="fax", status="open",
                                 started_at=datetime.now(UTC)))
        session.commit()


def test_deleting_a_conversation_cascades_to_messages(migrated_engine: Engine) -> None:  # noqa: F811
    sessions = make_sessionmaker(migrated_engine)
    now = datetime.now(UTC)
    with sessions() as session:
        session.add(Conversation(id="c1", channel="web", status="open", started_at=now))
        session.add(Message(id="m1", conversation_id="c1", role="customer", text="hi",
                            created_at=now))
        session.commit()
    with migrated_engine.begin() as connection:
        connection.execute(text("DELETE FROM conversations WHERE id = 'c1'"))
        assert connection.execute(text("SELECT count(*) FROM messages")).scalar() == 0


def test_timestamps_round_trip_as_utc(migrated_engine: Engine) -> None:  # noqa: F811
    from chatbot.conversations.queries import to_utc

    sessions = make_sessionmaker(migrated_engine)
    when = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    with sessions() as session:
        session.add(Conversation(id="c1", channel="web", status="open", started_at=when))
        session.commit()
    with sessions() as session:
        stored = session.get(Conversation, "c1")
        assert stored is not None
        assert to_utc(stored.started_at) == when


def test_cli_db_upgrade_migrates_the_configured_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from alembic.script import ScriptDirectory
    from typer.testing import CliRunner

    from chatbot.cli import app
    from chatbot.conversations.engine import alembic_config, current_revision

    monkeypatch.setenv("CHATBOT_VAR_DIR", str(tmp_path / "var"))
    result = CliRunner().invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "database at head" in result.output
    url = f"sqlite:///{(tmp_path / 'var' / 'chatbot.db').as_posix()}"
    engine = make_engine(url)
    try:
        head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
        assert head is not None and current_revision(engine) == head
    finally:
        engine.dispose()


@pytest.mark.parametrize("command", [["db", "upgrade"], ["serve", "--no-build-index"]])
def test_cli_reports_an_unreachable_database_in_one_line(
    command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from chatbot.cli import app

    monkeypatch.setenv("CHATBOT_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 1
    assert "error: could not migrate" in result.output
    assert "Traceback" not in result.output
