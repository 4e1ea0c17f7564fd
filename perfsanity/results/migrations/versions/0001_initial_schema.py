"""The schema perfsanity created before migrations: perf_records (one row per run and concurrency) and
perfsanity_meta (schema_version = 1).

A database made by that perfsanity already has both tables: then nothing is created and only the
revision is recorded. Frozen: later schema changes are later revisions.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# (name, type, nullable) in column order, as of schema version 1
_RECORD_COLUMNS: tuple[tuple[str, sa.types.TypeEngine, bool], ...] = (
    ("run_uid", sa.String(36), False),
    *((name, sa.String(255), False) for name in ("config_name", "model")),
    *((name, sa.String(64), False) for name in ("precision", "gpu_type", "backend", "mode")),
    *((name, sa.Integer(), False) for name in ("num_ctx_servers", "num_gen_servers", "ctx_tp", "ctx_pp", "ctx_ep")),
    ("ctx_attention_dp", sa.Boolean(), False),
    *((name, sa.Integer(), False) for name in ("gen_tp", "gen_pp", "gen_ep")),
    ("gen_attention_dp", sa.Boolean(), False),
    *((name, sa.Integer(), False) for name in ("isl", "osl", "concurrency", "total_gpus")),
    ("commit", sa.String(64), False),
    ("branch", sa.String(255), False),
    ("build_url", sa.Text(), False),
    ("job_id", sa.String(255), False),
    ("ts", sa.DateTime(timezone=True), False),
    ("post_merge", sa.Boolean(), False),
    ("metrics", sa.JSON(), False),
    *((f"m_{m}", sa.Float(), True) for m in ("output_token_throughput", "total_token_throughput", "ttft_median",
                                             "ttft_p99", "tpot_median", "itl_median")),
    ("valid", sa.Boolean(), False),
    ("invalid_reason", sa.Text(), False),
    ("gate_verdicts", sa.JSON(), True),
    ("is_regression", sa.Boolean(), False),
)


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "perf_records" not in existing:
        op.create_table(
            "perf_records",
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            *(sa.Column(name, type_, nullable=nullable) for name, type_, nullable in _RECORD_COLUMNS),
        )
        op.create_index("ix_perf_records_run_uid", "perf_records", ["run_uid"])
        op.create_index("ix_perf_records_config_conc_ts", "perf_records", ["config_name", "concurrency", "ts"])
    if "perfsanity_meta" not in existing:
        meta = op.create_table(
            "perfsanity_meta",
            sa.Column("key", sa.String(64), primary_key=True),
            sa.Column("value", sa.Text(), nullable=False),
        )
        op.bulk_insert(meta, [{"key": "schema_version", "value": "1"}])


def downgrade() -> None:
    op.drop_table("perfsanity_meta")
    op.drop_index("ix_perf_records_config_conc_ts", table_name="perf_records")
    op.drop_index("ix_perf_records_run_uid", table_name="perf_records")
    op.drop_table("perf_records")
