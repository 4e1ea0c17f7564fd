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
from perfsanity.results.history import HistoryStore, JobMeta, MatchKeys, RunMeta, mask_url, strip_url_secrets

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
    assert strip_url_secrets("https://ci/x") == "https://ci/x"


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
