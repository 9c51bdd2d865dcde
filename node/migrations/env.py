"""Alembic environment: migrations run on the connection :mod:`node.db` hands in."""

from alembic import context

import node.accounts.tables
import node.catalog.tables
import node.compute.tables
import node.moderation.tables
import node.p2p.tables  # noqa: F401  (register tables on the shared metadata)
from node.db import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `civitas migrate`, not the alembic command")


def _declared(name: str | None, kind: str, _parent: object) -> bool:
    """Leave the full-text index (raw SQL in 0002) out of autogenerate's comparison."""
    return not (name or "").startswith(("models_fts", "ix_models_fulltext"))


context.configure(
    connection=connection,
    target_metadata=metadata,
    include_name=_declared,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
