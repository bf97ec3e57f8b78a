"""The learning loop: suggested FAQs from agents' answers, and the questions behind them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 09:00:00

- ``faq_suggestions``: a suggested FAQ (question, answer, category), its review ``status``
  (pending | approved | rejected | merged_into_faq, CHECKed), ``count`` (conversations that asked
  it), ``linked_faq_id`` and ``link_score`` (an existing FAQ that missed these phrasings, and the
  cosine that linked them), ``record_id`` of the approved knowledge (``sug-<id>``, or the linked
  FAQ's id) and its timestamps. The integer id only grows, so ``sug-<id>`` is never reused.
- ``faq_suggestion_sources``: each customer question behind a suggestion with the agent's
  answer to it; deleted with its conversation (or message), and a customer message feeds at
  most one suggestion (unique ``message_id``), so resolving a conversation twice adds nothing.

New tables only: nothing existing is rebuilt on SQLite.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "faq_suggestions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("category", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("linked_faq_id", sa.String(length=200), nullable=True),
        sa.Column("link_score", sa.Float(), nullable=True),
        sa.Column("record_id", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'approved', 'rejected', 'merged_into_faq')",
            name=op.f("ck_faq_suggestions_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_faq_suggestions")),
    )
    op.create_index("ix_faq_suggestions_status", "faq_suggestions", ["status"])
    op.create_index("ix_faq_suggestions_updated_at", "faq_suggestions", ["updated_at"])

    op.create_table(
        "faq_suggestion_sources",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("suggestion_id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", sa.String(length=36), nullable=False),
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["suggestion_id"], ["faq_suggestions.id"],
            name=op.f("fk_faq_suggestion_sources_suggestion_id_faq_suggestions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"], ["conversations.id"],
            name=op.f("fk_faq_suggestion_sources_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"],
            name=op.f("fk_faq_suggestion_sources_message_id_messages"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_faq_suggestion_sources")),
        sa.UniqueConstraint("message_id", name=op.f("uq_faq_suggestion_sources_message_id")),
    )
    op.create_index("ix_faq_suggestion_sources_suggestion_id", "faq_suggestion_sources",
                    ["suggestion_id"])
    op.create_index("ix_faq_suggestion_sources_conversation_id", "faq_suggestion_sources",
                    ["conversation_id"])


def downgrade() -> None:
    op.drop_table("faq_suggestion_sources")
    op.drop_table("faq_suggestions")
