"""compute

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-25 15:38:48.917958
"""

from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('compute_jobs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('requester_id', sa.BigInteger(), nullable=False),
    sa.Column('requester_did', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('params', sa.Text(), nullable=False),
    sa.Column('version_id', sa.LargeBinary(length=32), nullable=False),
    sa.Column('files', sa.Text(), server_default='[]', nullable=False),
    sa.Column('pixels', sa.BigInteger(), nullable=False),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.Column('updated', sa.BigInteger(), nullable=False),
    sa.Column('leased_at', sa.BigInteger(), nullable=True),
    sa.Column('finished', sa.BigInteger(), nullable=True),
    sa.Column('lease_worker', sa.String(length=64), nullable=True),
    sa.Column('lease_until', sa.BigInteger(), nullable=True),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('failures', sa.Integer(), server_default='0', nullable=False),
    sa.Column('progress', sa.Text(), server_default='{}', nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('results', sa.Text(), server_default='[]', nullable=False),
    sa.Column('worker', sa.String(length=64), nullable=True),
    sa.CheckConstraint("kind IN ('generate', 'train')", name=op.f('ck_compute_jobs_kind')),
    sa.CheckConstraint("state IN ('queued', 'leased', 'running', 'done', 'failed', 'cancelled', 'expired')", name=op.f('ck_compute_jobs_state')),
    sa.ForeignKeyConstraint(['requester_id'], ['users.id'], name=op.f('fk_compute_jobs_requester_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_compute_jobs'))
    )
    with op.batch_alter_table('compute_jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_compute_jobs_requester_id'), ['requester_id'], unique=False)
        batch_op.create_index('ix_compute_jobs_state_created', ['state', 'created'], unique=False)

    op.create_table('compute_workers',
    sa.Column('did', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('owner_id', sa.BigInteger(), nullable=False),
    sa.Column('kinds', sa.String(length=32), nullable=False),
    sa.Column('max_pixels', sa.BigInteger(), nullable=False),
    sa.Column('device', sa.String(length=16), server_default='cpu', nullable=False),
    sa.Column('registered', sa.BigInteger(), nullable=False),
    sa.Column('last_seen', sa.BigInteger(), nullable=True),
    sa.Column('jobs_done', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('jobs_failed', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('outputs', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('busy_ms', sa.BigInteger(), server_default='0', nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_compute_workers_owner_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('did', name=op.f('pk_compute_workers'))
    )
    op.create_table('compute_job_inputs',
    sa.Column('job_id', sa.BigInteger(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('caption', sa.Text(), server_default='', nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['compute_jobs.id'], name=op.f('fk_compute_job_inputs_job_id_compute_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('job_id', 'position', name=op.f('pk_compute_job_inputs'))
    )
    with op.batch_alter_table('compute_job_inputs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_compute_job_inputs_sha256'), ['sha256'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('compute_job_inputs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_compute_job_inputs_sha256'))

    op.drop_table('compute_job_inputs')
    op.drop_table('compute_workers')
    with op.batch_alter_table('compute_jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_compute_jobs_state_created')
        batch_op.drop_index(batch_op.f('ix_compute_jobs_requester_id'))

    op.drop_table('compute_jobs')
