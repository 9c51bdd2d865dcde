"""moderation

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-25 15:52:36.103325
"""

from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('active_targets',
    sa.Column('decision_id', sa.LargeBinary(length=32), nullable=False),
    sa.Column('target', sa.String(length=80), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('value', sa.LargeBinary(length=32), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.PrimaryKeyConstraint('decision_id', 'target', name=op.f('pk_active_targets'))
    )
    with op.batch_alter_table('active_targets', schema=None) as batch_op:
        batch_op.create_index('ix_active_targets_target', ['target'], unique=False)
        batch_op.create_index(batch_op.f('ix_active_targets_value'), ['value'], unique=False)

    op.create_table('audit_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('at', sa.BigInteger(), nullable=False),
    sa.Column('actor', sa.String(length=100), nullable=False),
    sa.Column('action', sa.String(length=48), nullable=False),
    sa.Column('target', sa.String(length=80), nullable=True),
    sa.Column('detail', sa.Text(), server_default='', nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_log_at'), ['at'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_log_target'), ['target'], unique=False)

    op.create_table('counter_notices',
    sa.Column('id', sa.LargeBinary(length=32), nullable=False),
    sa.Column('notice_id', sa.LargeBinary(length=32), nullable=False),
    sa.Column('author', sa.String(length=64), nullable=False),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.Column('statement', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_counter_notices'))
    )
    with op.batch_alter_table('counter_notices', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_counter_notices_notice_id'), ['notice_id'], unique=False)

    op.create_table('decision_outcomes',
    sa.Column('decision_id', sa.LargeBinary(length=32), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), server_default='', nullable=False),
    sa.Column('at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('decision_id', name=op.f('pk_decision_outcomes'))
    )
    op.create_table('enforced_records',
    sa.Column('decision_id', sa.LargeBinary(length=32), nullable=False),
    sa.Column('record_id', sa.LargeBinary(length=32), nullable=False),
    sa.PrimaryKeyConstraint('decision_id', 'record_id', name=op.f('pk_enforced_records'))
    )
    with op.batch_alter_table('enforced_records', schema=None) as batch_op:
        batch_op.create_index('ix_enforced_records_record', ['record_id'], unique=False)

    op.create_table('model_overrides',
    sa.Column('root_id', sa.LargeBinary(length=32), nullable=False),
    sa.Column('rating', sa.String(length=8), nullable=True),
    sa.Column('poi', sa.Boolean(), nullable=True),
    sa.Column('minor', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('hidden_terms', sa.Text(), server_default='[]', nullable=False),
    sa.PrimaryKeyConstraint('root_id', name=op.f('pk_model_overrides'))
    )
    op.create_table('notice_contacts',
    sa.Column('notice_id', sa.LargeBinary(length=32), nullable=False),
    sa.Column('contact', sa.Text(), nullable=False),
    sa.Column('account', sa.String(length=64), nullable=True),
    sa.Column('address', sa.String(length=64), nullable=True),
    sa.Column('submitted', sa.BigInteger(), nullable=False),
    sa.Column('proof', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('notice_id', name=op.f('pk_notice_contacts'))
    )
    with op.batch_alter_table('notice_contacts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_notice_contacts_account'), ['account'], unique=False)
        batch_op.create_index(batch_op.f('ix_notice_contacts_address'), ['address'], unique=False)
        batch_op.create_index(batch_op.f('ix_notice_contacts_submitted'), ['submitted'], unique=False)

    op.create_table('notice_targets',
    sa.Column('notice_id', sa.LargeBinary(length=32), nullable=False),
    sa.Column('target', sa.String(length=80), nullable=False),
    sa.PrimaryKeyConstraint('notice_id', 'target', name=op.f('pk_notice_targets'))
    )
    with op.batch_alter_table('notice_targets', schema=None) as batch_op:
        batch_op.create_index('ix_notice_targets_target', ['target'], unique=False)

    op.create_table('quarantine',
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('decision_id', sa.LargeBinary(length=32), nullable=False),
    sa.Column('infohash', sa.String(length=40), nullable=True),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('in_place', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('path', sa.Text(), nullable=True),
    sa.Column('since', sa.BigInteger(), nullable=False),
    sa.Column('delete_after', sa.BigInteger(), nullable=False),
    sa.Column('deleted', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('sha256', name=op.f('pk_quarantine'))
    )
    op.create_table('reports',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('target', sa.String(length=80), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('comment', sa.Text(), server_default='', nullable=False),
    sa.Column('reporter', sa.String(length=64), nullable=True),
    sa.Column('address', sa.String(length=64), nullable=True),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=16), server_default='open', nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reports'))
    )
    with op.batch_alter_table('reports', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reports_target'), ['target'], unique=False)

    op.create_table('review_queue',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('ref', sa.LargeBinary(length=32), nullable=True),
    sa.Column('detail', sa.Text(), server_default='', nullable=False),
    sa.Column('status', sa.String(length=16), server_default='open', nullable=False),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.Column('closed_by', sa.String(length=64), nullable=True),
    sa.Column('closed', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_review_queue')),
    sa.UniqueConstraint('kind', 'ref', name='uq_review_kind_ref')
    )
    with op.batch_alter_table('review_queue', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_review_queue_created'), ['created'], unique=False)
        batch_op.create_index(batch_op.f('ix_review_queue_ref'), ['ref'], unique=False)

    op.create_table('takedown_decisions',
    sa.Column('id', sa.LargeBinary(length=32), nullable=False),
    sa.Column('node', sa.String(length=64), nullable=False),
    sa.Column('notice_id', sa.LargeBinary(length=32), nullable=False),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.Column('verdict', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('moderator', sa.String(length=100), nullable=False),
    sa.Column('targets', sa.Text(), nullable=False),
    sa.Column('note', sa.Text(), server_default='', nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_takedown_decisions'))
    )
    with op.batch_alter_table('takedown_decisions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_takedown_decisions_node'), ['node'], unique=False)
        batch_op.create_index(batch_op.f('ix_takedown_decisions_notice_id'), ['notice_id'], unique=False)

    op.create_table('takedown_notices',
    sa.Column('id', sa.LargeBinary(length=32), nullable=False),
    sa.Column('author', sa.String(length=64), nullable=False),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.Column('claimant', sa.String(length=200), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('invalid', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_takedown_notices'))
    )
    with op.batch_alter_table('takedown_notices', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_takedown_notices_author'), ['author'], unique=False)

    op.create_table('takedown_subscriptions',
    sa.Column('did', sa.String(length=64), nullable=False),
    sa.Column('url', sa.Text(), nullable=True),
    sa.Column('policy', sa.String(length=8), nullable=False),
    sa.Column('added', sa.BigInteger(), nullable=False),
    sa.Column('cursor', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.CheckConstraint("policy IN ('auto', 'review')", name=op.f('ck_takedown_subscriptions_policy')),
    sa.PrimaryKeyConstraint('did', name=op.f('pk_takedown_subscriptions'))
    )


def downgrade() -> None:
    op.drop_table('takedown_subscriptions')
    with op.batch_alter_table('takedown_notices', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_takedown_notices_author'))

    op.drop_table('takedown_notices')
    with op.batch_alter_table('takedown_decisions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_takedown_decisions_notice_id'))
        batch_op.drop_index(batch_op.f('ix_takedown_decisions_node'))

    op.drop_table('takedown_decisions')
    with op.batch_alter_table('review_queue', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_review_queue_ref'))
        batch_op.drop_index(batch_op.f('ix_review_queue_created'))

    op.drop_table('review_queue')
    with op.batch_alter_table('reports', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_reports_target'))

    op.drop_table('reports')
    op.drop_table('quarantine')
    with op.batch_alter_table('notice_targets', schema=None) as batch_op:
        batch_op.drop_index('ix_notice_targets_target')

    op.drop_table('notice_targets')
    with op.batch_alter_table('notice_contacts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_notice_contacts_submitted'))
        batch_op.drop_index(batch_op.f('ix_notice_contacts_address'))
        batch_op.drop_index(batch_op.f('ix_notice_contacts_account'))

    op.drop_table('notice_contacts')
    op.drop_table('model_overrides')
    with op.batch_alter_table('enforced_records', schema=None) as batch_op:
        batch_op.drop_index('ix_enforced_records_record')

    op.drop_table('enforced_records')
    op.drop_table('decision_outcomes')
    with op.batch_alter_table('counter_notices', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_counter_notices_notice_id'))

    op.drop_table('counter_notices')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_log_target'))
        batch_op.drop_index(batch_op.f('ix_audit_log_at'))

    op.drop_table('audit_log')
    with op.batch_alter_table('active_targets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_active_targets_value'))
        batch_op.drop_index('ix_active_targets_target')

    op.drop_table('active_targets')
