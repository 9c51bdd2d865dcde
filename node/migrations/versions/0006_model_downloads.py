"""model downloads

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 14:06:40.867684
"""

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.add_column(sa.Column('downloads', sa.BigInteger(), server_default='0', nullable=False))
        batch_op.create_index('ix_models_downloads', ['downloads', 'seq'], unique=False)
    # Existing catalogs: each model's total from the local per-version counts.
    op.execute(
        "UPDATE models SET downloads = COALESCE(("
        "SELECT SUM(model_stats.downloads) FROM model_versions "
        "JOIN model_stats ON model_stats.version_id = model_versions.id "
        "WHERE model_versions.model_root = models.root_id "
        "AND model_versions.author = models.author), 0)"
    )



def downgrade() -> None:
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.drop_index('ix_models_downloads')
        batch_op.drop_column('downloads')

