"""image_blurhashes: each image file's blurhash, computed once from the file

Revision ID: 0020
Revises: 0017
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "image_blurhashes",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("blurhash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("sha256"),
    )


def downgrade() -> None:
    op.drop_table("image_blurhashes")
