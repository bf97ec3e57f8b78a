"""Database fixtures shared by the serving tests: a fresh SQLite file or PostgreSQL schema.

Each PostgreSQL test gets its own schema (``search_path`` set through the connection's
``options``), dropped afterwards, so tests are isolated and can run while others use the
database. Import the fixtures into a test module with
``from dbfixtures import database_url, migrated_engine  # noqa: F401``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from chatbot.conversations.engine import make_engine, upgrade


def postgres_schema_url(base_url: str, schema: str) -> str:
    """The URL with every connection's search_path set to ``schema``."""
    url = make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


def create_schema(base_url: str) -> str:
    schema = "t_" + uuid.uuid4().hex[:12]
    admin = create_engine(base_url)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    return schema


def drop_schema(base_url: str, schema: str) -> None:
    admin = create_engine(base_url)
    with admin.begin() as connection:
        connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A blank database: a SQLite file, or a fresh PostgreSQL schema (skips when unset)."""
    if request.param == "sqlite":
        yield f"sqlite:///{(tmp_path / 'db' / 'chatbot.db').as_posix()}"
        return
    base = request.getfixturevalue("postgres_url")
    schema = create_schema(base)
    try:
        yield postgres_schema_url(base, schema)
    finally:
        drop_schema(base, schema)


@pytest.fixture
def migrated_engine(database_url: str) -> Iterator[Engine]:
    """An engine on a database migrated to head."""
    engine = make_engine(database_url)
    upgrade(database_url, engine=engine)
    try:
        yield engine
    finally:
        engine.dispose()
