"""torrents

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 13:29:18.765940
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('downloads',
    sa.Column('infohash', sa.String(length=40), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('sources', sa.Text(), server_default='{}', nullable=False),
    sa.Column('resume', sa.LargeBinary(), nullable=True),
    sa.Column('added', sa.BigInteger(), nullable=False),
    sa.Column('finished', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('infohash', name=op.f('pk_downloads'))
    )
    op.create_table('torrents',
    sa.Column('infohash', sa.String(length=40), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('piece_length', sa.Integer(), nullable=False),
    sa.Column('info', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('infohash', name=op.f('pk_torrents'))
    )
    with op.batch_alter_table('torrents', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_torrents_sha256'), ['sha256'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('torrents', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_torrents_sha256'))
    op.drop_table('torrents')
    op.drop_table('downloads')
