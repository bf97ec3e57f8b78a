"""Frustration signals: per customer message, rolled up per conversation; hand-over priority.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 10:00:00

- ``messages``: ``sentiment`` (-1..1), ``frustration`` (0..1), ``frustrated`` and ``cues``
  (comma-separated cue names) of a customer message; null on bot and agent messages, and on
  messages logged while signals were off.
- ``conversations``: the roll-up of its customer messages, kept by the conversation service
  as each one is logged: ``sentiment_avg``, ``max_frustration`` and ``frustrated`` (any message
  was), so statistics and the inbox read one row per conversation.
- ``handoffs.priority``: ``normal`` or ``high`` (a frustrated customer), CHECKed; existing
  rows become ``normal``.

Portability: ``conversations`` and ``messages`` are parents of cascading foreign keys, so on
SQLite they are never rebuilt (dropping the old copy of a parent would cascade-delete its
children): their columns are added and dropped with plain ALTER TABLE (SQLite >= 3.35 drops
columns natively). ``handoffs`` has no children, so batch mode may rebuild it on SQLite to add
the CHECK constraint; PostgreSQL gets plain ALTER TABLE for everything.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("sentiment", sa.Float(), nullable=True))
    op.add_column("messages", sa.Column("frustration", sa.Float(), nullable=True))
    op.add_column("messages", sa.Column("frustrated", sa.Boolean(), nullable=True))
    op.add_column("messages", sa.Column("cues", sa.String(length=200), nullable=True))

    op.add_column("conversations", sa.Column("sentiment_avg", sa.Float(), nullable=True))
    op.add_column("conversations", sa.Column("max_frustration", sa.Float(), nullable=True))
    op.add_column("conversations", sa.Column(
        "frustrated", sa.Boolean(), server_default=sa.false(), nullable=False))

    with op.batch_alter_table("handoffs") as batch:
        batch.add_column(sa.Column(
            "priority", sa.String(length=8), server_default="normal", nullable=False))
        batch.create_check_constraint(
            op.f("ck_handoffs_priority"), "priority IN ('normal', 'high')")


def downgrade() -> None:
    with op.batch_alter_table("handoffs") as batch:
        batch.drop_constraint(op.f("ck_handoffs_priority"), type_="check")
        batch.drop_column("priority")
    for column in ("frustrated", "max_frustration", "sentiment_avg"):
        op.drop_column("conversations", column)
    for column in ("cues", "frustrated", "frustration", "sentiment"):
        op.drop_column("messages", column)
