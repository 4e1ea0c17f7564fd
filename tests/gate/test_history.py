"""History store: records, queries, validity, concurrency (real processes), bad input."""

from __future__ import annotations

import multiprocessing
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from gate_helpers import CONFIG, make_keys, make_run
from gate_workers import write_runs

from perfsanity.common.errors import ConfigError, PerfsanityError
from perfsanity.common.redact import mask_url
from perfsanity.plan.jobmeta import JobMeta, MatchKeys, RunMeta
from perfsanity.results.history import HistoryStore

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def test_add_run_stores_one_typed_record_per_concurrency(store):
    run = make_run({8: {"output_token_throughput": 900.0, "ttft_median": 80.0},
                    64: {"output_token_throughput": 5000.0, "ttft_p99": 400.0}})
    ids = store.add_run(make_keys(), run, RunMeta(commit="abc123", branch="main", build_url="https://ci/job/1",
                                                  job_id="1", timestamp=T0, post_merge=True))
    assert len(ids) == 2 and len(set(ids)) == 2
    recs = store.query({"config_name": CONFIG})
    assert [r.keys.concurrency for r in recs] == [8, 64]
    r8 = recs[0]
    assert r8.id == ids[0]
    assert r8.keys == make_keys(concurrency=8)
    assert r8.metrics == {"output_token_throughput": 900.0, "ttft_median": 80.0}
    assert r8.timestamp == T0 and r8.timestamp.tzinfo is not None
    assert (r8.commit, r8.branch, r8.job_id, r8.post_merge, r8.valid) == ("abc123", "main", "1", True, True)
    assert store.query(make_keys(concurrency=64))[0].metrics["ttft_p99"] == 400.0


def test_per_concurrency_keys_and_mismatches(store):
    run = make_run({8: {"output_token_throughput": 1.0}, 64: {"output_token_throughput": 2.0}})
    keys = {8: make_keys(concurrency=8), 64: make_keys(concurrency=64)}
    assert len(store.add_run(keys, run, RunMeta(timestamp=T0))) == 2
    with pytest.raises(ConfigError, match="no match keys for concurrency 64"):
        store.add_run({8: keys[8]}, run, RunMeta(timestamp=T0))
    with pytest.raises(ConfigError, match="config_name"):
        store.add_run(make_keys("another-config"), run, RunMeta(timestamp=T0))


def test_query_filters(store):
    run = make_run({64: {"output_token_throughput": 1.0}})
    for day, post in ((0, True), (1, False), (2, True), (3, True)):
        store.add_run(make_keys(), run, RunMeta(timestamp=T0 + timedelta(days=day), post_merge=post,
                                                branch="main" if day < 3 else "release"))
    keys = make_keys()
    assert len(store.query(keys)) == 4
    assert len(store.query(keys, post_merge_only=True)) == 3
    assert len(store.query(keys, since=T0 + timedelta(days=1))) == 3  # since inclusive
    assert len(store.query(keys, until=T0 + timedelta(days=2))) == 2  # until exclusive
    assert len(store.query(keys, branch="release")) == 1
    newest = store.query(keys, limit=2)
    assert [r.timestamp for r in newest] == [T0 + timedelta(days=2), T0 + timedelta(days=3)]
    assert store.query(make_keys(concurrency=8)) == []
    assert store.configs() == [CONFIG]


def test_mark_invalid_hides_record_from_baseline_queries(store):
    ids = store.add_run(make_keys(), make_run({64: {"output_token_throughput": 1.0}}), RunMeta(timestamp=T0))
    store.mark_invalid(ids[0], "GPU 3 throttled")
    assert store.query(make_keys()) == []
    (rec,) = store.query(make_keys(), valid_only=False)
    assert (rec.valid, rec.invalid_reason) == (False, "GPU 3 throttled")
    store.mark_valid(ids[0])
    assert len(store.query(make_keys())) == 1
    with pytest.raises(PerfsanityError, match="no record with id 999999"):
        store.mark_invalid(999999, "x")
    with pytest.raises(ConfigError, match="reason"):
        store.mark_invalid(ids[0], "  ")


