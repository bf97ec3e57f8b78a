"""Alembic environment: the URL comes from chatbot's Settings, the target from
chatbot.conversations.models.

Run through ``chatbot db upgrade`` (which passes its engine in ``config.attributes``) or plain
``alembic upgrade head`` from the repository root (which reads CHATBOT_DATABASE_URL / .env).
SQLite needs batch mode for ALTER TABLE, so ``render_as_batch`` is on for every dialect.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from chatbot.config import Settings
from chatbot.conversations.engine import make_engine
from chatbot.conversations.models import Base

config = context.config
# Only the command-line `alembic` sets up logging from the ini; the app has its own logging.
if config.config_file_name is not None and not config.attributes.get("engine"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    return config.attributes.get("database_url") or Settings().resolved_database_url


def run_migrations_offline() -> None:
    """Emit SQL to stdout (`alembic upgrade head --sql`) without a database connection."""
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = config.attributes.get("engine") or make_engine(_url())
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=True,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    if "engine" not in config.attributes:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
