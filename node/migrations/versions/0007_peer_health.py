"""peer health

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 14:16:41.373138
"""

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('peers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('their_high', sa.BigInteger(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('failures', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('failing_since', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('next_try', sa.BigInteger(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('peers', schema=None) as batch_op:
        batch_op.drop_column('next_try')
        batch_op.drop_column('failing_since')
        batch_op.drop_column('failures')
        batch_op.drop_column('their_high')