def test_failed_runs_and_empty_concurrencies_are_stored_invalid(store):
    failed = make_run({64: {"output_token_throughput": 1.0}}, status="failed")
    ids = store.add_run(make_keys(), failed, RunMeta(timestamp=T0))
    assert store.get(ids[0]).valid is False
    assert store.get(ids[0]).invalid_reason.startswith("run failed")
    from gate_helpers import make_result

    empty = make_run({}).model_copy(update={"results": (make_result(64, {}).model_copy(update={"completed": 0}),)})
    (rid,) = store.add_run(make_keys(), empty, RunMeta(timestamp=T0))
    assert store.get(rid).invalid_reason == "no completed requests"


def test_gate_verdicts_are_recorded(store):
    (rid,) = store.add_run(make_keys(), make_run({64: {"output_token_throughput": 1.0}}), RunMeta(timestamp=T0))
    store.set_gate_verdicts(rid, {"output_token_throughput": "WARN", "ttft_median": "PASS"})
    rec = store.get(rid)
    assert rec.is_regression and rec.gate_verdicts["output_token_throughput"] == "WARN"


def test_timestamps_must_be_aware(store):
    with pytest.raises(ConfigError, match="timezone-aware"):
        store.add_run(make_keys(), make_run({64: {"output_token_throughput": 1.0}}),
                      RunMeta(timestamp=datetime(2025, 1, 1)))


def test_build_url_credentials_are_not_stored(store):
    (rid,) = store.add_run(make_keys(), make_run({64: {"output_token_throughput": 1.0}}),
                           RunMeta(timestamp=T0, build_url="https://bot:s3cret@ci.example/job/7/"))
    assert store.get(rid).build_url == "https://ci.example/job/7/"
    assert mask_url("https://ci/x", keep_user=False) == "https://ci/x"


@pytest.mark.slow  # seconds each: a real engine/tool process or many subprocesses
def test_parallel_writers_lose_nothing(store_url):
    """4 processes start together on a fresh database (concurrent schema creation) and each adds 25 runs."""
    workers, runs = 4, 25
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Manager().Barrier(workers)
    with ctx.Pool(workers) as pool:
        results = [pool.apply_async(write_runs, (store_url, w, runs, barrier)) for w in range(workers)]
        id_lists = [r.get(timeout=240) for r in results]
    all_ids = [i for ids in id_lists for i in ids]
    assert len(all_ids) == workers * runs * 2
    assert len(set(all_ids)) == len(all_ids)
    with HistoryStore(store_url) as store:
        records = store.query({"config_name": CONFIG}, valid_only=False)
    assert len(records) == workers * runs * 2
    assert {r.job_id for r in records} == {f"w{w}-r{i}" for w in range(workers) for i in range(runs)}
    assert sorted(r.id for r in records) == sorted(all_ids)


def test_sqlite_uses_wal(tmp_path):
    path = tmp_path / "h.sqlite"
    with HistoryStore(path) as store:
        store.add_run(make_keys(), make_run({64: {"output_token_throughput": 1.0}}), RunMeta(timestamp=T0))
    con = sqlite3.connect(path)
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        con.close()


def test_default_location_comes_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("PERFSANITY_HISTORY", str(tmp_path / "sub" / "dir" / "h.sqlite"))
    with HistoryStore() as store:
        assert store.count() == 0
    assert (tmp_path / "sub" / "dir" / "h.sqlite").exists()


def test_schema_creation_is_idempotent(store_url):
    for _ in range(3):
        with HistoryStore(store_url) as store:
            store.add_run(make_keys(), make_run({64: {"output_token_throughput": 1.0}}), RunMeta(timestamp=T0))
    with HistoryStore(store_url) as store:
        assert store.count() == 3


@pytest.mark.parametrize("url, message", [
    ("mysql://u:pw@h/db", "unsupported database 'mysql'"),
    ("postgresql+nosuchdriver://u@h/db", "driver missing"),
    ("not a url://", "not a database URL"),
])
def test_bad_urls_are_one_clear_error(url, message):
    with pytest.raises(PerfsanityError, match=message) as info:
        HistoryStore(url)
    assert "pw" not in str(info.value)


def test_unreachable_postgres_is_one_clear_error_without_password():
    store = HistoryStore("postgresql+psycopg://user:hunter2@127.0.0.1:1/db?connect_timeout=2")
    with pytest.raises(PerfsanityError) as info:
        store.query()
    assert "hunter2" not in str(info.value)
    assert "***" in str(info.value)
    assert mask_url("postgresql+psycopg://u:pw@h/db") == "postgresql+psycopg://u:***@h/db"


