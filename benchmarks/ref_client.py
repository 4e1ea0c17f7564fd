"""A minimal reference load generator: stdlib asyncio, one keep-alive HTTP/1.1 connection per
concurrency slot, closed loop, streaming ``/v1/completions``; a baseline for the client benchmarks.

    python3 benchmarks/ref_client.py --url http://127.0.0.1:PORT --concurrency 64 --requests 512 \
        --prompt-chars 512 --max-tokens 64 [--out result.json]

Prints (and writes with ``--out``) one JSON object: TTFT / ITL (chunk gaps) / TPOT / e2e percentiles
in ms, output tokens/s, the wall time of the benchmark and this process's CPU seconds during it.
Prompts are random lowercase words of exactly ``--prompt-chars`` characters (seeded).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import sys
import time
from urllib.parse import urlsplit


def percentiles(values: list[float], ps=(50, 90, 99)) -> dict[str, float | None]:
    if not values:
        return {f"p{p}": None for p in ps} | {"mean": None}
    s = sorted(values)
    out: dict[str, float | None] = {"mean": sum(s) / len(s)}
    for p in ps:  # numpy's default (linear interpolation)
        k = (len(s) - 1) * p / 100
        lo = int(k)
        hi = min(lo + 1, len(s) - 1)
        out[f"p{p}"] = s[lo] + (s[hi] - s[lo]) * (k - lo)
    return out


def make_prompt(rng: random.Random, chars: int) -> str:
    words = []
    total = 0
    while total < chars:
        w = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 8)))
        words.append(w)
        total += len(w) + 1
    return " ".join(words)[:chars]


class Conn:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def ensure(self) -> None:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def one_request(conn: Conn, path: str, payload: bytes, timeout_s: float) -> dict:
    """Send one streaming request; return start/chunk timestamps and the server's usage."""
    await conn.ensure()
    assert conn.reader is not None and conn.writer is not None
    head = (f"POST {path} HTTP/1.1\r\nHost: {conn.host}:{conn.port}\r\nContent-Type: application/json\r\n"
            f"Accept: text/event-stream\r\nContent-Length: {len(payload)}\r\n\r\n").encode()
    t_start = time.perf_counter()
    conn.writer.write(head + payload)
    reader = conn.reader
    status_line = await asyncio.wait_for(reader.readuntil(b"\r\n"), timeout_s)
    status = int(status_line.split()[1])
    headers = {}
    while True:
        line = await reader.readuntil(b"\r\n")
        if line == b"\r\n":
            break
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    if status != 200:
        n = int(headers.get("content-length", "0") or 0)
        body = await reader.readexactly(n) if n else b""
        return {"error": f"HTTP {status}: {body[:200]!r}", "start": t_start}
    chunks: list[float] = []
    usage = None
    buf = b""
    chunked = headers.get("transfer-encoding", "").lower() == "chunked"
    done = False
    while not done:
        if chunked:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            data = (await reader.readexactly(size + 2))[:-2]
        else:
            data = await reader.read(65536)
            if not data:
                break
        now = time.perf_counter()
        buf += data
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            if not event.startswith(b"data: "):
                continue
            body = event[6:]
            if body == b"[DONE]":
                done = True
                continue
            obj = json.loads(body)
            if obj.get("usage"):
                usage = obj["usage"]
            choices = obj.get("choices") or ()
            if choices and choices[0].get("text"):
                chunks.append(now)
    if done and chunked:  # consume the terminating zero-size chunk
        size_line = await reader.readuntil(b"\r\n")
        if int(size_line.split(b";")[0], 16) == 0:
            await reader.readuntil(b"\r\n")
    return {"start": t_start, "chunks": chunks, "usage": usage}


async def run(args: argparse.Namespace) -> dict:
    u = urlsplit(args.url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    rng = random.Random(args.seed)
    prompts = [make_prompt(rng, args.prompt_chars) for _ in range(args.requests)]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(args.requests):
        queue.put_nowait(i)
    results: list[dict] = []

    async def worker() -> None:
        conn = Conn(host, port)
        try:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                payload = json.dumps({"model": args.model, "prompt": prompts[i], "max_tokens": args.max_tokens,
                                      "stream": True, "ignore_eos": True,
                                      "stream_options": {"include_usage": True}}).encode()
                try:
                    res = await asyncio.wait_for(one_request(conn, "/v1/completions", payload, args.timeout),
                                                 args.timeout)
                except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
                    res = {"error": f"{type(exc).__name__}: {exc}"}
                    conn.close()
                    conn.writer = None
                res["chars"] = len(prompts[i])
                results.append(res)
        finally:
            conn.close()

    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    t1 = time.perf_counter()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    ok = [r for r in results if "error" not in r and r["chunks"]]
    ttft = [(r["chunks"][0] - r["start"]) * 1e3 for r in ok]
    itl = [(b - a) * 1e3 for r in ok for a, b in zip(r["chunks"], r["chunks"][1:], strict=False)]
    tpot = [(r["chunks"][-1] - r["chunks"][0]) * 1e3 / (len(r["chunks"]) - 1) for r in ok if len(r["chunks"]) > 1]
    e2e = [(r["chunks"][-1] - r["start"]) * 1e3 for r in ok]
    out_tokens = sum((r["usage"] or {}).get("completion_tokens", len(r["chunks"])) for r in ok)
    chunks = sum(len(r["chunks"]) for r in ok)
    # window as aiperf defines it: first request sent → last response finished
    if ok:
        w0 = min(r["start"] for r in ok)
        w1 = max(r["chunks"][-1] for r in ok)
    else:
        w0, w1 = t0, t1
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {
        "client": "ref-asyncio", "concurrency": args.concurrency, "requested": args.requests,
        "completed": len(ok), "failed": len(results) - len(ok),
        "errors": sorted({r["error"] for r in results if "error" in r})[:3],
        "output_tokens": out_tokens, "chunks": chunks,
        "duration_s": w1 - w0, "wall_s": t1 - t0, "cpu_s": cpu,
        "output_token_throughput": out_tokens / (w1 - w0) if w1 > w0 else None,
        "ttft_ms": percentiles(ttft), "itl_ms": percentiles(itl), "tpot_ms": percentiles(tpot),
        "e2e_ms": percentiles(e2e),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--model", default="tiny")
    p.add_argument("--concurrency", type=int, required=True)
    p.add_argument("--requests", type=int, required=True)
    p.add_argument("--prompt-chars", type=int, default=512)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--timeout", type=float, default=120.0, help="per request, seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out")
    args = p.parse_args(argv)
    result = asyncio.run(run(args))
    text = json.dumps(result, indent=2)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    print(text)
    return 0 if result["completed"] else 1


if __name__ == "__main__":
    sys.exit(main())
