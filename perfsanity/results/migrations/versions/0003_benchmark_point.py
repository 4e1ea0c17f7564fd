"""Benchmark types: every record names its point (benchmark_type, point label), and a run is unique
per point, not per concurrency (a request-rate or ISL/OSL job measures one concurrency several times).

Records from before get the plain concurrency point: type ``concurrency``, label ``c<concurrency>``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("perf_records") as batch:
        batch.add_column(sa.Column("benchmark_type", sa.String(32), nullable=False, server_default="concurrency"))
        batch.add_column(sa.Column("point", sa.String(128), nullable=False, server_default=""))
    records = sa.table("perf_records", sa.column("point", sa.String(128)), sa.column("concurrency", sa.Integer()))
    op.execute(records.update().values(point=sa.literal("c") + sa.cast(records.c.concurrency, sa.String(16))))
    op.drop_index("uq_perf_records_run_conc", table_name="perf_records")
    op.create_index("uq_perf_records_run_point", "perf_records", ["run_uid", "concurrency", "benchmark_type", "point"],
                    unique=True)


def downgrade() -> None:
    op.drop_index("uq_perf_records_run_point", table_name="perf_records")
    op.create_index("uq_perf_records_run_conc", "perf_records", ["run_uid", "concurrency"], unique=True)
    with op.batch_alter_table("perf_records") as batch:
        batch.drop_column("point")
        batch.drop_column("benchmark_type")
