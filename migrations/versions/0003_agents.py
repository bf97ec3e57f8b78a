"""Agents and their inbox: accounts, hand-over claims, live conversation events, webhooks.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 09:00:00

- ``agents``: a support-team member (name unique, the SHA-256 of their token, last seen, active).
- ``handoffs``: ``status`` (pending | claimed | resolved | handed_back, CHECKed; existing rows
  become ``resolved`` when they have ``resolved_at``, else ``pending``), ``claimed_by`` (an
  agent, SET NULL when the agent row goes) and ``claimed_at``.
- ``messages.agent_name``: who from the team wrote an agent message (the ``agent`` role is in the
  role CHECK since 0001).
- ``conversation_events``: the event log behind the customer's live stream; its growing id is
  the SSE event id (Last-Event-ID resumption).
- ``webhook_deliveries``: every outgoing webhook call and how it went.

Portability: ``handoffs`` has no children, so batch mode may rebuild it on SQLite to add the
CHECK and the foreign key (as 0002 does); ``messages`` is a parent of cascading foreign keys and
only gets a plain ADD/DROP COLUMN. PostgreSQL gets plain ALTER TABLE for everything.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents")),
        sa.UniqueConstraint("name", name=op.f("uq_agents_name")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_agents_token_hash")),
    )

    with op.batch_alter_table("handoffs") as batch:
        batch.add_column(sa.Column(
            "status", sa.String(length=16), server_default="pending", nullable=False))
        batch.add_column(sa.Column("claimed_by", sa.String(length=36), nullable=True))
        batch.add_column(sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_check_constraint(
            op.f("ck_handoffs_status"),
            "status IN ('pending', 'claimed', 'resolved', 'handed_back')")
        batch.create_foreign_key(
            op.f("fk_handoffs_claimed_by_agents"), "agents", ["claimed_by"], ["id"],
            ondelete="SET NULL")
    op.execute("UPDATE handoffs SET status = 'resolved' WHERE resolved_at IS NOT NULL")
    op.create_index("ix_handoffs_status", "handoffs", ["status"])

    op.add_column("messages", sa.Column("agent_name", sa.String(length=100), nullable=True))

    op.create_table(
        "conversation_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("conversation_id", sa.String(length=36), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"], ["conversations.id"],
            name=op.f("fk_conversation_events_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversation_events")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_conversation_events_conversation_id_id", "conversation_events",
                    ["conversation_id", "id"])

    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('pending', 'delivered', 'failed')",
                           name=op.f("ck_webhook_deliveries_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
    )
    op.create_index("ix_webhook_deliveries_created_at", "webhook_deliveries", ["created_at"])


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    op.drop_table("conversation_events")
    op.drop_column("messages", "agent_name")
    op.drop_index("ix_handoffs_status", table_name="handoffs")
    with op.batch_alter_table("handoffs") as batch:
        batch.drop_constraint(op.f("fk_handoffs_claimed_by_agents"), type_="foreignkey")
        batch.drop_constraint(op.f("ck_handoffs_status"), type_="check")
        batch.drop_column("claimed_at")
        batch.drop_column("claimed_by")
        batch.drop_column("status")
    op.drop_table("agents")
