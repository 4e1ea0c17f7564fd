"""The lean built-in load generator (``benchmark.client: perfsanity``): stdlib asyncio, closed loop,
one keep-alive HTTP/1.1 connection per concurrency slot, ``/v1/completions``; it starts in ~0.1 s.

    python perfsanity/load/lean.py --url http://127.0.0.1:PORT --model NAME --concurrency 8 \
        --requests 64 --input-tokens 128 --output-tokens 32 --out summary.json [--tokenizer DIR]

Prompts are lists of token ids (the OpenAI completions API takes them), so every request carries
exactly ``--input-tokens`` tokens with no tokenizer loaded; ids are drawn (seeded) from the upper
part of the vocabulary named by ``<tokenizer>/config.json`` ``vocab_size``. Token counts come from
the server's ``usage`` (``stream_options.include_usage``), as aiperf's ``--use-server-token-count``.

It writes one JSON object (:data:`SUMMARY_FILE` in the working directory, or ``--out``): the same
definitions as aiperf's summary (``perfsanity.load.aiperf``): TTFT, request latency (to the end of
the stream), TPOT = (latency − TTFT)/(output tokens − 1), ITL = gaps between streamed chunks, pooled;
duration = first request sent → last response ended. Its own health figures: the time each due
request waited inside the client between its slot becoming free and being sent (aiperf's
credit→start latency), the time-averaged requests in flight, chunks per request; and the wall-clock
time the first (non-warm-up) request was sent.

This module imports the standard library only: its start-up is the client's start-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

SUMMARY_FILE = "perfsanity_client.json"
FALLBACK_VOCAB = 1000
#: wall clock − perf_counter at start-up: request times are perf_counter readings
WALL_MINUS_PERF = time.time() - time.perf_counter()


def percentiles(values: list[float]) -> dict[str, float | None]:
    """mean, p50, p90, p99 (linear interpolation, numpy's default); None for an empty list."""
    if not values:
        return {"mean": None, "p50": None, "p90": None, "p99": None}
    s = sorted(values)
    out: dict[str, float | None] = {"mean": sum(s) / len(s)}
    for p in (50, 90, 99):
        k = (len(s) - 1) * p / 100
        lo = int(k)
        hi = min(lo + 1, len(s) - 1)
        out[f"p{p}"] = s[lo] + (s[hi] - s[lo]) * (k - lo)
    return out


def vocab_size(tokenizer: str | None) -> int:
    if tokenizer:
        try:
            size = json.loads((Path(tokenizer) / "config.json").read_text())["vocab_size"]
            if isinstance(size, int) and size > 20:
                return size
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return FALLBACK_VOCAB


def make_prompts(count: int, tokens: int, vocab: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    low = vocab // 4  # clear of the special tokens, which tokenizers number first
    return [[rng.randrange(low, vocab) for _ in range(tokens)] for _ in range(count)]


class Conn:
    """One keep-alive connection (re-opened after an error)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def ensure(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.reader is None or self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        return self.reader, self.writer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _body_chunks(reader: asyncio.StreamReader, headers: dict[str, str]):
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return
            yield (await reader.readexactly(size + 2))[:-2]
    else:
        remaining = int(headers.get("content-length", "-1"))
        while remaining != 0:
            data = await reader.read(65536 if remaining < 0 else min(remaining, 65536))
            if not data:
                return
            remaining -= len(data) if remaining > 0 else 0
            yield data


async def one_request(conn: Conn, path: str, payload: bytes, stream: bool) -> dict:
    """Send one request; the send time, each content chunk's arrival, the end, the server's usage."""
    reader, writer = await conn.ensure()
    head = (f"POST {path} HTTP/1.1\r\nHost: {conn.host}:{conn.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode()
    start = time.perf_counter()
    writer.write(head + payload)
    status_line = (await reader.readuntil(b"\r\n")).split()
    status = int(status_line[1])
    headers: dict[str, str] = {}
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        key, _, value = line.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    chunks: list[float] = []
    usage = None
    buf = b""
    async for data in _body_chunks(reader, headers):
        now = time.perf_counter()
        buf += data
        if not stream:
            continue
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            if not event.startswith(b"data: ") or event[6:] == b"[DONE]":
                continue
            obj = json.loads(event[6:])
            usage = obj.get("usage") or usage
            choices = obj.get("choices") or ()
            if choices and choices[0].get("text"):
                chunks.append(now)
    end = time.perf_counter()
    framed = "content-length" in headers or headers.get("transfer-encoding", "").lower() == "chunked"
    if status_line[0] == b"HTTP/1.0" or headers.get("connection", "").lower() == "close" or not framed:
        conn.close()  # the server ends this connection: the next request opens a new one
    if status != 200:
        return {"start": start, "error": f"HTTP {status}: {buf[:200].decode(errors='replace')}"}
    if not stream:
        obj = json.loads(buf)
        usage = obj.get("usage")
        chunks = [end] if (obj.get("choices") or [{}])[0].get("text") else []
    return {"start": start, "end": end, "chunks": chunks, "usage": usage}


async def run(args: argparse.Namespace) -> dict:
    u = urlsplit(args.url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    total = args.warmup + args.requests
    prompts = make_prompts(total, args.input_tokens, vocab_size(args.tokenizer), args.seed)
    body = {"model": args.model, "max_tokens": args.output_tokens, "stream": args.stream,
            "ignore_eos": True, "min_tokens": args.output_tokens}
    if args.stream:
        body["stream_options"] = {"include_usage": True}

    async def drive(indices: list[int], slots: int) -> list[dict]:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in indices:
            queue.put_nowait(i)
        results: list[dict] = []
        t0 = time.perf_counter()

        async def slot() -> None:
            conn = Conn(host, port)
            free_at = t0
            try:
                while not queue.empty():
                    i = queue.get_nowait()
                    payload = json.dumps({**body, "prompt": prompts[i]}).encode()
                    due = free_at
                    try:
                        res = await asyncio.wait_for(one_request(conn, "/v1/completions", payload, args.stream),
                                                     args.timeout)
                    except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                            ValueError, IndexError) as exc:
                        res = {"start": time.perf_counter(), "error": f"{type(exc).__name__}: {exc}"}
                        conn.close()
                    res["credit_to_start"] = res["start"] - due
                    free_at = time.perf_counter()
                    results.append(res)
            finally:
                conn.close()

        await asyncio.gather(*(slot() for _ in range(slots)))
        return results

    if args.warmup:
        await drive(list(range(args.warmup)), min(args.concurrency, args.warmup))
    results = await drive(list(range(args.warmup, total)), args.concurrency)
    return summarize(results, args)


def summarize(results: list[dict], args: argparse.Namespace) -> dict:
    ok = [r for r in results if "error" not in r and r["chunks"]]
    failed = [r for r in results if r not in ok]
    ttft = [(r["chunks"][0] - r["start"]) * 1e3 for r in ok]
    e2e = [(r["end"] - r["start"]) * 1e3 for r in ok]
    out_tok = [int((r["usage"] or {}).get("completion_tokens") or len(r["chunks"])) for r in ok]
    in_tok = [int((r["usage"] or {}).get("prompt_tokens") or args.input_tokens) for r in ok]
    tpot = [(e - t) / (n - 1) for e, t, n in zip(e2e, ttft, out_tok, strict=True) if n > 1]
    itl = [(b - a) * 1e3 for r in ok for a, b in zip(r["chunks"], r["chunks"][1:], strict=False)]
    w0 = min((r["start"] for r in ok), default=0.0)
    sent = min((r["start"] for r in results), default=None)
    w1 = max((r["end"] for r in ok), default=0.0)
    duration = w1 - w0
    busy = sum(r["end"] - r["start"] for r in ok)
    cts = [r["credit_to_start"] * 1e3 for r in results]

    def rate(x: float) -> float | None:
        return x / duration if duration > 0 else None

    errors: dict[str, int] = {}
    for r in failed:
        key = r.get("error") or "no content streamed"
        errors[key] = errors.get(key, 0) + 1
    return {
        "client": "perfsanity", "concurrency": args.concurrency, "requested": args.requests,
        "first_request_unix": None if sent is None else sent + WALL_MINUS_PERF,
        "completed": len(ok), "failed": len(failed), "errors": errors,
        "input_tokens": sum(in_tok), "output_tokens": sum(out_tok), "duration_s": duration,
        "request_throughput": rate(len(ok)), "output_token_throughput": rate(sum(out_tok)),
        "total_token_throughput": rate(sum(out_tok) + sum(in_tok)),
        "output_token_throughput_per_user": percentiles([1e3 / t for t in tpot if t > 0])["mean"],
        "ttft_ms": percentiles(ttft), "tpot_ms": percentiles(tpot), "itl_ms": percentiles(itl),
        "e2e_ms": percentiles(e2e), "credit_to_start_ms": percentiles(cts),
        "credit_to_start_trimmed_mean_ms": (sum(cts) - max(cts)) / (len(cts) - 1) if len(cts) >= 3 else None,
        "effective_concurrency": busy / duration if duration > 0 else None,
        "chunks_per_request_p50": percentiles([float(len(r["chunks"])) for r in ok])["p50"],
        "output_tokens_per_request_p50": percentiles([float(n) for n in out_tok])["p50"],
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lean.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--concurrency", type=int, required=True)
    p.add_argument("--requests", type=int, required=True)
    p.add_argument("--input-tokens", type=int, required=True)
    p.add_argument("--output-tokens", type=int, required=True)
    p.add_argument("--no-stream", dest="stream", action="store_false")
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--timeout", type=float, default=120.0, help="per request, seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokenizer", help="model dir whose config.json names the vocabulary size")
    p.add_argument("--out", default=SUMMARY_FILE)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if min(args.concurrency, args.requests, args.input_tokens, args.output_tokens) < 1 or args.warmup < 0:
        print("error: --concurrency, --requests, --input-tokens and --output-tokens must be >= 1", file=sys.stderr)
        return 2
    summary = asyncio.run(run(args))
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    tmp.replace(out)  # whole or absent, never half written
    print(f"perfsanity client: c{args.concurrency} {summary['completed']}/{args.requests} completed, "
          f"{summary['failed']} failed, {summary['output_token_throughput'] or 0:.1f} output tok/s", flush=True)
    return 0 if summary["completed"] else 1


if __name__ == "__main__":
    sys.exit(main())
