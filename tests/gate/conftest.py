"""Fixtures for the history / gate / report tests (helpers live in ``gate_helpers``).

``store`` is parametrized over SQLite (a file in tmp_path) and PostgreSQL (``$PERFSANITY_TEST_PG_URL``,
e.g. ``postgresql+psycopg://postgres@127.0.0.1:55433/perfsanity_test``). Each PG test gets its own
schema (via the connection's ``search_path``), dropped afterwards. Without the variable the PG case is
skipped — except under CI=true, where it fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from gate_helpers import PG_ENV, in_ci
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from perfsanity.results.history import HistoryStore


def _pg_store_url(base_url: str, schema: str) -> str:
    url = make_url(base_url)
    return url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A private schema in the test PostgreSQL, as a store URL."""
    base = os.environ.get(PG_ENV)
    if not base:
        if in_ci():
            pytest.fail(f"{PG_ENV} is not set but CI=true: the PostgreSQL history tests must run in CI")
        pytest.skip(f"{PG_ENV} not set (e.g. postgresql+psycopg://postgres@127.0.0.1:55433/perfsanity_test)")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _pg_store_url(base, schema)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "history.sqlite")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def store(store_url: str) -> Iterator[HistoryStore]:
    s = HistoryStore(store_url)
    yield s
    s.close()
