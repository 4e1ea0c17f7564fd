"""The BENCHMARK role's prompt files (``benchmark.pregenerate_dataset``, on by default). Before the role
waits for the servers it starts one background writer (:mod:`perfsanity.load.prompt_file`) under the
aiperf venv's interpreter. The writer puts ``client/dataset-isl<I>-osl<O>-n<N>.jsonl`` into the job
dir, one file per (ISL, OSL, lines) that the job's synthetic points need. Once the path serves, the
role waits for the writer, bounded by :data:`TIMEOUT_S` from its start, and checks each file's line
count. The aiperf runs then read those files (``--input-file … --custom-dataset-type single-turn``)
and skip building prompts at every start-up.

It applies to aiperf runs of the concurrency and request_rate types that have no
``benchmark.dataset_file``. When the writer fails, times out or writes a short file, the BENCHMARK
log says so in one line and every point uses aiperf's own synthetic prompts, as before. The writer's
output is in ``logs/prompt-files.log``.
"""

from __future__ import annotations

import json
import time

from perfsanity.common.errors import PerfsanityError, WaitTimeout
from perfsanity.common.files import write_atomic
from perfsanity.common.processes import ManagedProcess, ProcessSet
from perfsanity.common.waits import wait_until
from perfsanity.load import get_client
from perfsanity.load.prompt_file import PromptFile, count_lines, file_for, needed, spec, writer_argv
from perfsanity.run.job import Job, client_name, resolve_argv
from perfsanity.spec.benchmark_types import Point, points

#: seconds from the writer's start until the role gives up on it and falls back to synthetic prompts
TIMEOUT_S = 300.0
LOG_NAME = "prompt-files.log"
SPEC_NAME = "prompt-files.json"


def wanted(job: Job) -> tuple[PromptFile, ...]:
    """The files this job's points read: none unless the option is on, the client reads prompt files
    (``BenchmarkClient.reads_prompt_files``) and no dataset file is given."""
    bench = job.config.benchmark
    if not bench.pregenerate_dataset or bench.dataset_file or not get_client(client_name(job.config)).reads_prompt_files:
        return ()
    return needed(points(bench, source=job.config.source), bench.warmup_requests)


class PromptFiles:
    """The writer of one job's prompt files, then the files it wrote (empty after a fallback)."""

    def __init__(self, job: Job, procs: ProcessSet, tokenizer: str) -> None:
        self.job = job
        self.files = {f: job.job_dir / "client" / f.name for f in wanted(job)}
        self.ready: dict[PromptFile, str] = {}
        self.proc: ManagedProcess | None = None
        self.log = job.job_dir / "logs" / LOG_NAME
        if not self.files:
            return
        spec_path = job.job_dir / "client" / SPEC_NAME
        try:
            spec_path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(spec_path, json.dumps(spec(tokenizer, job.config.benchmark.random_seed, self.files),
                                               indent=2) + "\n")
            argv = resolve_argv(writer_argv(spec_path), get_client(client_name(job.config)).tool)
            env = {**job.environ, "TRANSFORMERS_VERBOSITY": "error"}
            self.proc = procs.start("prompt files", argv, env=env, log_path=self.log, cwd=spec_path.parent)
        except (PerfsanityError, OSError) as exc:
            self._fall_back(f"the writer did not start: {exc}")
            return
        names = ", ".join(f.name for f in self.files)
        job.log(f"prompt files: writing {names} in the background (log {self.log})")

    def collect(self) -> dict[PromptFile, str]:
        """Wait for the writer (the rest of :data:`TIMEOUT_S`), check its files, and return them."""
        proc = self.proc
        if proc is None:
            return self.ready
        waited = time.monotonic()

        def done() -> bool:
            self.job.rendezvous.raise_if_failed()
            return proc.poll() is not None

        try:
            wait_until(done, timeout_s=max(0.1, TIMEOUT_S - (waited - proc.started)), poll_s=0.05, max_poll_s=0.5,
                       what=f"the prompt-file writer to finish ({TIMEOUT_S:g}s from its start)")
        except WaitTimeout:
            proc.stop()
            return self._fall_back(f"the writer was not done {TIMEOUT_S:g}s after its start and was stopped")
        if proc.poll() != 0:
            last = proc.tail(1).strip() or "no output"
            return self._fall_back(f"the writer exited with code {proc.poll()} ({last})")
        for f, path in self.files.items():
            try:
                lines = count_lines(path)
            except OSError as exc:
                return self._fall_back(f"{path}: {exc}")
            if lines != f.lines:
                return self._fall_back(f"{path} holds {lines} prompts, {f.lines} expected")
        self.ready = {f: str(path) for f, path in self.files.items()}
        self.job.log(f"prompt files: {len(self.ready)} ready, written in {time.monotonic() - proc.started:.1f}s "
                     f"(waited {time.monotonic() - waited:.1f}s for them after the servers were ready)")
        return self.ready

    def for_point(self, point: Point) -> str | None:
        """The prompt file a point's aiperf runs read, or None (aiperf's synthetic prompts)."""
        if point.trace_file:
            return None
        bench = self.job.config.benchmark
        return self.ready.get(file_for(point.input_length, point.output_length, point.num_prompts,
                                       bench.warmup_requests))

    def _fall_back(self, why: str) -> dict[PromptFile, str]:
        self.ready = {}
        first = why.splitlines()[0] if why else "unknown failure"
        self.job.log(f"prompt files: {first} (log {self.log}); aiperf builds its synthetic prompts instead")
        return self.ready

