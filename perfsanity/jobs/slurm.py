"""Typed wrappers around SLURM's command-line clients: submit, query, wait, cancel.

Every command runs through :func:`subprocess.run` with an argument list (never a shell) and a
timeout. Clients find the cluster through ``SLURM_CONF`` or ``/etc/slurm/slurm.conf``.

Job state comes from ``scontrol show job -o`` (the controller keeps finished jobs for
``MinJobAge`` seconds); when the controller no longer knows a job and accounting is enabled,
``sacct`` is asked instead.

Facts about SLURM that callers must respect (all observed on a real 22.05 cluster):

* A failed ``srun`` step leaves the job COMPLETED unless the batch script itself exits
  non-zero, so batch scripts must propagate step failures.
* ``scancel`` ends a job as CANCELLED; its ``ExitCode`` in ``scontrol`` is racy (``0:15``,
  ``143:0`` and ``0:0`` were all seen), ``sacct`` reports ``CANCELLED by <uid>`` and ``0:0``.
  Judge a cancel by the state, never by the exit code.
* ``scancel`` of an unknown job id exits 0 silently.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from perfsanity.common.errors import PerfsanityError, WaitTimeout

__all__ = [
    "INFRASTRUCTURE_FAILURE_STATES",
    "TERMINAL_STATES",
    "JobInfo",
    "JobNotFound",
    "JobWaitTimeout",
    "SbatchError",
    "SlurmCommandError",
    "SlurmError",
    "cancel",
    "is_infrastructure_failure",
    "job_state",
    "parse_scontrol_record",
    "submit",
    "wait_for_job",
]

#: Seconds any single SLURM client call may take before it is treated as failed.
COMMAND_TIMEOUT_S = 30.0

#: States after which a job never runs again (``COMPLETING`` is not one: it is still cleaning up).
TERMINAL_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "REVOKED",
        "SPECIAL_EXIT",
        "TIMEOUT",
    }
)

#: States that mean the machine, not the code under test, failed: worth a retry, not a verdict.
INFRASTRUCTURE_FAILURE_STATES = frozenset(
    {
        "BOOT_FAIL",  # a node failed to boot for the job
        "NODE_FAIL",  # an allocated node went down
        "PREEMPTED",  # a higher-priority job took the nodes
        "REVOKED",  # a federated sibling job ran elsewhere
        "REQUEUED",  # requeued by the controller (e.g. after a node failure)
        "REQUEUE_HOLD",
        "REQUEUE_FED",
        "RESV_DEL_HOLD",  # its reservation was deleted
    }
)


class SlurmError(PerfsanityError):
    """Base of every error raised by this module."""


class SlurmCommandError(SlurmError):
    """A SLURM client could not be run, timed out or failed; carries its argv and stderr."""

    def __init__(
        self,
        argv: Sequence[str],
        message: str,
        *,
        returncode: int | None = None,
        stderr: str = "",
    ) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr
        text = f"{' '.join(self.argv)}: {message}"
        if stderr.strip():
            text += f": {stderr.strip()}"
        super().__init__(text)

    @classmethod
    def exited(
        cls, argv: Sequence[str], proc: subprocess.CompletedProcess[str], message: str | None = None
    ) -> Self:
        """The error of a client that ran: ``message`` (default: its non-zero exit code), with its
        return code and stderr."""
        message = message if message is not None else f"exit code {proc.returncode}"
        return cls(argv, message, returncode=proc.returncode, stderr=proc.stderr)


class SbatchError(SlurmCommandError):
    """``sbatch`` refused the job (or printed no job id); the message carries sbatch's stderr."""


