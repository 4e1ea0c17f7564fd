"""Alembic environment: runs the migrations on the connection the history store passes in
(``config.attributes["connection"]``), or, from the ``alembic`` command line, on ``$PERFSANITY_HISTORY``."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import context
from sqlalchemy import create_engine

connection = context.config.attributes.get("connection")


def _run(conn: object) -> None:
    context.configure(connection=conn, target_metadata=None, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("perfsanity history migrations run online only (against a database)")
if connection is not None:
    _run(connection)
else:  # the alembic CLI: PERFSANITY_HISTORY is a path (SQLite) or a SQLAlchemy URL
    url = os.environ.get("PERFSANITY_HISTORY", "")
    if not url:
        raise SystemExit("set PERFSANITY_HISTORY to the history database (a SQLite path or a URL)")
    engine = create_engine(url if "://" in url else f"sqlite:///{Path(url).expanduser().resolve()}")
    with engine.connect() as conn:
        _run(conn)
        conn.commit()
