"""OpenSearch upload against a real HTTP server on 127.0.0.1 that records what it receives."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from gate_helpers import make_keys, make_run

from perfsanity.common.errors import ConfigError, PerfsanityError
from perfsanity.results.history import HistoryStore, RunMeta
from perfsanity.results.upload import UploadConfig, config_from_env, document, upload_records


class Recorder:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.responses: list[tuple[int, dict]] = []  # queued (status, body); default 200 ok


@pytest.fixture
def server() -> Iterator[tuple[str, Recorder]]:
    rec = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            rec.requests.append({"path": self.path, "headers": dict(self.headers), "body": body.decode()})
            status, payload = rec.responses.pop(0) if rec.responses else (200, {"errors": False, "items": []})
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/os", rec
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def records(tmp_path):
    with HistoryStore(tmp_path / "h.sqlite") as store:
        run = make_run({8: {"output_token_throughput": 900.0, "ttft_p99": 80.0},
                        64: {"output_token_throughput": 5000.0}})
        ids = store.add_run(make_keys(), run, RunMeta(commit="abc", branch="main", job_id="7", post_merge=True,
                                                      timestamp=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
                                                      build_url="https://ci/job/7"))
        store.set_gate_verdicts(ids[1], {"output_token_throughput": "WARN"})
        return [store.get(i) for i in ids]


def test_bulk_upload_document_shape(server, records):
    url, rec = server
    cfg = config_from_env({"PERFSANITY_OPENSEARCH_URL": url, "PERFSANITY_OPENSEARCH_INDEX": "perf-test",
                           "PERFSANITY_OPENSEARCH_USER": "bot", "PERFSANITY_OPENSEARCH_PASSWORD": "pa55"})
    assert upload_records(records, cfg) == 2
    (req,) = rec.requests
    assert req["path"] == "/os/perf-test/_bulk"
    assert req["headers"]["Content-Type"] == "application/x-ndjson"
    assert req["headers"]["Authorization"].startswith("Basic ")
    lines = [json.loads(line) for line in req["body"].strip().split("\n")]
    assert len(lines) == 4
    action, doc = lines[0], lines[1]
    assert action["index"]["_index"] == "perf-test" and len(action["index"]["_id"]) == 32
    assert doc["s_config_name"] == make_keys().config_name
    assert doc["l_concurrency"] == 8 and doc["l_num_gpus"] == 12 and doc["l_isl"] == 1024
    assert doc["b_is_post_merge"] is True and doc["b_is_valid"] is True
    assert doc["d_output_token_throughput"] == 900.0 and doc["d_ttft_p99"] == 80.0
    assert doc["ts_created"] == int(datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp() * 1000)
    assert lines[3]["s_gate_output_token_throughput"] == "WARN" and lines[3]["b_is_regression"] is True
    for key, value in doc.items():
        prefix = key.split("_", 1)[0]
        expected = {"s": str, "l": int, "d": float, "b": bool, "ts": int}[prefix]
        assert isinstance(value, expected) and (prefix != "l" or not isinstance(value, bool)), key
    assert "pa55" not in req["body"]
    # same record → same _id: a re-upload overwrites
    upload_records(records, cfg)
    assert json.loads(rec.requests[1]["body"].split("\n")[0]) == action


def test_rejected_documents_and_http_errors(server, records):
    url, rec = server
    cfg = UploadConfig(url=url, attempts=2)
    rec.responses.append((200, {"errors": True, "items": [
        {"index": {"status": 400, "error": {"type": "mapper_parsing_exception", "reason": "bad d_ttft_p99"}}}]}))
    with pytest.raises(PerfsanityError, match="1 document.s. rejected: bad d_ttft_p99"):
        upload_records(records, cfg)
    rec.responses += [(503, {}), (200, {"errors": False, "items": []})]
    assert upload_records(records, cfg) == 2  # retried after 503
    rec.responses.append((401, {}))
    with pytest.raises(PerfsanityError, match="HTTP 401") as info:
        upload_records(records, UploadConfig(url=url.replace("http://", "http://u:topsecret@"), attempts=3))
    assert "topsecret" not in str(info.value)


def test_unreachable_server(records):
    cfg = UploadConfig(url="http://127.0.0.1:1", attempts=1, timeout_s=2)
    with pytest.raises(PerfsanityError, match="unreachable"):
        upload_records(records, cfg)


def test_off_by_default_and_config_validation(records):
    assert config_from_env({}) is None
    with pytest.raises(ConfigError, match="http"):
        UploadConfig(url="ftp://x")
    with pytest.raises(ConfigError, match="index"):
        UploadConfig(url="http://127.0.0.1", index="Bad/Index")
    cfg = config_from_env({"PERFSANITY_OPENSEARCH_URL": "https://u:pw@os.example:9200",
                           "PERFSANITY_OPENSEARCH_TOKEN": "tok"})
    assert cfg.url == "https://os.example:9200" and cfg.headers["Authorization"] == "Bearer tok"
    assert "tok" not in repr(cfg)
    assert document(records[0])["s_build_url"] == "https://ci/job/7"


def test_gate_command_uploads_when_configured(server, tmp_path, monkeypatch, capsys):
    from gate_helpers import job_meta

    from perfsanity.cli import main

    url, rec = server
    monkeypatch.setenv("PERFSANITY_OPENSEARCH_URL", url)
    monkeypatch.setenv("PERFSANITY_HISTORY", str(tmp_path / "h.sqlite"))
    monkeypatch.delenv("PERFSANITY_BASELINES", raising=False)
    monkeypatch.chdir(tmp_path)
    job = tmp_path / "job"
    job.mkdir()
    make_run({8: {"output_token_throughput": 900.0}, 64: {"output_token_throughput": 5000.0}}).write(
        job / "results.json")
    job_meta(timestamp=datetime(2025, 1, 2, tzinfo=UTC)).write(job / "job_meta.json")
    assert main(["gate", str(job)]) == 0
    assert "uploaded 2 document(s)" in capsys.readouterr().out
    (req,) = rec.requests
    docs = [json.loads(line) for line in req["body"].strip().split("\n")][1::2]
    assert [d["l_concurrency"] for d in docs] == [8, 64]
    assert all(d["s_gate_output_token_throughput"] == "NO_BASELINE" for d in docs)
    # --no-upload, or a failing server, never changes the gate's exit code
    rec.responses.append((400, {}))  # not retried
    job2 = tmp_path / "job2"
    job2.mkdir()
    for f in ("results.json", "job_meta.json"):
        (job2 / f).write_text((job / f).read_text())
    assert main(["gate", str(job2)]) == 0
    assert "perfsanity: warning: upload to" in capsys.readouterr().err
