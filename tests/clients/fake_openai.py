"""A minimal OpenAI-compatible ``/v1/completions`` server for the slow aiperf end-to-end test.

It streams ``max_tokens`` one-character chunks (``object: text_completion``) a few milliseconds
apart and, when ``stream_options.include_usage`` is set, a trailing usage chunk reporting
``prompt_tokens`` = the configured input length and ``completion_tokens`` = ``max_tokens``. It binds
127.0.0.1 on an ephemeral port. Not a model: only the wire format aiperf parses.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # body ends when the connection closes: no chunked encoding needed
    server: FakeOpenAI

    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        pass

    def do_POST(self):  # noqa: N802 - http.server naming
        if self.path != "/v1/completions":
            self.send_error(404)
            return
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.server.requests.append(body)
        n = int(body.get("max_tokens") or 16)
        usage = {"prompt_tokens": self.server.prompt_tokens, "completion_tokens": n,
                 "total_tokens": self.server.prompt_tokens + n}
        base = {"id": "cmpl-fake", "object": "text_completion", "created": int(time.time()), "model": body["model"]}
        if not body.get("stream"):
            time.sleep(self.server.token_delay_s * n)
            prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
            answer = self.server.answer or (lambda _prompt: "x" * n)
            choices = [{"index": i, "text": answer(p), "finish_reason": "length"} for i, p in enumerate(prompts)]
            out = dict(base, choices=choices, usage=usage)
            data = json.dumps(out).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        time.sleep(self.server.first_token_delay_s)
        for i in range(n):
            finish = "length" if i == n - 1 else None
            chunk = dict(base, choices=[{"index": 0, "text": "x", "finish_reason": finish}])
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
            if i < n - 1:
                time.sleep(self.server.token_delay_s)
        if (body.get("stream_options") or {}).get("include_usage"):
            self.wfile.write(f"data: {json.dumps(dict(base, choices=[], usage=usage))}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


class FakeOpenAI(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, prompt_tokens: int, first_token_delay_s: float = 0.02, token_delay_s: float = 0.003,
                 answer: Callable[[str], str] | None = None):
        """``answer``: the text of a non-streamed completion of a prompt (default: ``max_tokens`` x's)."""
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answer = answer
        self.prompt_tokens = prompt_tokens
        self.first_token_delay_s = first_token_delay_s
        self.token_delay_s = token_delay_s
        self.requests: list[dict] = []
        self._thread = threading.Thread(target=self.serve_forever, name="fake-openai", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)
