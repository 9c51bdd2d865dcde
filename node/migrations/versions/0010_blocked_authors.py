"""blocked authors

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25 15:01:06.676630
"""

from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('blocked_authors',
    sa.Column('did', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.Text(), server_default='', nullable=False),
    sa.Column('added', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('did', name=op.f('pk_blocked_authors'))
    )


def downgrade() -> None:
    op.drop_table('blocked_authors')
