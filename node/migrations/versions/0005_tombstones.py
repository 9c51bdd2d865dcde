"""tombstones

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 13:56:50.951522
"""

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('tombstones',
    sa.Column('id', sa.LargeBinary(length=32), nullable=False),
    sa.Column('target', sa.LargeBinary(length=32), nullable=False),
    sa.Column('author', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tombstones'))
    )
    with op.batch_alter_table('tombstones', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tombstones_target'), ['target'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('tombstones', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tombstones_target'))

    op.drop_table('tombstones')
