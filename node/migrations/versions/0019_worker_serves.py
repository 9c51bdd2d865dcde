"""worker_serves: whom a compute worker serves (its owner's jobs, or all: a node worker)

Revision ID: 0019
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("compute_workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("serves", sa.String(8), server_default="own", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("compute_workers", schema=None) as batch_op:
        batch_op.drop_column("serves")
