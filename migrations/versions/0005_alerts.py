"""Monitoring alerts: the shared state of the frustration alert.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 09:00:00

- ``alert_states``: one row per alert (``name``, e.g. ``frustration``): whether it is firing
  (``active``), when it last fired or recovered, how often it fired, and the last evaluated
  window (conversations, frustrated ones, share). Every replica evaluates the alert; firing is a
  conditional UPDATE of this row, so a crossing sends one webhook, not one per replica.

A new table only: nothing existing is rebuilt on SQLite.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "alert_states",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("fired_count", sa.Integer(), nullable=False),
        sa.Column("evaluated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("conversations", sa.Integer(), nullable=True),
        sa.Column("frustrated", sa.Integer(), nullable=True),
        sa.Column("share", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_alert_states")),
    )


def downgrade() -> None:
    op.drop_table("alert_states")
