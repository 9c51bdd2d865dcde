"""wanted files

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-26 10:00:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('wanted_files',
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=True),
    sa.Column('source', sa.String(length=64), nullable=True),
    sa.Column('added', sa.BigInteger(), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('next_try', sa.BigInteger(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('sha256', name=op.f('pk_wanted_files'))
    )
    with op.batch_alter_table('wanted_files', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_wanted_files_next_try'), ['next_try'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('wanted_files', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_wanted_files_next_try'))
    op.drop_table('wanted_files')
