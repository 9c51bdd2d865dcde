"""peers

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 13:46:24.750625
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('peers',
    sa.Column('did', sa.String(length=64), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('name', sa.String(length=200), server_default='', nullable=False),
    sa.Column('epoch', sa.String(length=64), nullable=True),
    sa.Column('cursor', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('pushed', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('blocked', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('added', sa.BigInteger(), nullable=False),
    sa.Column('last_sync', sa.BigInteger(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('did', name=op.f('pk_peers'))
    )


def downgrade() -> None:
    op.drop_table('peers')
