"""Migrations own the schema: `upgrade head` on a blank database matches
chatbot.conversations.models exactly, and `downgrade base` removes every table, on SQLite and
PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from dbfixtures import database_url  # noqa: F401
from sqlalchemy import inspect, text

from chatbot.conversations.engine import (
    alembic_config,
    current_revision,
    downgrade,
    make_engine,
    upgrade,
)
from chatbot.conversations.models import Base

TABLES = {"conversations", "messages", "retrieval_hits", "feedback", "handoffs"}


def _head(url: str) -> str:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def test_upgrade_head_on_blank_database_matches_models(database_url: str) -> None:  # noqa: F811
    engine = make_engine(database_url)
    try:
        assert current_revision(engine) is None
        upgrade(database_url, engine=engine)
        assert current_revision(engine) == _head(database_url)
        assert set(inspect(engine).get_table_names()) >= TABLES
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            diffs = compare_metadata(context, Base.metadata)
        assert diffs == [], f"migrations and models differ: {diffs}"
    finally:
        engine.dispose()


def test_downgrade_base_leaves_no_tables(database_url: str) -> None:  # noqa: F811
    engine = make_engine(database_url)
    try:
        upgrade(database_url, engine=engine)
        downgrade(database_url, "base", engine=engine)
        left = set(inspect(engine).get_table_names()) - {"alembic_version"}
        assert left == set()
        assert current_revision(engine) is None
        # and it migrates up again cleanly (the downgrade really undid everything)
        upgrade(database_url, engine=engine)
        assert set(inspect(engine).get_table_names()) >= TABLES
    finally:
        engine.dispose()


def test_upgrade_is_idempotent_and_keeps_data(database_url: str) -> None:  # noqa: F811
    engine = make_engine(database_url)
    try:
        upgrade(database_url, engine=engine)
        with engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO conversations (id, channel, started_at, status) "
                "VALUES ('c1', 'web', CURRENT_TIMESTAMP, 'open')"
            ))
        upgrade(database_url, engine=engine)
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM conversations")).scalar() == 1
    finally:
        engine.dispose()


def test_hand_overs_resolved_before_0007_count_as_read_by_the_learning_loop(
        database_url: str) -> None:  # noqa: F811
    """0007 adds ``handoffs.learned_at``: hand-overs resolved before it are marked read at their
    resolution time (no re-reading a deployment's history), open ones stay unread."""
    engine = make_engine(database_url)
    try:
        upgrade(database_url, "0006", engine=engine)
        with engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO conversations (id, channel, started_at, status) "
                "VALUES ('c1', 'web', CURRENT_TIMESTAMP, 'open')"))
            for handoff, resolved in (("h1", "'2026-11-01 10:00:00'"), ("h2", "NULL")):
                connection.execute(text(
                    "INSERT INTO handoffs (id, conversation_id, reason, requested_at, "
                    f"resolved_at) VALUES ('{handoff}', 'c1', '', CURRENT_TIMESTAMP, "
                    f"{resolved})"))
        upgrade(database_url, engine=engine)
        with engine.connect() as connection:
            rows = dict(connection.execute(text(
                "SELECT id, learned_at IS NOT NULL AND learned_at = resolved_at "
                "FROM handoffs")).all())
        assert {k: bool(v) for k, v in rows.items()} == {"h1": True, "h2": False}
    finally:
        engine.dispose()
