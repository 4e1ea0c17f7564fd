"""The benchmarks' test server keeps its latency law: TTFT = a + b·chars, one token every ITL on an
absolute schedule, exactly max_tokens tokens, usage counts, and a ground-truth log (fast: < 2 s)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "benchmarks" / "bench_server.py"

A_MS, B_MS, ITL_MS, N = 30.0, 0.05, 8.0, 12
PROMPT = "x" * 400  # TTFT = 30 + 0.05·400 = 50 ms
# generous: other processes may share the 2 cores; the law itself is exact to ~0.2 ms when idle
TOL_MS = 6.0
TRIES = 3


@pytest.fixture
def server(tmp_path):
    log = tmp_path / "truth.jsonl"
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "--port", "0", "--ttft-base-ms", str(A_MS), "--ttft-per-char-ms", str(B_MS),
         "--itl-ms", str(ITL_MS), "--log", str(log), "--max-seconds", "60"],
        stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening http://127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        yield port, proc, log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)


def stream_once(port: int, body: dict) -> tuple[float, list[float], list[dict]]:
    """(request sent at, arrival time of each content event, parsed events)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.connect()
    payload = json.dumps(body)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/completions", body=payload, headers={"Content-Type": "application/json",
                                                                  "X-Request-ID": "req-1"})
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Content-Type") == "text/event-stream"
    times, events, buf = [], [], b""
    while True:
        data = resp.read1(65536)
        if not data:
            break
        now = time.perf_counter()
        buf += data
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            assert ev.startswith(b"data: ")
            if ev[6:] == b"[DONE]":
                continue
            events.append(json.loads(ev[6:]))
            times.append(now)
    conn.close()
    return t0, times, events


def law_misses(t0: float, times: list[float]) -> list[str]:
    """How one streamed request strayed from the law (empty: it kept it)."""
    misses = []
    ttft_ms = (times[0] - t0) * 1e3
    law_ttft = A_MS + B_MS * len(PROMPT)
    if not law_ttft - 0.5 <= ttft_ms <= law_ttft + TOL_MS:
        misses.append(f"TTFT {ttft_ms:.2f} ms, law {law_ttft:.2f} ms")
    # absolute deadlines: the whole decode takes (N-1)·ITL, no drift accumulates
    decode_ms = (times[-1] - times[0]) * 1e3
    if abs(decode_ms - (N - 1) * ITL_MS) > TOL_MS:
        misses.append(f"decode {decode_ms:.2f} ms, law {(N - 1) * ITL_MS:.2f} ms")
    gaps = sorted((b - a) * 1e3 for a, b in zip(times, times[1:], strict=False))
    if abs(gaps[len(gaps) // 2] - ITL_MS) > TOL_MS / 2:
        misses.append(f"median ITL {gaps[len(gaps) // 2]:.2f} ms, law {ITL_MS} ms")
    return misses


def test_streamed_request_follows_the_law(server):
    """Content and usage on every try; the timing law on at least one of TRIES tries, since on a shared
    2-core box one try can lose its core to another process for longer than TOL_MS (bounds unchanged)."""
    port, proc, log = server
    tries = []
    for _ in range(TRIES):
        t0, times, events = stream_once(port, {"model": "tiny", "prompt": PROMPT, "max_tokens": N, "stream": True})
        assert len(events) == N
        assert [e["choices"][0]["finish_reason"] for e in events] == [None] * (N - 1) + ["length"]
        assert events[-1]["usage"] == {"prompt_tokens": 100, "completion_tokens": N, "total_tokens": 100 + N}
        tries.append(law_misses(t0, times))
        if not tries[-1]:
            break
    assert not tries[-1], f"the law was missed on all {TRIES} tries: {tries}"
    law_ttft = A_MS + B_MS * len(PROMPT)

    # the ground-truth log (flushed on SIGTERM)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(10)
    rec = json.loads(log.read_text().splitlines()[-1])
    assert rec["request_id"] == "req-1"
    assert rec["chars"] == len(PROMPT) and rec["n"] == N and rec["complete"]
    assert rec["ttft_law_ms"] == pytest.approx(law_ttft) and rec["itl_law_ms"] == ITL_MS
    assert len(rec["late_us"]) == N and min(rec["late_us"]) >= 0


def test_non_streaming_models_health(server):
    port, _proc, _log = server
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for path in ("/health", "/v1/models", "/metrics"):
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200, path
    law_ms = A_MS + B_MS * len(PROMPT) + 3 * ITL_MS
    elapsed = []
    for _ in range(TRIES):  # the timing on one of TRIES tries, as above
        t0 = time.perf_counter()
        conn.request("POST", "/v1/completions", body=json.dumps({"model": "tiny", "prompt": PROMPT, "max_tokens": 4}))
        resp = conn.getresponse()
        data = json.loads(resp.read())
        elapsed.append((time.perf_counter() - t0) * 1e3)
        assert data["usage"]["completion_tokens"] == 4 and data["choices"][0]["text"] == " a" * 4
        if law_ms - 0.5 <= elapsed[-1] <= law_ms + TOL_MS:
            break
    assert law_ms - 0.5 <= elapsed[-1] <= law_ms + TOL_MS, (law_ms, elapsed)
    conn.request("GET", "/nope")
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 404
    conn.close()
