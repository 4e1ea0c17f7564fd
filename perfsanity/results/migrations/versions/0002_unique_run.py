"""A run is recorded once: (run_uid, concurrency) is unique in perf_records.

The run id comes from the job (``job_meta.json`` ``run_id``), so two gates of the same job dir racing
each other insert it once; the loser's transaction fails on this index and records nothing.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("uq_perf_records_run_conc", "perf_records", ["run_uid", "concurrency"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_perf_records_run_conc", table_name="perf_records")
