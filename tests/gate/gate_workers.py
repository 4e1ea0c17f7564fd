"""Process entry points for the parallel-writer tests (importable by spawned children)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from perfsanity.results.history import HistoryStore, RunMeta


def write_runs(url: str, worker: int, runs: int, barrier) -> list[int]:
    """Wait for all writers, then add ``runs`` runs (2 concurrencies each) through a fresh store."""
    from gate_helpers import make_keys, make_run

    barrier.wait(timeout=60)
    store = HistoryStore(url)  # first use creates the schema: concurrently in every worker
    ids: list[int] = []
    try:
        for i in range(runs):
            run = make_run({8: {"output_token_throughput": 1000.0 + i}, 64: {"output_token_throughput": 5000.0 + i}})
            ids += store.add_run(make_keys(), run, RunMeta(job_id=f"w{worker}-r{i}", post_merge=True,
                                                           timestamp=datetime(2025, 1, 1, tzinfo=UTC)
                                                           + timedelta(minutes=i)))
    finally:
        store.close()
    return ids
