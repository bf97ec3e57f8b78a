"""The learning loop's marker: which resolved hand-overs it has read.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 16:00:00

- ``handoffs.learned_at``: when the learning loop (``chatbot.learning.loop``) read the resolved
  conversation for suggested FAQs; null while it has not. A server reads the resolved ones still
  null when it starts, so a conversation resolved while a process stopped is not lost.

Hand-overs already resolved before this revision are marked as read at their resolution time:
the loop read them then (or the process stopped), and a first start after upgrading should not
re-read a deployment's whole history.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("handoffs", sa.Column("learned_at", sa.DateTime(timezone=True),
                                        nullable=True))
    handoffs = sa.table("handoffs", sa.column("resolved_at", sa.DateTime(timezone=True)),
                        sa.column("learned_at", sa.DateTime(timezone=True)))
    op.execute(handoffs.update().where(handoffs.c.resolved_at.is_not(None))
               .values(learned_at=handoffs.c.resolved_at))


def downgrade() -> None:
    with op.batch_alter_table("handoffs") as batch:
        batch.drop_column("learned_at")
