"""nodes

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25 14:24:25.836374
"""

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('nodes',
    sa.Column('did', sa.String(length=64), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('software', sa.String(length=64), nullable=False),
    sa.Column('record_id', sa.LargeBinary(length=32), nullable=False),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('did', name=op.f('pk_nodes'))
    )


def downgrade() -> None:
    op.drop_table('nodes')
