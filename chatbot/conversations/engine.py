"""Database connections and schema migrations.

Owns: building the SQLAlchemy engine and session factory from ``Settings``, the SQLite
connection settings (WAL, foreign keys, busy timeout), and running Alembic programmatically
(``upgrade(settings)`` is what ``chatbot db upgrade`` and ``chatbot serve`` call), and telling
an unreachable database from a bug (``unavailable``: the edges answer the first with 503). The
schema itself lives in ``migrations/``; this module never calls ``create_all``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from chatbot.config import Settings, hide_passwords, mask_database_url
from chatbot.errors import ConfigError, DatabaseUnavailableError

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS_DIR = ROOT / "migrations"
ALEMBIC_INI = ROOT / "alembic.ini"


def _url_of(target: Settings | str) -> str:
    return target.resolved_database_url if isinstance(target, Settings) else target


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers proceed while one writer commits; NORMAL sync is safe in WAL mode
    # (a process crash loses nothing committed; only a power cut can lose the last commits).
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_engine(target: Settings | str, **kwargs: Any) -> Engine:
    """An engine for the settings' database URL (or a URL string).

    SQLite: the parent folder is created, and every connection gets WAL, foreign keys and a
    busy timeout. PostgreSQL uses psycopg 3 (``postgresql+psycopg://``) with a pool sized for
    the server's worker threads.
    """
    url_text = _url_of(target)
    try:
        url = make_url(url_text)
    except (ArgumentError, ValueError) as error:  # ValueError: a port that is not a number
        raise ConfigError(
            f"database URL {mask_database_url(url_text)!r} is not valid: "
            f"{hide_passwords(str(error))} "
            "(set CHATBOT_DATABASE_URL, e.g. sqlite:///var/chatbot.db)"
        ) from error
    backend = url.get_backend_name()
    if backend == "sqlite":
        database = url.database or ""
        options: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
        if database in ("", ":memory:") or database.startswith("file::memory:"):
            options["poolclass"] = StaticPool  # one shared connection, or each sees a blank DB
        else:
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            # Serving runs up to ~40 worker threads; SQLite serialises writes anyway.
            options.update(pool_size=20, max_overflow=40)
        options.update(kwargs)
        engine = create_engine(url, **options)
        event.listen(engine, "connect", _sqlite_on_connect)
        return engine
    if backend == "postgresql":
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")  # psycopg 3, not psycopg2
        # pre_ping: after a database restart every pooled connection is dead; each is tested
        # (one round trip) and replaced on checkout, so the app recovers without a restart.
        # pool_timeout: with the database gone, waiting 30 s for a slot only piles requests up.
        options = {"pool_size": 20, "max_overflow": 40, "pool_pre_ping": True,
                   "pool_timeout": 10}
        if "connect_timeout" not in url.query:  # a host that drops packets: fail in seconds
            options["connect_args"] = {"connect_timeout": 5}
        options.update(kwargs)
        return create_engine(url, **options)
    raise ConfigError(
        f"database backend {backend!r} is not supported: use sqlite:/// or postgresql+psycopg://"
    )


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Session factory; objects stay readable after commit (the service returns them)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def alembic_config(target: Settings | str, engine: Engine | None = None) -> Any:
    """An Alembic Config pointing at migrations/ with the URL (and engine) handed to env.py."""
    from alembic.config import Config

    config = Config(str(ALEMBIC_INI)) if ALEMBIC_INI.exists() else Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # env.py reads these attributes instead of the ini file's URL.
    config.attributes["database_url"] = _url_of(target)
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def upgrade(target: Settings | str, revision: str = "head", engine: Engine | None = None) -> None:
    """Migrate the database to ``revision`` (creates the SQLite file when missing)."""
    from alembic import command

    # Alembic announces each autogenerate plugin at INFO; only the migrations are news.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    engine = engine or make_engine(target)
    try:
        command.upgrade(alembic_config(target, engine), revision)
    except SQLAlchemyError as error:
        raise ConfigError(
            f"could not migrate {engine.url.render_as_string(hide_password=True)}: "
            f"{_first_line(error)} (check CHATBOT_DATABASE_URL and that the server is running)"
        ) from error


def downgrade(target: Settings | str, revision: str = "base", engine: Engine | None = None) -> None:
    """Migrate the database down to ``revision`` (``base`` drops every table)."""
    from alembic import command

    engine = engine or make_engine(target)
    command.downgrade(alembic_config(target, engine), revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for a blank database."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def check_schema(engine: Engine) -> None:
    """Raise ConfigError with the fix when the database has not been migrated."""
    try:
        tables = set(inspect(engine).get_table_names())
    except OperationalError as error:
        raise ConfigError(
            f"cannot open the database: {_first_line(error)} (check CHATBOT_DATABASE_URL)"
        ) from error
    if "conversations" not in tables:
        raise ConfigError("the database has no tables yet: run `chatbot db upgrade`")


def unavailable(error: BaseException) -> DatabaseUnavailableError | None:
    """The ``DatabaseUnavailableError`` for an error that means the database cannot be reached
    right now (refused or dropped connection, server shutting down, SQLite file locked, pool
    exhausted), else None: constraint violations and SQL mistakes are bugs, not outages."""
    if isinstance(error, DatabaseUnavailableError):
        return error
    if isinstance(error, OperationalError | InterfaceError | PoolTimeoutError) or (
            isinstance(error, DBAPIError) and error.connection_invalidated):
        return DatabaseUnavailableError(_what_failed(error))
    return None


def _what_failed(error: BaseException) -> str:
    """The driver's last words without where the server is ('Connection refused', 'the
    database system is starting up'): /health shows this to anyone who asks."""
    line = _first_line(error).split("(Background on this error", 1)[0]
    return line.rsplit(": ", 1)[-1].strip() or type(error).__name__


def _first_line(error: BaseException) -> str:
    """The driver's message, first line, without any password it may quote (a bad DSN)."""
    text = hide_passwords(str(getattr(error, "orig", None) or error))
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__