def test_match_keys_validation(tmp_path):
    with pytest.raises(ConfigError, match="ctx_tp"):
        MatchKeys(**(make_keys().as_dict() | {"ctx_tp": "4"}))
    with pytest.raises(ConfigError, match="gen_attention_dp"):
        MatchKeys(**(make_keys().as_dict() | {"gen_attention_dp": 1}))
    with pytest.raises(ConfigError, match="unknown key"):
        MatchKeys.from_mapping(make_keys().as_dict() | {"tp": 4})
    with pytest.raises(ConfigError, match="missing key"):
        MatchKeys.from_mapping({"config_name": "x"})
    assert MatchKeys.from_mapping(make_keys().as_dict()) == make_keys()
    with HistoryStore(tmp_path / "h.sqlite") as store, pytest.raises(ConfigError, match="unknown match key"):
        store.query({"configname": "x"})


def test_job_meta_errors_name_the_file_and_key(tmp_path: Path):
    p = tmp_path / "job_meta.json"
    p.write_text('{"keys": {"config_name": "x"}}')
    with pytest.raises(ConfigError) as info:
        JobMeta.read(p)
    assert str(p) in str(info.value) and "keys" in str(info.value)
    p.write_text("{not json")
    with pytest.raises(ConfigError, match="not readable JSON"):
        JobMeta.read(p)
    with pytest.raises(ConfigError, match="file not found"):
        JobMeta.read(tmp_path / "missing.json")


# ---------------------------------------------------------------------------------- schema migrations

# Verbatim what the perfsanity before Alembic created (``_Base.metadata.create_all`` on SQLite; on
# PostgreSQL the id is SERIAL and ts TIMESTAMP WITH TIME ZONE), with its schema_version row.
_PRE_ALEMBIC_DDL = """
CREATE TABLE perf_records (
    id {id_type} NOT NULL, run_uid VARCHAR(36) NOT NULL, config_name VARCHAR(255) NOT NULL,
    model VARCHAR(255) NOT NULL, precision VARCHAR(64) NOT NULL, gpu_type VARCHAR(64) NOT NULL,
    backend VARCHAR(64) NOT NULL, mode VARCHAR(64) NOT NULL, num_ctx_servers INTEGER NOT NULL,
    num_gen_servers INTEGER NOT NULL, ctx_tp INTEGER NOT NULL, ctx_pp INTEGER NOT NULL, ctx_ep INTEGER NOT NULL,
    ctx_attention_dp BOOLEAN NOT NULL, gen_tp INTEGER NOT NULL, gen_pp INTEGER NOT NULL, gen_ep INTEGER NOT NULL,
    gen_attention_dp BOOLEAN NOT NULL, isl INTEGER NOT NULL, osl INTEGER NOT NULL, concurrency INTEGER NOT NULL,
    total_gpus INTEGER NOT NULL, "commit" VARCHAR(64) NOT NULL, branch VARCHAR(255) NOT NULL,
    build_url TEXT NOT NULL, job_id VARCHAR(255) NOT NULL, ts {ts_type} NOT NULL, post_merge BOOLEAN NOT NULL,
    metrics JSON NOT NULL, m_output_token_throughput FLOAT, m_total_token_throughput FLOAT, m_ttft_median FLOAT,
    m_ttft_p99 FLOAT, m_tpot_median FLOAT, m_itl_median FLOAT, valid BOOLEAN NOT NULL, invalid_reason TEXT NOT NULL,
    gate_verdicts JSON, is_regression BOOLEAN NOT NULL, PRIMARY KEY (id)
);
CREATE INDEX ix_perf_records_config_conc_ts ON perf_records (config_name, concurrency, ts);
CREATE INDEX ix_perf_records_run_uid ON perf_records (run_uid);
CREATE TABLE perfsanity_meta ("key" VARCHAR(64) NOT NULL, value TEXT NOT NULL, PRIMARY KEY ("key"));
INSERT INTO perfsanity_meta ("key", value) VALUES ('schema_version', '1');
"""
_PRE_ALEMBIC_ROW = """
INSERT INTO perf_records (run_uid, config_name, model, precision, gpu_type, backend, mode, num_ctx_servers,
    num_gen_servers, ctx_tp, ctx_pp, ctx_ep, ctx_attention_dp, gen_tp, gen_pp, gen_ep, gen_attention_dp, isl, osl,
    concurrency, total_gpus, "commit", branch, build_url, job_id, ts, post_merge, metrics,
    m_output_token_throughput, valid, invalid_reason, is_regression)
VALUES (:uid, :config_name, :model, :precision, :gpu_type, :backend, :mode, :num_ctx_servers, :num_gen_servers,
    :ctx_tp, :ctx_pp, :ctx_ep, :ctx_attention_dp, :gen_tp, :gen_pp, :gen_ep, :gen_attention_dp, :isl, :osl,
    :concurrency, :total_gpus, 'old1', 'main', '', '41', :ts, :post_merge, '{"output_token_throughput": 777.0}',
    777.0, :valid, '', :is_regression)
"""


