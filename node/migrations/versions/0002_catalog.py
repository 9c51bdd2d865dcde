"""catalog

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 13:15:18.249393
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('blobs',
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('in_place', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.PrimaryKeyConstraint('sha256', name=op.f('pk_blobs'))
    )
    op.create_table('file_details',
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('header_metadata', sa.Text(), server_default='{}', nullable=False),
    sa.Column('detected_type', sa.String(length=32), nullable=True),
    sa.Column('detected_base_model', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('sha256', name=op.f('pk_file_details'))
    )
    op.create_table('image_resources',
    sa.Column('image_id', sa.LargeBinary(length=32), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=True),
    sa.Column('type', sa.String(length=16), nullable=True),
    sa.Column('hash', sa.String(length=64), nullable=True),
    sa.Column('weight', sa.String(length=32), nullable=True),
    sa.PrimaryKeyConstraint('image_id', 'position', name=op.f('pk_image_resources'))
    )
    with op.batch_alter_table('image_resources', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_image_resources_hash'), ['hash'], unique=False)

    op.create_table('images',
    sa.Column('id', sa.LargeBinary(length=32), nullable=False),
    sa.Column('int_id', sa.BigInteger(), nullable=False),
    sa.Column('author', sa.String(length=64), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('width', sa.Integer(), nullable=False),
    sa.Column('height', sa.Integer(), nullable=False),
    sa.Column('mime', sa.String(length=32), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('rating', sa.String(length=8), server_default='PG', nullable=False),
    sa.Column('version_id', sa.LargeBinary(length=32), nullable=True),
    sa.Column('meta', sa.Text(), server_default='{}', nullable=False),
    sa.Column('pdq', sa.LargeBinary(length=32), nullable=True),
    sa.Column('pdq_quality', sa.Integer(), nullable=True),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_images')),
    sa.UniqueConstraint('int_id', name=op.f('uq_images_int_id'))
    )
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_images_author'), ['author'], unique=False)
        batch_op.create_index(batch_op.f('ix_images_created'), ['created'], unique=False)
        batch_op.create_index(batch_op.f('ix_images_sha256'), ['sha256'], unique=False)
        batch_op.create_index(batch_op.f('ix_images_version_id'), ['version_id'], unique=False)

    op.create_table('model_revisions',
    sa.Column('id', sa.LargeBinary(length=32), nullable=False),
    sa.Column('root_id', sa.LargeBinary(length=32), nullable=False),
    sa.Column('author', sa.String(length=64), nullable=False),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_model_revisions'))
    )
    with op.batch_alter_table('model_revisions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_revisions_root_id'), ['root_id'], unique=False)

    op.create_table('model_stats',
    sa.Column('version_id', sa.LargeBinary(length=32), nullable=False),
    sa.Column('downloads', sa.BigInteger(), server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('version_id', name=op.f('pk_model_stats'))
    )
    op.create_table('model_tags',
    sa.Column('root_id', sa.LargeBinary(length=32), nullable=False),
    sa.Column('tag', sa.String(length=48), nullable=False),
    sa.PrimaryKeyConstraint('root_id', 'tag', name=op.f('pk_model_tags'))
    )
    with op.batch_alter_table('model_tags', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_tags_tag'), ['tag'], unique=False)

    op.create_table('model_versions',
    sa.Column('id', sa.LargeBinary(length=32), nullable=False),
    sa.Column('int_id', sa.BigInteger(), nullable=False),
    sa.Column('model_root', sa.LargeBinary(length=32), nullable=False),
    sa.Column('author', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('base_model', sa.String(length=64), nullable=False),
    sa.Column('description', sa.Text(), server_default='', nullable=False),
    sa.Column('trained_words', sa.Text(), server_default='[]', nullable=False),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_model_versions')),
    sa.UniqueConstraint('int_id', name=op.f('uq_model_versions_int_id'))
    )
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_versions_base_model'), ['base_model'], unique=False)
        batch_op.create_index(batch_op.f('ix_model_versions_model_root'), ['model_root'], unique=False)

    op.create_table('models',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('root_id', sa.LargeBinary(length=32), nullable=False),
    sa.Column('int_id', sa.BigInteger(), nullable=False),
    sa.Column('author', sa.String(length=64), nullable=False),
    sa.Column('revision_id', sa.LargeBinary(length=32), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('description', sa.Text(), server_default='', nullable=False),
    sa.Column('rating', sa.String(length=8), server_default='PG', nullable=False),
    sa.Column('license', sa.String(length=200), nullable=True),
    sa.Column('poi', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('allow_no_credit', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.Column('allow_commercial_use', sa.String(length=64), server_default='', nullable=False),
    sa.Column('allow_derivatives', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.Column('allow_different_license', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.Column('updated', sa.BigInteger(), nullable=False),
    sa.Column('search_text', sa.Text(), server_default='', nullable=False),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_models')),
    sa.UniqueConstraint('int_id', name=op.f('uq_models_int_id')),
    sa.UniqueConstraint('root_id', name=op.f('uq_models_root_id'))
    )
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_models_author'), ['author'], unique=False)
        batch_op.create_index(batch_op.f('ix_models_created'), ['created'], unique=False)
        batch_op.create_index(batch_op.f('ix_models_type'), ['type'], unique=False)

    op.create_table('version_files',
    sa.Column('version_id', sa.LargeBinary(length=32), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('int_id', sa.BigInteger(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('autov1', sa.String(length=8), nullable=True),
    sa.Column('autov2', sa.String(length=10), nullable=False),
    sa.Column('autov3', sa.String(length=64), nullable=True),
    sa.Column('blake3', sa.String(length=64), nullable=False),
    sa.Column('crc32', sa.String(length=8), nullable=False),
    sa.Column('format', sa.String(length=16), nullable=False),
    sa.Column('fp', sa.String(length=8), nullable=True),
    sa.Column('size_type', sa.String(length=8), nullable=True),
    sa.Column('is_primary', sa.Boolean(), nullable=False),
    sa.Column('infohash', sa.String(length=40), nullable=True),
    sa.Column('piece_length', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('version_id', 'sha256', name=op.f('pk_version_files'))
    )
    with op.batch_alter_table('version_files', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_version_files_autov1'), ['autov1'], unique=False)
        batch_op.create_index(batch_op.f('ix_version_files_autov2'), ['autov2'], unique=False)
        batch_op.create_index(batch_op.f('ix_version_files_autov3'), ['autov3'], unique=False)
        batch_op.create_index(batch_op.f('ix_version_files_blake3'), ['blake3'], unique=False)
        batch_op.create_index(batch_op.f('ix_version_files_crc32'), ['crc32'], unique=False)
        batch_op.create_index(batch_op.f('ix_version_files_int_id'), ['int_id'], unique=False)
        batch_op.create_index('ix_version_files_sha256', ['sha256'], unique=False)
    _create_search_index()


def _create_search_index() -> None:
    """Full-text search over models: FTS5 on SQLite, a GIN expression index on PostgreSQL."""
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE models_fts USING fts5("
            "name, search_text, content='models', content_rowid='seq')"
        )
        op.execute(
            "CREATE TRIGGER models_fts_ai AFTER INSERT ON models BEGIN "
            "INSERT INTO models_fts(rowid, name, search_text) "
            "VALUES (new.seq, new.name, new.search_text); END"
        )
        op.execute(
            "CREATE TRIGGER models_fts_ad AFTER DELETE ON models BEGIN "
            "INSERT INTO models_fts(models_fts, rowid, name, search_text) "
            "VALUES ('delete', old.seq, old.name, old.search_text); END"
        )
        op.execute(
            "CREATE TRIGGER models_fts_au AFTER UPDATE ON models BEGIN "
            "INSERT INTO models_fts(models_fts, rowid, name, search_text) "
            "VALUES ('delete', old.seq, old.name, old.search_text); "
            "INSERT INTO models_fts(rowid, name, search_text) "
            "VALUES (new.seq, new.name, new.search_text); END"
        )
    else:
        op.execute(
            "CREATE INDEX ix_models_fulltext ON models USING GIN "
            "(to_tsvector('simple', name || ' ' || search_text))"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS models_fts")
    else:
        op.execute("DROP INDEX IF EXISTS ix_models_fulltext")
    with op.batch_alter_table('version_files', schema=None) as batch_op:
        batch_op.drop_index('ix_version_files_sha256')
        batch_op.drop_index(batch_op.f('ix_version_files_int_id'))
        batch_op.drop_index(batch_op.f('ix_version_files_crc32'))
        batch_op.drop_index(batch_op.f('ix_version_files_blake3'))
        batch_op.drop_index(batch_op.f('ix_version_files_autov3'))
        batch_op.drop_index(batch_op.f('ix_version_files_autov2'))
        batch_op.drop_index(batch_op.f('ix_version_files_autov1'))

    op.drop_table('version_files')
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_models_type'))
        batch_op.drop_index(batch_op.f('ix_models_created'))
        batch_op.drop_index(batch_op.f('ix_models_author'))

    op.drop_table('models')
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_versions_model_root'))
        batch_op.drop_index(batch_op.f('ix_model_versions_base_model'))

    op.drop_table('model_versions')
    with op.batch_alter_table('model_tags', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_tags_tag'))

    op.drop_table('model_tags')
    op.drop_table('model_stats')
    with op.batch_alter_table('model_revisions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_revisions_root_id'))

    op.drop_table('model_revisions')
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_images_version_id'))
        batch_op.drop_index(batch_op.f('ix_images_sha256'))
        batch_op.drop_index(batch_op.f('ix_images_created'))
        batch_op.drop_index(batch_op.f('ix_images_author'))

    op.drop_table('images')
    with op.batch_alter_table('image_resources', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_image_resources_hash'))

    op.drop_table('image_resources')
    op.drop_table('file_details')
    op.drop_table('blobs')
