"""The README's main job, end to end through the real CLI: ``submit.py --local`` runs the 1 prefill +
1 decode ``dynamo.mocker`` deployment behind Dynamo's frontend, benchmarks it with aiperf and
writes results.json, junit.xml and the logs that prove the disaggregated path was taken.
"""

from __future__ import annotations

import re

import pytest
from junitparser import Error, Failure, JUnitXml

CONCURRENCIES = (1, 4)
ROUNDS = 2  # e2e.FAST: benchmark.multi_round=2
REPEATS = 2  # benchmark.repeats: each concurrency's result is the mean of 2 client runs
INPUT_LEN, OUTPUT_LEN = 128, 32
TABLE_HEAD = ("conc", "done/req", "fail", "out tok/s", "tok/s/user", "TTFT p50 ms", "TTFT p99 ms",
              "TPOT p50 ms", "ITL p50 ms", "E2E p50 ms", "runs", "validity")


def last_table(stdout: str) -> dict[int, dict[str, str]]:
    """The last results table printed: concurrency -> {column: cell}."""
    lines = stdout.splitlines()
    starts = [i for i, line in enumerate(lines) if line.split() and line.split()[0] == "conc" and "TTFT p50 ms" in line]
    assert starts, f"no results table in stdout:\n{stdout[-3000:]}"
    rows = {}
    for line in lines[starts[-1] + 2:]:
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) != len(TABLE_HEAD) or not cells[0].isdigit():
            break
        rows[int(cells[0])] = dict(zip(TABLE_HEAD, cells, strict=True))
    return rows


@pytest.mark.slow
def test_local_mocker_ctx1_gen1_through_the_cli(jobs, e2e):
    run = jobs.run("benchmark.concurrency_list=" + " ".join(map(str, CONCURRENCIES)), f"benchmark.repeats={REPEATS}",
                   timeout_s=600)  # 4 client runs (2 concurrencies × 2 repeats), each paying aiperf start-up
    assert run.returncode == 0, f"exit {run.returncode}; output:\n{run.stdout[-6000:]}"
    assert run.stdout.rstrip().splitlines()[-1].split("] ", 1)[-1].startswith("PASSED"), run.stdout[-2000:]

    # results.json: every concurrency, every request done, plausible numbers
    res = run.json("results.json")
    assert (res["status"], res["failures"], res["config_name"]) == ("passed", [], "mocker-ctx1-gen1")
    assert [r["concurrency"] for r in res["results"]] == list(CONCURRENCIES)
    for r in res["results"]:
        c, one = r["concurrency"], r["concurrency"] * ROUNDS
        assert len(r["repeats"]) == REPEATS, r  # each repeat kept, counts summed, values their mean
        for rep in r["repeats"]:
            assert (rep["requested"], rep["completed"], rep["failed"]) == (one, one, 0), rep
        want = one * REPEATS
        assert (r["requested"], r["completed"], r["failed"]) == (want, want, 0), r
        assert (r["input_tokens"], r["output_tokens"]) == (want * INPUT_LEN, want * OUTPUT_LEN), r
        mean = sum(rep["output_token_throughput"] for rep in r["repeats"]) / REPEATS
        assert abs(r["output_token_throughput"] - mean) < 1e-6 * mean, r
        assert r["spread"]["output_token_throughput"] >= 0, r
        assert "ttft_median" in r["spread"] or "ttft_median" in r["invalid_metrics"], r
        # the client's own evidence was read and judged (a saturated point would carry its reasons)
        assert r["client_stats"]["client_cores"] > 0 and "credit_to_start_mean_ms" in r["client_stats"], r
        assert (r["validity"] == "valid") == (not r["evidence"]), r
        assert r["output_token_throughput"] > 0 and r["request_throughput"] > 0, r
        assert r["total_token_throughput"] > r["output_token_throughput"], r
        for stat in ("median", "p99"):  # a statistic finer than the client's own timing lag is dropped, with why
            if f"ttft_{stat}" in r["invalid_metrics"]:
                assert r["ttft"][stat] is None and "timing lag" in r["invalid_metrics"][f"ttft_{stat}"], r
            else:
                assert 0 < r["ttft"][stat] < 10_000, f"c{c} TTFT {r['ttft']}"
        assert 0 < r["ttft"]["p90"] < 10_000 and (r["ttft"]["median"] or 0) <= r["ttft"]["p90"], f"c{c} TTFT {r['ttft']}"
        if "itl" in r["invalid_metrics"]:  # a client that fell behind coalesced chunks: ITL dropped, with why
            assert r["itl"]["median"] is None and "chunks per request" in r["invalid_metrics"]["itl"], r
        else:
            assert 0 < r["itl"]["median"] < 1_000, f"c{c} ITL {r['itl']}"
        assert r["ttft"]["p90"] < r["e2e"]["median"] < 60_000, f"c{c} E2E {r['e2e']}"
        assert (r["itl"]["median"] or 0) * (OUTPUT_LEN - 1) < r["e2e"]["median"] * 2, f"c{c}: ITL vs E2E {r}"

    # junit.xml parses; one gate testcase per (concurrency, metric); nothing failed
    xml = JUnitXml.fromfile(str(run.out / "junit.xml"))
    cases = {case.name: case for suite in xml for case in suite}
    for c in CONCURRENCIES:
        for metric in ("output_token_throughput", "ttft_median", "itl_median"):
            assert f"c{c}.{metric}" in cases, sorted(cases)
    bad = [(n, r.message) for n, case in cases.items() for r in case.result if isinstance(r, (Failure, Error))]
    assert not bad, bad

    # the frontend took the disaggregated path: prefill router activated, every request went
    # prefill worker -> decode worker
    front = e2e.strip_ansi((run.out / "logs" / "DISAGG_SERVER.server.log").read_text(errors="replace"))
    assert "Prefill worker detected" in front, front[-3000:]
    routed = re.findall(r"prefill_worker_id=(\d+) decode_worker_id=(\d+)", front)
    assert len(routed) >= sum(c * ROUNDS * REPEATS for c in CONCURRENCIES), \
        f"{len(routed)} routed requests:\n{front[-3000:]}"
    assert all(p != d for p, d in routed)
    assert len({p for p, _ in routed}) == 1 and len({d for _, d in routed}) == 1  # 1 prefill + 1 decode worker

    # stdout: the results table with TTFT / ITL / throughput per concurrency
    table = last_table(run.stdout)
    assert sorted(table) == list(CONCURRENCIES), run.stdout[-3000:]
    for c, row in table.items():
        assert row["done/req"] == f"{c * ROUNDS * REPEATS}/{c * ROUNDS * REPEATS}" and row["fail"] == "0", row
        assert row["runs"] == str(REPEATS) and row["validity"].split(",")[0] in ("valid", "client_saturated"), row
        for col in ("out tok/s", "TTFT p50 ms", "ITL p50 ms"):
            dropped = {"ITL p50 ms": "itl invalid", "TTFT p50 ms": "ttft_median invalid"}.get(col)
            if dropped and dropped in row["validity"]:
                assert row[col] == "-", row  # dropped, never shown as 0
                continue
            assert float(row[col].replace(",", "")) > 0, (c, col, row)