def _engine_for(store_url: str):
    from sqlalchemy import create_engine

    return create_engine(store_url if "://" in store_url else f"sqlite:///{store_url}")


def _make_pre_alembic_db(store_url: str) -> None:
    from sqlalchemy import text

    engine = _engine_for(store_url)
    pg = engine.dialect.name == "postgresql"
    ddl = _PRE_ALEMBIC_DDL.format(id_type="SERIAL" if pg else "INTEGER",
                                  ts_type="TIMESTAMP WITH TIME ZONE" if pg else "DATETIME")
    ts = T0 if pg else T0.replace(tzinfo=None)  # the old store kept naive UTC on SQLite
    with engine.begin() as conn:
        for statement in filter(str.strip, ddl.split(";")):
            conn.execute(text(statement))
        conn.execute(text(_PRE_ALEMBIC_ROW), {"uid": "u-old", "ts": ts, "post_merge": True, "valid": True,
                                              "is_regression": False, **make_keys(concurrency=64).as_dict()})
    engine.dispose()


def _alembic_revision(store_url: str) -> str | None:
    from sqlalchemy import text

    engine = _engine_for(store_url)
    with engine.connect() as conn:
        rev = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one_or_none()
    engine.dispose()
    return rev


def test_database_made_before_migrations_is_adopted_and_keeps_working(store_url):
    from perfsanity.results.migrations import head_revision

    _make_pre_alembic_db(store_url)
    with HistoryStore(store_url) as store:
        (old,) = store.query(make_keys(concurrency=64))
        assert (old.commit, old.job_id, old.timestamp, old.metrics) == ("old1", "41", T0,
                                                                        {"output_token_throughput": 777.0})
        (new_id,) = store.add_run(make_keys(), make_run({64: {"output_token_throughput": 800.0}}),
                                  RunMeta(timestamp=T0 + timedelta(days=1), post_merge=True))
        assert [r.metrics["output_token_throughput"] for r in store.query(make_keys(concurrency=64))] == [777.0, 800.0]
        assert new_id > old.id
    assert _alembic_revision(store_url) == head_revision()
    with HistoryStore(store_url) as again:  # already at head: opening again changes nothing
        assert again.count() == 2


def test_fresh_database_is_created_by_the_migrations_and_matches_the_orm(store_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from perfsanity.results.history import _Base
    from perfsanity.results.migrations import head_revision

    with HistoryStore(store_url) as store:
        assert store.count() == 0
    assert _alembic_revision(store_url) == head_revision()
    engine = _engine_for(store_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), _Base.metadata)
    engine.dispose()
    assert diff == []  # the ORM columns (derived from MATCH_KEY_FIELDS) are exactly what revision 0001 made


