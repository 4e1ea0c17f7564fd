"""A tiny OpenAI-compatible streaming server with a *known* latency law, for measuring the harness.

Stdlib only (asyncio streams, HTTP/1.1 keep-alive, chunked SSE). Endpoints: ``POST /v1/completions``
(``stream`` true or false), ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /health``,
``GET /metrics`` (a few Prometheus counters, because aiperf scrapes it).

Latency law (per request, clock starts when the whole request has been read):

* first token at ``TTFT = a + b * prompt_chars``  (``--ttft-base-ms`` a, ``--ttft-per-char-ms`` b;
  ``prompt_chars`` = characters of the prompt string(s) / message contents as received, or the
  number of ids for a token-id prompt — the client can compute the same number from what it sent)
* token ``k`` (0-based) at ``TTFT + k * ITL``   (``--itl-ms``)
* exactly ``max_tokens`` tokens (``ignore_eos`` / ``min_tokens`` are implied), one SSE event each;
  the last event carries ``finish_reason`` and ``usage``, followed by ``data: [DONE]`` in the same write.

Every deadline is absolute (start + offset), never a sum of sleeps, so one late wake-up does not shift
later tokens. By default the loop uses ``select()`` (microsecond timeouts; epoll rounds up to whole
milliseconds) and the process's timer slack is set to 1 ns.

``--zero-delay``: no law; tokens are emitted as fast as possible (one SSE event per token, yielding
to the event loop between tokens so concurrent streams interleave) — for client-capacity tests.

``--log FILE``: one JSON line per finished request (the ground truth): request/correlation ids
(aiperf's ``X-Request-ID`` / ``X-Correlation-ID``), ``recv_ns`` (wall clock), ``chars``, ``n``,
``ttft_law_ms``, ``itl_law_ms``, and ``late_us`` — for every token how many microseconds after its
deadline it was handed to the kernel (the server's own scheduling error).

The first stdout line is ``listening http://HOST:PORT`` (``--port 0`` picks a free port).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import selectors
import signal
import sys
import time
import uuid

PR_SET_TIMERSLACK = 29


class Law:
    def __init__(self, ttft_base_ms: float, ttft_per_char_ms: float, itl_ms: float, zero_delay: bool) -> None:
        self.a = ttft_base_ms / 1e3
        self.b = ttft_per_char_ms / 1e3
        self.itl = itl_ms / 1e3
        self.zero_delay = zero_delay

    def ttft_s(self, chars: int) -> float:
        return 0.0 if self.zero_delay else self.a + self.b * chars


def prompt_chars(body: dict, chat: bool) -> int:
    """The ISL the law uses: characters of the prompt as received (token-id prompts: the id count)."""
    if chat:
        total = 0
        for msg in body.get("messages") or ():
            content = msg.get("content") if isinstance(msg, dict) else None
            if isinstance(content, str):
                total += len(content)
            elif isinstance(content, list):
                total += sum(len(p.get("text", "")) for p in content if isinstance(p, dict))
        return total
    prompt = body.get("prompt", "")
    if isinstance(prompt, str):
        return len(prompt)
    if isinstance(prompt, list):
        if all(isinstance(p, int) for p in prompt):
            return len(prompt)
        return sum(len(p) if isinstance(p, str) else len(p) if isinstance(p, list) else 0 for p in prompt)
    return 0


def prompt_tokens_estimate(chars: int) -> int:
    return max(1, round(chars / 4))


def chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


class Server:
    def __init__(self, law: Law, log_path: str | None) -> None:
        self.law = law
        self.log = open(log_path, "a", buffering=1 << 16) if log_path else None  # noqa: SIM115
        self.requests = 0
        self.tokens = 0
        self.active = 0
        # wall-clock anchor so per-request loop.time() stamps can be logged as epoch ns
        self.mono0 = time.monotonic()
        self.wall0_ns = time.time_ns()

    def wall_ns(self, mono: float) -> int:
        return self.wall0_ns + int((mono - self.mono0) * 1e9)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                except asyncio.LimitOverrunError:
                    await self.simple(writer, 431, b'{"error":"headers too large"}')
                    return
                lines = head.decode("latin-1").split("\r\n")
                try:
                    method, target, _version = lines[0].split(" ", 2)
                except ValueError:
                    await self.simple(writer, 400, b'{"error":"bad request line"}')
                    return
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                length = int(headers.get("content-length", "0") or 0)
                body = await reader.readexactly(length) if length else b""
                t_recv = time.monotonic()
                keep = headers.get("connection", "").lower() != "close"
                path = target.split("?", 1)[0]
                if method == "POST" and path in ("/v1/completions", "/v1/chat/completions"):
                    await self.generate(writer, body, headers, t_recv, chat=path.endswith("chat/completions"))
                elif method == "GET" and path == "/health":
                    await self.simple(writer, 200, b'{"status":"healthy"}')
                elif method == "GET" and path == "/v1/models":
                    await self.simple(writer, 200, json.dumps(
                        {"object": "list", "data": [{"id": "tiny", "object": "model", "owned_by": "bench"}]}).encode())
                elif method == "GET" and path == "/metrics":
                    text = (f"# TYPE bench_requests_total counter\nbench_requests_total {self.requests}\n"
                            f"# TYPE bench_tokens_total counter\nbench_tokens_total {self.tokens}\n"
                            f"# TYPE bench_active_requests gauge\nbench_active_requests {self.active}\n")
                    await self.simple(writer, 200, text.encode(), "text/plain; version=0.0.4")
                else:
                    await self.simple(writer, 404, b'{"error":"not found"}')
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            try:
                writer.close()
            except Exception:  # noqa: BLE001, S110 - socket already gone
                pass

    async def simple(self, writer: asyncio.StreamWriter, status: int, body: bytes,
                     ctype: str = "application/json") -> None:
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 431: "Request Header Fields Too Large"}[status]
        writer.write(b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
                     % (status, reason.encode(), ctype.encode(), len(body), body))
        await writer.drain()

    async def generate(self, writer: asyncio.StreamWriter, raw: bytes, headers: dict, t0: float, *, chat: bool) -> None:
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError("body must be an object")
        except ValueError as exc:
            await self.simple(writer, 400, json.dumps({"error": str(exc)}).encode())
            return
        law = self.law
        chars = prompt_chars(body, chat)
        n = int(body.get("max_completion_tokens") or body.get("max_tokens") or 16)
        n = max(1, n)
        stream = bool(body.get("stream"))
        model = str(body.get("model", "tiny"))
        rid = "cmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        ttft = law.ttft_s(chars)
        usage = {"prompt_tokens": prompt_tokens_estimate(chars), "completion_tokens": n,
                 "total_tokens": prompt_tokens_estimate(chars) + n}
        self.requests += 1
        self.active += 1
        late_us: list[int] = []
        try:
            if stream:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n")
                if chat:
                    def event(text: str, finish: str | None, use: dict | None) -> bytes:
                        obj = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                               "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}
                        if use:
                            obj["usage"] = use
                        return chunk(b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n")
                else:
                    def event(text: str, finish: str | None, use: dict | None) -> bytes:
                        obj = {"id": rid, "object": "text_completion", "created": created, "model": model,
                               "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]}
                        if use:
                            obj["usage"] = use
                        return chunk(b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n")
                middle = event(" a", None, None)
                last = event(" a", "length", usage) + chunk(b"data: [DONE]\n\n") + LAST_CHUNK
                for k in range(n):
                    if law.zero_delay:
                        if k:
                            await asyncio.sleep(0)
                        deadline = time.monotonic()
                    else:
                        deadline = t0 + ttft + k * law.itl
                        delay = deadline - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    writer.write(last if k == n - 1 else middle)
                    late_us.append(int((time.monotonic() - deadline) * 1e6))
                    if writer.transport.get_write_buffer_size() > 1 << 16:
                        await writer.drain()
                    self.tokens += 1
                await writer.drain()
            else:
                deadline = t0 + ttft + (n - 1) * law.itl
                if not law.zero_delay:
                    delay = deadline - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                if chat:
                    obj = {"id": rid, "object": "chat.completion", "created": created, "model": model,
                           "choices": [{"index": 0, "message": {"role": "assistant", "content": " a" * n},
                                        "finish_reason": "length"}], "usage": usage}
                else:
                    obj = {"id": rid, "object": "text_completion", "created": created, "model": model,
                           "choices": [{"index": 0, "text": " a" * n, "logprobs": None, "finish_reason": "length"}],
                           "usage": usage}
                data = json.dumps(obj).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(data), data))
                late_us.append(int((time.monotonic() - (deadline if not law.zero_delay else t0)) * 1e6))
                self.tokens += n
                await writer.drain()
        finally:
            self.active -= 1
            if self.log is not None:
                rec = {"request_id": headers.get("x-request-id"), "correlation_id": headers.get("x-correlation-id"),
                       "recv_ns": self.wall_ns(t0), "end_ns": self.wall_ns(time.monotonic()), "chars": chars, "n": n,
                       "stream": stream, "ttft_law_ms": ttft * 1e3, "itl_law_ms": 0.0 if law.zero_delay else law.itl * 1e3,
                       "complete": len(late_us) == (n if stream else 1), "late_us": late_us}
                self.log.write(json.dumps(rec, separators=(",", ":")) + "\n")

    def close(self) -> None:
        if self.log is not None:
            self.log.flush()
            self.log.close()
            self.log = None


def set_timer_slack_ns(ns: int) -> bool:
    """prctl(PR_SET_TIMERSLACK): how late the kernel may fire this process's timers (default 50 µs)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_TIMERSLACK, ctypes.c_ulong(ns), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def raise_priority() -> str:
    """SCHED_FIFO 10 if allowed, else nice -10 if allowed; says what it got."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        return "SCHED_FIFO 10"
    except (OSError, AttributeError):
        pass
    try:
        os.nice(-10)
        return "nice -10"
    except OSError:
        return "normal (no permission to raise)"


def make_loop(selector: str) -> asyncio.AbstractEventLoop:
    if selector == "select":
        return asyncio.SelectorEventLoop(selectors.SelectSelector())
    return asyncio.SelectorEventLoop(selectors.DefaultSelector())


async def serve(args: argparse.Namespace, ready: asyncio.Future | None = None) -> None:
    law = Law(args.ttft_base_ms, args.ttft_per_char_ms, args.itl_ms, args.zero_delay)
    server = Server(law, args.log)
    srv = await asyncio.start_server(server.handle, args.host, args.port, backlog=2048, limit=1 << 20)
    port = srv.sockets[0].getsockname()[1]
    print(f"listening http://{args.host}:{port}", flush=True)
    if ready is not None:
        ready.set_result(port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests run it in a thread)
            pass
    try:
        if args.max_seconds:
            try:
                await asyncio.wait_for(stop.wait(), timeout=args.max_seconds)
            except TimeoutError:
                pass
        else:
            await stop.wait()
    finally:
        srv.close()
        server.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--ttft-base-ms", type=float, default=50.0, help="a in TTFT = a + b*chars")
    p.add_argument("--ttft-per-char-ms", type=float, default=0.1, help="b in TTFT = a + b*chars")
    p.add_argument("--itl-ms", type=float, default=20.0, help="fixed inter-token latency")
    p.add_argument("--zero-delay", action="store_true", help="emit tokens as fast as possible")
    p.add_argument("--selector", choices=("select", "epoll"), default=None,
                   help="event-loop selector (default: select for the law, epoll for --zero-delay)")
    p.add_argument("--log", help="ground-truth JSONL, one line per request")
    p.add_argument("--realtime", action="store_true",
                   help="run under SCHED_FIFO (priority 10; falls back to nice -10, then normal) so the law "
                   "holds while a client saturates the CPUs — a real server is on other hardware")
    p.add_argument("--max-seconds", type=float, default=3600.0, help="exit after this long (bound; 0 = never)")
    args = p.parse_args(argv)
    if args.selector is None:
        args.selector = "epoll" if args.zero_delay else "select"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print("refusing to bind anything but loopback", file=sys.stderr)
        return 2
    set_timer_slack_ns(1)
    if args.realtime:
        print(f"scheduling: {raise_priority()}", file=sys.stderr, flush=True)
    loop = make_loop(args.selector)
    try:
        loop.run_until_complete(serve(args))
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