class JobNotFound(SlurmError):
    """Neither ``scontrol`` nor ``sacct`` (if available) knows the job id."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"SLURM job {job_id} is unknown to scontrol and sacct")


class JobWaitTimeout(SlurmError, WaitTimeout):
    """:func:`wait_for_job` gave up; the job was left running unless the caller asked otherwise.

    Attributes: ``job_id``, ``last_state`` (e.g. ``RUNNING``, ``UNKNOWN`` if never seen),
    ``last_reason`` (SLURM's reason, e.g. ``PartitionNodeLimit``), ``timeout_s``, ``cancelled``.
    """

    exit_code = WaitTimeout.exit_code

    def __init__(
        self,
        job_id: str,
        last_state: str,
        timeout_s: float,
        *,
        last_reason: str = "",
        detail: str = "",
        cancelled: bool = False,
    ) -> None:
        self.job_id = job_id
        self.last_state = last_state
        self.last_reason = last_reason
        self.timeout_s = timeout_s
        self.cancelled = cancelled
        seen = f"last state {last_state}"
        if last_reason and last_reason != "None":
            seen += f", reason {last_reason}"
        if detail:
            seen += f"; {detail}"
        after = "the job was cancelled" if cancelled else "the job was left as it is"
        super().__init__(f"SLURM job {job_id} not finished after {timeout_s:g}s ({seen}); {after}")


@dataclass(frozen=True)
class JobInfo:
    """One job's state as SLURM reports it.

    Attributes:
        job_id: the job id.
        state: base state word, e.g. ``RUNNING``, ``FAILED``, ``CANCELLED`` (``sacct``'s
            ``CANCELLED by 0`` is reduced to ``CANCELLED``).
        exit_code: exit status of the batch script (``7`` of ``ExitCode=7:0``), ``None`` if unknown.
        exit_signal: signal that ended it (``15`` of ``ExitCode=0:15``), ``None`` if unknown.
        reason: SLURM's reason field (``None`` is kept as the string SLURM prints).
        nodelist: allocated nodes as a SLURM host list expression (empty while pending).
        source: ``"scontrol"`` or ``"sacct"``.
        raw: every field of the record, as printed.
    """

    job_id: str
    state: str
    exit_code: int | None = None
    exit_signal: int | None = None
    reason: str = ""
    nodelist: str = ""
    source: str = "scontrol"
    raw: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def finished(self) -> bool:
        """True once the job reached a terminal state."""
        return self.state in TERMINAL_STATES

    @property
    def succeeded(self) -> bool:
        """True for COMPLETED with exit code 0."""
        return self.state == "COMPLETED" and self.exit_code in (0, None)


def _run(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float = COMMAND_TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    """Run a SLURM client; raise :class:`SlurmCommandError` if it cannot run or times out."""
    try:
        return subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            timeout=timeout_s,
            check=False,
        )
    except FileNotFoundError as exc:
        raise SlurmCommandError(argv, f"{argv[0]} not found on PATH (is slurm-client installed?)") from exc
    except subprocess.TimeoutExpired as exc:
        raise SlurmCommandError(argv, f"no answer within {timeout_s:g}s") from exc
    except OSError as exc:
        raise SlurmCommandError(argv, f"cannot run: {exc}") from exc


def submit(
    script: Path,
    *,
    workdir: Path | None = None,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> str:
    """Submit a batch script with ``sbatch --parsable`` and return the job id.

    ``workdir`` is both the directory sbatch runs in and the job's working directory
    (``--chdir``). ``extra_args`` go before the script (e.g. ``["-N", "4", "-w", "node[1-4]"]``).
    Raises :class:`SbatchError` with sbatch's stderr when it refuses the job.
    """
    argv = ["sbatch", "--parsable"]
    if workdir is not None:
        argv.append(f"--chdir={workdir}")
    argv += [*extra_args, str(script)]
    proc = _run(argv, cwd=workdir, env=env)
    if proc.returncode != 0:
        raise SbatchError.exited(argv, proc)
    # --parsable prints "<jobid>" or "<jobid>;<cluster>"
    lines = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip()]
    job_id = lines[-1].split(";", 1)[0] if lines else ""
    if not re.fullmatch(r"\d+", job_id):
        raise SbatchError.exited(argv, proc, f"no job id in output {proc.stdout.strip()!r}")
    return job_id


_KEY_RE = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/.]*)=")


def parse_scontrol_record(line: str) -> dict[str, str]:
    """Parse one ``scontrol show ... -o`` line (``Key=value Key2=value 2 ...``) into a dict.

    A value runs up to the next `` Key=``, so values containing spaces are kept whole.
    """
    text = line.strip()
    matches = list(_KEY_RE.finditer(text))
    record: dict[str, str] = {}
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        record[m.group(1)] = text[m.end() : end].strip()
    return record


def _split_exit(text: str) -> tuple[int | None, int | None]:
    m = re.fullmatch(r"\s*(\d+):(\d+)\s*", text or "")
    return (int(m.group(1)), int(m.group(2))) if m else (None, None)


def _base_state(text: str) -> str:
    words = text.split()
    return words[0].rstrip("+").upper() if words else "UNKNOWN"


def _from_scontrol(job_id: str, stdout: str) -> JobInfo | None:
    records = [parse_scontrol_record(ln) for ln in stdout.splitlines() if "JobId=" in ln]
    if not records:
        return None
    record = next((r for r in records if r.get("JobId") == job_id), records[0])
    code, sig = _split_exit(record.get("ExitCode", ""))
    return JobInfo(
        job_id=record.get("JobId", job_id),
        state=_base_state(record.get("JobState", "")),
        exit_code=code,
        exit_signal=sig,
        reason=record.get("Reason", ""),
        nodelist=record.get("NodeList", "") if record.get("NodeList") != "(null)" else "",
        source="scontrol",
        raw=record,
    )


_SACCT_FIELDS = ("JobID", "State", "ExitCode", "Reason", "NodeList")


def _from_sacct(job_id: str) -> JobInfo | None:
    """Ask ``sacct`` (accounting) about a job; ``None`` if sacct is absent, disabled or silent."""
    if shutil.which("sacct") is None:
        return None
    argv = ["sacct", "-j", job_id, "-X", "-n", "-P", "-o", ",".join(_SACCT_FIELDS)]
    try:
        proc = _run(argv)
    except SlurmCommandError:
        return None
    if proc.returncode != 0:  # e.g. "Slurm accounting storage is disabled"
        return None
    for line in proc.stdout.splitlines():
        values = line.split("|")
        if len(values) < len(_SACCT_FIELDS):
            continue
        record = dict(zip(_SACCT_FIELDS, values, strict=False))
        if record["JobID"] != job_id:
            continue
        code, sig = _split_exit(record["ExitCode"])
        return JobInfo(
            job_id=job_id,
            state=_base_state(record["State"]),
            exit_code=code,
            exit_signal=sig,
            reason=record["Reason"],
            nodelist=record["NodeList"] if record["NodeList"] != "None assigned" else "",
            source="sacct",
            raw=record,
        )
    return None


def job_state(job_id: str) -> JobInfo:
    """Current state of ``job_id`` from ``scontrol show job -o``, else from ``sacct``.

    Raises :class:`JobNotFound` when neither knows the job, and :class:`SlurmCommandError` when
    ``scontrol`` fails for another reason (e.g. the controller is down).
    """
    argv = ["scontrol", "show", "job", "-o", job_id]
    proc = _run(argv)
    if proc.returncode == 0:
        info = _from_scontrol(job_id, proc.stdout)
        if info is not None:
            return info
    elif "Invalid job id" not in proc.stderr:
        raise SlurmCommandError.exited(argv, proc)
    info = _from_sacct(job_id)
    if info is None:
        raise JobNotFound(job_id)
    return info


class _LogFollower:
    """Emit each new complete line of a file that may not exist yet, grow, or be rewritten."""

    def __init__(self, path: Path, sink: Callable[[str], None]) -> None:
        self.path = path
        self.sink = sink
        self.offset = 0
        self.partial = b""

    def poll(self, *, final: bool = False) -> None:
        try:
            size = self.path.stat().st_size
            if size < self.offset:  # truncated or replaced: start over
                self.offset, self.partial = 0, b""
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except OSError:
            return
        self.offset += len(data)
        chunks = (self.partial + data).split(b"\n")
        self.partial = chunks.pop()
        if final and self.partial:
            chunks.append(self.partial)
            self.partial = b""
        for chunk in chunks:
            self.sink(chunk.decode("utf-8", errors="replace"))


def _print_line(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# Indirection so that tests can drive time without sleeping.
_monotonic = time.monotonic
_sleep = time.sleep


def wait_for_job(
    job_id: str,
    *,
    timeout_s: float,
    poll_s: float = 1.0,
    on_poll: Callable[[JobInfo], None] | None = None,
    stream_log: Path | None = None,
    log_sink: Callable[[str], None] | None = None,
    cancel_on_timeout: bool = False,
) -> JobInfo:
    """Poll until ``job_id`` reaches a terminal state and return its final :class:`JobInfo`.

    ``on_poll`` is called with every state seen. With ``stream_log``, each new complete line of
    that file is passed to ``log_sink`` (default: printed to stdout) as it appears; the rest is
    flushed when the job ends. Transient ``scontrol`` failures are retried until the deadline.

    After ``timeout_s`` raises :class:`JobWaitTimeout` naming the job, its last state and the
    timeout. The job is NOT cancelled unless ``cancel_on_timeout`` is true.
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    follower = _LogFollower(stream_log, log_sink or _print_line) if stream_log else None
    deadline = _monotonic() + timeout_s
    last: JobInfo | None = None
    last_error: SlurmCommandError | None = None
    while True:
        info: JobInfo | None = None
        try:
            info = job_state(job_id)
            last, last_error = info, None
        except JobNotFound:
            raise
        except SlurmCommandError as exc:
            last_error = exc  # controller busy or restarting: retry until the deadline
        if follower is not None:
            follower.poll(final=info is not None and info.finished)
        if info is not None:
            if on_poll is not None:
                on_poll(info)
            if info.finished:
                return info
        remaining = deadline - _monotonic()
        if remaining <= 0:
            break
        _sleep(min(poll_s, remaining))

    detail = f"last query failed: {last_error}" if last_error else ""
    cancelled = False
    if cancel_on_timeout:
        try:
            cancel(job_id)
            cancelled = True
        except SlurmCommandError as exc:
            detail = f"{detail}; cancel failed: {exc}" if detail else f"cancel failed: {exc}"
    raise JobWaitTimeout(
        job_id,
        last.state if last else "UNKNOWN",
        timeout_s,
        last_reason=last.reason if last else "",
        detail=detail,
        cancelled=cancelled,
    )


def cancel(job_id: str, *, signal: str | None = None) -> None:
    """Cancel ``job_id`` with ``scancel`` (optionally only send ``signal``, e.g. ``"TERM"``).

    Cancelling a finished or unknown job is not an error (``scancel`` exits 0 for it).
    """
    argv = ["scancel"]
    if signal is not None:
        argv.append(f"--signal={signal}")
    argv.append(job_id)
    proc = _run(argv)
    if proc.returncode != 0:
        raise SlurmCommandError.exited(argv, proc)


def is_infrastructure_failure(info: JobInfo) -> bool:
    """True when the job ended because of the cluster, not the code under test.

    NODE_FAIL, BOOT_FAIL, PREEMPTED, REVOKED and requeue states count; FAILED, TIMEOUT,
    CANCELLED, OUT_OF_MEMORY and COMPLETED never do, whatever their reason.
    """
    return info.state in INFRASTRUCTURE_FAILURE_STATES
