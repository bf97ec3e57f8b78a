"""Suggested questions: what the bot offered after each answer, and which one a customer clicked.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 10:00:00

- ``messages.suggestions``: on a bot message, the FAQ ids of the questions offered as chips
  under it (comma-separated, in the order shown); null when none were offered.
- ``messages.suggested_faq_id``: on a customer message sent by clicking a chip, the FAQ id of
  the chip (the click-through rate is clicks over bot messages that offered suggestions).

Nullable columns only: added and dropped in place on SQLite too, nothing is rebuilt.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("messages", sa.Column("suggestions", sa.Text(), nullable=True))
    op.add_column("messages", sa.Column("suggested_faq_id", sa.String(length=200),
                                        nullable=True))


def downgrade() -> None:
    # Dropped in place (SQLite 3.35+ does it natively, as in 0002): a batch rebuild of
    # ``messages`` would have to recreate the tables that refer to it.
    for column in ("suggested_faq_id", "suggestions"):
        op.drop_column("messages", column)