def test_database_from_a_newer_perfsanity_is_refused(store_url):
    from sqlalchemy import text

    with HistoryStore(store_url) as store:
        store.count()
    engine = _engine_for(store_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'f00d'"))
    engine.dispose()
    with HistoryStore(store_url) as store, pytest.raises(PerfsanityError, match="newer perfsanity") as info:
        store.count()
    assert "f00d" in str(info.value)


def test_job_meta_json_format_is_unchanged(tmp_path: Path):
    """job_meta.json as the store's writer produced it before the schema moved to plan.jobmeta."""
    keys = ('"config_name": "c", "model": "m", "precision": "fp8", "gpu_type": "GB200", "backend": "trtllm", '
            '"mode": "e2e", "num_ctx_servers": 1, "num_gen_servers": 2, "ctx_tp": 4, "ctx_pp": 1, "ctx_ep": 4, '
            '"ctx_attention_dp": true, "gen_tp": 8, "gen_pp": 1, "gen_ep": 8, "gen_attention_dp": false, '
            '"isl": 1024, "osl": 1024, "total_gpus": 20')
    before = (f'{{"keys": {{{keys}}}, "commit": "abc", "branch": "", "build_url": "", "job_id": "", '
              '"timestamp": "2025-01-02T00:00:00Z", "gate": {"metrics": ["x"]}}')
    import json

    src = tmp_path / "before.json"
    src.write_text(before)
    out = tmp_path / "job_meta.json"
    JobMeta.read(src).write(out)
    assert out.read_text() == json.dumps(json.loads(before), indent=2) + "\n"
    assert JobMeta.read(out).match_keys(64) == MatchKeys.from_mapping({**json.loads(before)["keys"], "concurrency": 64})


def test_locked_sqlite_is_retried_within_the_budget_then_one_clear_error(tmp_path: Path, monkeypatch):
    import threading
    import time

    from perfsanity.results import history

    monkeypatch.setattr(history, "_BUSY_TIMEOUT_S", 0.1)  # each statement gives up fast: the retry does the waiting
    path = tmp_path / "h.sqlite"
    run = make_run({64: {"output_token_throughput": 1.0}})
    with HistoryStore(path, lock_budget_s=1.5) as store:
        store.count()  # schema in place
        holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        with pytest.raises(PerfsanityError, match="adding records failed: database is locked"):
            store.add_run(make_keys(), run, RunMeta(timestamp=T0))
        assert 1.4 < time.monotonic() - started < 10  # kept retrying for the budget, then stopped
        release = threading.Timer(0.5, lambda: holder.execute("COMMIT"))
        release.start()
        try:
            assert len(store.add_run(make_keys(), run, RunMeta(timestamp=T0))) == 1  # retried until the lock went
        finally:
            release.join()
            holder.close()
        assert store.count() == 1


def test_migration_0003_keys_old_records_by_their_concurrency_point_and_widens_the_unique_index(store_url):
    """A database at revision 0002 with a record: upgraded, the record is the plain point c64; a run may
    then hold several points at one concurrency, and each point once."""
    from alembic import command
    from sqlalchemy import inspect, text

    from perfsanity.load.results_json import ConcurrencyResult, RunResult
    from perfsanity.results import migrations
    from perfsanity.results.history import AlreadyRecorded

    _make_pre_alembic_db(store_url)
    engine = _engine_for(store_url)
    with engine.begin() as conn:
        command.upgrade(migrations.config(conn), "0002")
    engine.dispose()
    assert _alembic_revision(store_url) == "0002"

    def point(label: str, rate: float) -> ConcurrencyResult:
        return ConcurrencyResult(concurrency=64, client="aiperf", requested=8, completed=8, failed=0,
                                 point=label, benchmark_type="request_rate", request_rate=rate,
                                 output_token_throughput=100.0 * rate)

    run = RunResult(config_name=CONFIG, backend="trtllm", mode="e2e", total_gpus=12, status="passed",
                    results=(point("rps1.c64", 1.0), point("rps2.c64", 2.0)))
    with HistoryStore(store_url) as store:
        (old,) = store.query(make_keys(concurrency=64))  # the plain point's key finds the old record
        assert (old.keys.benchmark_type, old.keys.point, old.commit) == ("concurrency", "c64", "old1")
        ids = store.add_run(make_keys(), run, RunMeta(timestamp=T0 + timedelta(days=1), run_id="run-1"))
        assert len(ids) == 2
        by_point = {r.keys.point: r for r in store.query({"config_name": CONFIG, "concurrency": 64})}
        assert sorted(by_point) == ["c64", "rps1.c64", "rps2.c64"]
        assert by_point["rps2.c64"].keys.benchmark_type == "request_rate"
        assert by_point["rps2.c64"].metrics["output_token_throughput"] == 200.0
        assert store.query({"config_name": CONFIG, "point": "rps1.c64"})[0].id == ids[0]
        with pytest.raises(AlreadyRecorded):  # the same run's point twice: the widened unique index
            store.add_run(make_keys(), run, RunMeta(timestamp=T0 + timedelta(days=1), run_id="run-1"))
    assert _alembic_revision(store_url) == "0003"
    engine = _engine_for(store_url)
    with engine.connect() as conn:
        indexes = {ix["name"]: ix for ix in inspect(conn).get_indexes("perf_records")}
        assert "uq_perf_records_run_conc" not in indexes
        assert indexes["uq_perf_records_run_point"]["column_names"] == ["run_uid", "concurrency", "benchmark_type",
                                                                      "point"]
        assert conn.execute(text("SELECT point FROM perf_records WHERE job_id = '41'")).scalar_one() == "c64"
    engine.dispose()
