"""key_rotation

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-25 16:00:32.320544
"""

from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('identities',
    sa.Column('did', sa.String(length=64), nullable=False),
    sa.Column('identity', sa.String(length=64), nullable=False),
    sa.Column('frozen', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.PrimaryKeyConstraint('did', name=op.f('pk_identities'))
    )
    with op.batch_alter_table('identities', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_identities_identity'), ['identity'], unique=False)

    op.create_table('key_commitments',
    sa.Column('record_id', sa.LargeBinary(length=32), nullable=False),
    sa.Column('did', sa.String(length=64), nullable=False),
    sa.Column('commitment', sa.LargeBinary(length=32), nullable=False),
    sa.PrimaryKeyConstraint('record_id', name=op.f('pk_key_commitments'))
    )
    with op.batch_alter_table('key_commitments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_key_commitments_did'), ['did'], unique=False)

    op.create_table('key_rotations',
    sa.Column('id', sa.LargeBinary(length=32), nullable=False),
    sa.Column('old_did', sa.String(length=64), nullable=False),
    sa.Column('new_did', sa.String(length=64), nullable=False),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.Column('countersigned', sa.Boolean(), nullable=False),
    sa.Column('valid', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_key_rotations'))
    )
    with op.batch_alter_table('key_rotations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_key_rotations_new_did'), ['new_did'], unique=False)
        batch_op.create_index(batch_op.f('ix_key_rotations_old_did'), ['old_did'], unique=False)

    op.create_table('rotation_verdicts',
    sa.Column('rotation_id', sa.LargeBinary(length=32), nullable=False),
    sa.Column('keep', sa.Boolean(), nullable=False),
    sa.Column('at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('rotation_id', name=op.f('pk_rotation_verdicts'))
    )


def downgrade() -> None:
    op.drop_table('rotation_verdicts')
    with op.batch_alter_table('key_rotations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_key_rotations_old_did'))
        batch_op.drop_index(batch_op.f('ix_key_rotations_new_did'))

    op.drop_table('key_rotations')
    with op.batch_alter_table('key_commitments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_key_commitments_did'))

    op.drop_table('key_commitments')
    with op.batch_alter_table('identities', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_identities_identity'))

    op.drop_table('identities')
