"""Token-exact prompt files for aiperf (``benchmark.pregenerate_dataset``): one aiperf ``single-turn``
JSONL per (input length, output length, lines) that a job's synthetic points need. The BENCHMARK role
writes them once per job while the servers start (:mod:`perfsanity.run.prompt_files`), and each aiperf
run then reads its prompts (``--input-file``) instead of building them at every start-up.

One line per request: ``{"text": <prompt>, "output_length": OSL}``. These are the fields of aiperf
0.13.0's single-turn format (``aiperf/dataset/loader/models.py``, ``SingleTurn``): ``text`` is the
prompt and ``output_length`` is the request's max tokens. A file holds warmup + requests lines.
aiperf's single-turn loader picks lines in order, and the warmup and profiling phases share one
sampler that wraps at the end, so every request of a point gets a prompt of its own.

A prompt starts as the seeded token ids of :func:`perfsanity.load.lean.make_prompts`, drawn from the
upper part of the vocabulary. The ids are decoded to text under the job's tokenizer, the text is
re-encoded, and it is trimmed or extended until it encodes to exactly ``isl`` tokens. Encoding uses
``add_special_tokens=False``, as aiperf counts its own synthetic prompts. The same
``benchmark.random_seed`` always gives the same files; each file's seed also mixes in its shape, so
no two files share a prompt prefix.

The harness has no tokenizer library, so the writer runs as a script under the aiperf venv's
interpreter, which has transformers::

    python prompt_file.py SPEC.json

SPEC is ``{"tokenizer": DIR, "seed": N, "files": [{"path", "isl", "osl", "lines"}, ...]}``. Each
file is written whole (temp file, then rename), and one line per file is printed.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from perfsanity.spec.benchmark_types import Point

if __package__:
    from perfsanity.load.lean import make_prompts, vocab_size
else:  # a script under a tool venv's interpreter, which has no perfsanity package: lean.py is beside it
    from lean import make_prompts, vocab_size  # type: ignore[no-redef]

#: rounds (decode, re-encode, trim or extend) before a prompt is given up on; the tiny tokenizer needs 1-2
MAX_ROUNDS = 50


@dataclass(frozen=True)
class PromptFile:
    """One prompt file: ``lines`` prompts of ``isl`` tokens, each asking for ``osl`` output tokens."""

    isl: int
    osl: int
    lines: int

    @property
    def name(self) -> str:
        return f"dataset-isl{self.isl}-osl{self.osl}-n{self.lines}.jsonl"


def needed(points: Iterable[Point], warmup_requests: int) -> tuple[PromptFile, ...]:
    """The files for the ``points`` of the synthetic types (concurrency, request_rate), in first-use
    order and without repeats. A trace point brings its own lines and gets none."""
    out: dict[PromptFile, None] = {}
    for p in points:
        if p.benchmark_type in ("concurrency", "request_rate") and not p.trace_file:
            out[file_for(p.input_length, p.output_length, p.num_prompts, warmup_requests)] = None
    return tuple(out)


def file_for(isl: int, osl: int, num_prompts: int, warmup_requests: int) -> PromptFile:
    return PromptFile(isl=isl, osl=osl, lines=num_prompts + warmup_requests)


def spec(tokenizer: str, seed: int, files: dict[PromptFile, Path]) -> dict[str, object]:
    """The writer's SPEC.json for ``files`` (each written to its path)."""
    return {"tokenizer": tokenizer, "seed": seed,
            "files": [{"path": str(path), "isl": f.isl, "osl": f.osl, "lines": f.lines} for f, path in files.items()]}


def writer_argv(spec_path: Path) -> tuple[str, ...]:
    """``python <this file> SPEC.json``: ``python`` becomes the aiperf venv's interpreter
    (:func:`perfsanity.run.job.resolve_argv` with tool ``aiperf``)."""
    return ("python", str(Path(__file__).resolve()), str(spec_path))


def count_lines(path: Path) -> int:
    """Non-empty lines of a written file (the harness checks a file before any run reads it)."""
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


# ---------------------------------------------------------------- the writer (aiperf venv)


def exact_text(tok: object, ids: list[int], isl: int, rng: random.Random, low: int, high: int) -> str:
    """Text that ``tok`` encodes to exactly ``isl`` tokens, starting from the token ids ``ids``.
    Decoding and re-encoding may merge or split tokens; the canonical ids are then trimmed to
    ``isl`` or extended with fresh ids from [low, high), and the round repeats."""
    for _ in range(MAX_ROUNDS):
        text = tok.decode(ids, skip_special_tokens=True)  # type: ignore[attr-defined]
        got = tok.encode(text, add_special_tokens=False)  # type: ignore[attr-defined]
        if len(got) == isl:
            return text
        ids = got[:isl] if len(got) > isl else got + [rng.randrange(low, high) for _ in range(isl - len(got))]
    raise ValueError(f"no text of exactly {isl} tokens after {MAX_ROUNDS} rounds")


def file_seed(seed: int, f: PromptFile) -> int:
    """The seed of one file's prompts: ``benchmark.random_seed`` mixed with the file's shape, so two
    files never share a prompt or a prompt prefix (a server's prefix cache would serve it)."""
    digest = hashlib.sha256(f"{seed}:{f.isl}:{f.osl}:{f.lines}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def write_file(tok: object, tokenizer_dir: str, seed: int, f: PromptFile, path: Path) -> None:
    vocab = min(vocab_size(tokenizer_dir), len(tok))  # type: ignore[arg-type]
    own = file_seed(seed, f)
    rng = random.Random(own + 1)  # the ids that extend a prompt whose text encodes short
    rows = []
    for ids in make_prompts(f.lines, f.isl, vocab, own):
        text = exact_text(tok, ids, f.isl, rng, vocab // 4, vocab)
        rows.append(json.dumps({"text": text, "output_length": f.osl}, ensure_ascii=False))
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(rows) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: prompt_file.py SPEC.json", file=sys.stderr)
        return 2
    spec_data = json.loads(Path(argv[0]).read_text())
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(spec_data["tokenizer"])
    for item in spec_data["files"]:
        f = PromptFile(isl=int(item["isl"]), osl=int(item["osl"]), lines=int(item["lines"]))
        write_file(tok, spec_data["tokenizer"], int(spec_data["seed"]), f, Path(item["path"]))
        print(f"wrote {item['path']}: {f.lines} prompts of {f.isl} tokens, output_length {f.osl}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
