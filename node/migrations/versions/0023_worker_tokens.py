"""worker_tokens: the API token (if any) that registered each compute worker

Revision ID: 0023
Revises: 0022
"""

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("compute_workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("token_id", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("compute_workers", schema=None) as batch_op:
        batch_op.drop_column("token_id")
