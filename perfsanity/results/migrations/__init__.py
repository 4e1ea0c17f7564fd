"""Alembic migrations of the perf-history database (SQLite and PostgreSQL).

* :func:`upgrade_to_head` brings the database behind an open connection to the newest revision, inside
  the caller's transaction (the history store calls it under its write lock, on open). It is a no-op
  when the database is already there.
* Revisions live in ``versions/`` and are frozen once released: a schema change (e.g. a new match key
  in :data:`perfsanity.plan.jobmeta.MATCH_KEY_FIELDS`) is a new revision, never an edit of an old one.
  ``0001`` is the schema perfsanity created before migrations existed; on such a database it only
  records the revision (the tables are already there).
* A database at a revision this perfsanity does not know (migrated by a newer one) is a
  :class:`~perfsanity.common.errors.PerfsanityError`.

New revision: ``alembic -c perfsanity/results/migrations/alembic.ini revision -m "what"`` (then fill in
``upgrade``/``downgrade``), with ``PERFSANITY_HISTORY`` naming a database at head.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.engine import Connection

from perfsanity.common.errors import PerfsanityError

HERE = Path(__file__).resolve().parent


def config(connection: Connection | None = None) -> Config:
    """An Alembic config for this package's scripts (``connection``: run on it instead of a URL)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(config()).get_current_head()
    assert head is not None, "no migration revisions"
    return head


def upgrade_to_head(connection: Connection, *, where: str) -> None:
    """Upgrade the database of ``connection`` to head, in its current transaction."""
    try:
        command.upgrade(config(connection), "head")
    except CommandError as exc:
        raise PerfsanityError(
            f"{where}: cannot migrate the schema ({exc}); it was probably migrated by a newer perfsanity "
            f"(this one knows up to revision {head_revision()}): upgrade perfsanity"
        ) from None
