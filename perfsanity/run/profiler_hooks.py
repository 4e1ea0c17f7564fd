"""Torch-profiler windows of the BENCHMARK role (``profiling.windows``): around each listed benchmark
point (``c<concurrency>``, all its repeats), POST the backend's start path to every worker's published
address before the client starts, and its stop path after the client ended, even when it failed.

Each call is bounded (``CALL_TIMEOUT_S``) and recorded, answered or not, as a :class:`ProfilerCall` in
``results.json`` (``profiler_calls``): which window, role and URL, when it was sent and answered, the
HTTP status and the first line of the answer. An unanswered or refused call never fails the benchmark:
the record says what happened. The traces themselves go where the engine writes them
(``SGLANG_TORCH_PROFILER_DIR`` / the request's ``output_dir``: ``<job dir>/profiles/<ROLE>``).
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

from perfsanity.engines.base import PROFILES_DIR
from perfsanity.load.results_json import ProfilerCall
from perfsanity.run.job import Job

CALL_TIMEOUT_S = 10.0
ANSWER_CHARS = 200


def _post(url: str, body: dict) -> tuple[int | None, str]:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=CALL_TIMEOUT_S) as resp:  # noqa: S310 - our own server
            return resp.status, resp.read(ANSWER_CHARS).decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(ANSWER_CHARS).decode(errors="replace") if exc.fp else str(exc.reason)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return None, f"no answer within {CALL_TIMEOUT_S:g}s: {exc}"


def call(job: Job, window: str, action: str, role: str, url: str, body: dict) -> ProfilerCall:
    """One bounded POST, recorded whatever it answered."""
    sent = time.time()
    status, answer = _post(url, body)
    first = (answer.strip().splitlines() or [""])[0][:ANSWER_CHARS]
    record = ProfilerCall(window=window, action=action, role=role, url=url, sent_at=sent, answered_at=time.time(),
                          status=status, answer=first)
    job.log(f"profiler {action} {window} {role}: {url} -> {status if status is not None else 'no answer'} {first}")
    return record


def _targets(job: Job) -> list[tuple[str, str]]:
    """(role, base URL) of every worker that published an address."""
    out = []
    for placement in job.topology.workers:
        address = job.rendezvous.address(placement.role)
        if address is not None:
            out.append((placement.role, address.url))
    return out


@contextlib.contextmanager
def window(job: Job, concurrency: int, calls: list[ProfilerCall]) -> Iterator[None]:
    """Start the torch profiler on every worker before the block and stop it after, when ``c<concurrency>``
    is one of ``profiling.windows`` (else nothing happens); the records are appended to ``calls``."""
    name = f"c{concurrency}"
    endpoints = job.backend.profiler_endpoints
    if name not in job.config.profiling.windows or endpoints is None:
        yield
        return
    start, stop = endpoints
    targets = _targets(job)
    for role, url in targets:
        out_dir = job.job_dir / PROFILES_DIR / role
        calls.append(call(job, name, "start", role, url + start, {"output_dir": str(out_dir)}))
    try:
        yield
    finally:
        for role, url in targets:
            calls.append(call(job, name, "stop", role, url + stop, {}))
