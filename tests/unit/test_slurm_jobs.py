"""Unit tests for perfsanity.jobs.slurm with subprocess stubbed out.

Every scontrol/sacct/sbatch output below was captured from the local 4-node SLURM 22.05 cluster
(scripts/local_slurm/start.sh, WITH_SACCT=1 for the sacct lines)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from perfsanity.common.errors import PerfsanityError, WaitTimeout
from perfsanity.jobs import slurm as jobs
from perfsanity.jobs.slurm import JobInfo

_COMMON = "UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901758 Nice=0 Account=(null) QOS=(null) "

SCONTROL_COMPLETED_4NODE = (
    "JobId=1 JobName=steps.sbatch " + _COMMON + "JobState=COMPLETED Reason=None "
    "Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:00:02 "
    "TimeLimit=00:05:00 TimeMin=N/A SubmitTime=2026-11-24T21:56:05 EligibleTime=2026-11-24T21:56:05"
    " AccrueTime=2026-11-24T21:56:05 StartTime=2026-11-24T21:56:06 EndTime=2026-11-24T21:56:08 "
    "Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=2026-11-24T21:56:06 "
    "Scheduler=Main Partition=debug AllocNode:Sid=localhost:2134 ReqNodeList=(null) "
    "ExcNodeList=(null) NodeList=node[1-4] BatchHost=node1 NumNodes=4 NumCPUs=4 NumTasks=4 "
    "CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=4,node=4,billing=4 Socks/Node=* "
    "NtasksPerN:B:S:C=1:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryNode=0 MinTmpDiskNode=0 "
    "Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) "
    "Network=(null) Command=/tmp/ps_jobs/steps.sbatch WorkDir=/tmp/ps_jobs "
    "StdErr=/tmp/ps_jobs/1.out StdIn=/dev/null StdOut=/tmp/ps_jobs/1.out Power= "
    "TresPerNode=gres:gpu:4 \n"
)
SCONTROL_FAILED = (
    "JobId=2 JobName=wrap " + _COMMON + "JobState=FAILED Reason=NonZeroExitCode "
    "Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=7:0 RunTime=00:00:00 "
    "TimeLimit=UNLIMITED TimeMin=N/A Partition=debug AllocNode:Sid=localhost:2134 "
    "ReqNodeList=(null) ExcNodeList=(null) NodeList=node[1-2] BatchHost=node1 NumNodes=2 "
    "NumCPUs=2 NumTasks=2 CPUs/Task=1 Command=(null) WorkDir=/tmp/ps_jobs "
    "StdErr=/tmp/ps_jobs/2.out StdIn=/dev/null StdOut=/tmp/ps_jobs/2.out Power= \n"
)
SCONTROL_CANCELLED = (
    "JobId=3 JobName=wrap " + _COMMON + "JobState=CANCELLED Reason=None Dependency=(null) "
    "Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:15 RunTime=00:00:01 "
    "TimeLimit=UNLIMITED Partition=debug ReqNodeList=(null) ExcNodeList=(null) NodeList=node1 "
    "BatchHost=node1 NumNodes=1 NumCPUs=1 NumTasks=1 Command=(null) WorkDir=/tmp/ps_jobs Power= \n"
)
SCONTROL_PENDING = (
    "JobId=4 JobName=wrap " + _COMMON + "JobState=PENDING Reason=Priority Dependency=(null) "
    "Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:00:00 TimeLimit=UNLIMITED "
    "StartTime=Unknown EndTime=Unknown Partition=debug ReqNodeList=(null) ExcNodeList=(null) "
    "NodeList= NumNodes=4-4 NumCPUs=4 NumTasks=4 CPUs/Task=1 Command=(null) "
    "WorkDir=/tmp/ps_jobs Power= \n"
)
SCONTROL_RUNNING = (
    "JobId=12 JobName=my job " + _COMMON + "JobState=RUNNING Reason=None Dependency=(null) "
    "Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:00:01 TimeLimit=UNLIMITED "
    "Partition=debug AllocNode:Sid=localhost:2134 ReqNodeList=(null) ExcNodeList=(null) "
    "NodeList=node[1-2] BatchHost=node1 NumNodes=2 NumCPUs=2 NumTasks=2 Command=(null) "
    "WorkDir=/tmp/ps_jobs StdErr=/tmp/ps_jobs/r.out StdIn=/dev/null StdOut=/tmp/ps_jobs/r.out "
    "Power= \n"
)
SCONTROL_UNSATISFIABLE = (
    "JobId=14 JobName=wrap " + _COMMON + "JobState=PENDING Reason=PartitionNodeLimit "
    "Dependency=(null) ExitCode=0:0 ReqNodeList=(null) ExcNodeList=(null) NodeList= NumNodes=9 "
    "Power= \n"
)
SCONTROL_INVALID = "slurm_load_jobs error: Invalid job id specified\n"
SCONTROL_DOWN = "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n"
SACCT_FAILED = "1|FAILED|5:0|None|node[1-2]\n"
SACCT_CANCELLED = "2|CANCELLED by 0|0:0|None|node1\n"
SACCT_DISABLED = "Slurm accounting storage is disabled\n"
SBATCH_BAD_PARTITION = (
    "sbatch: error: invalid partition specified: nope\n"
    "sbatch: error: Batch job submission failed: Invalid partition name specified\n"
)

Result = subprocess.CompletedProcess[str] | BaseException
Handler = Callable[[list[str]], Result]


class FakeSlurm:
    """Stands in for subprocess.run: answers per command name, records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], dict[str, object]]] = []
        self.handlers: dict[str, Handler] = {}

    def on(self, command: str, *results: Result) -> None:
        """Answer ``command`` with ``results`` in turn (the last one repeats)."""
        queue = list(results)

        def handler(argv: list[str]) -> Result:
            return queue.pop(0) if len(queue) > 1 else queue[0]

        self.handlers[command] = handler

    def argvs(self, command: str) -> list[list[str]]:
        return [argv for argv, _ in self.calls if argv[0] == command]

    def __call__(self, argv: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
        assert "shell" not in kwargs or kwargs["shell"] is False
        assert kwargs.get("timeout"), "every SLURM call must be bounded"
        self.calls.append((argv, kwargs))
        if argv[0] not in self.handlers:
            raise AssertionError(f"unexpected command {argv}")
        result = self.handlers[argv[0]](argv)
        if isinstance(result, BaseException):
            raise result
        return result


def ok(stdout: str = "", stderr: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess([], 0, stdout, stderr)


def err(stderr: str, code: int = 1, stdout: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess([], code, stdout, stderr)


@pytest.fixture
def slurm(monkeypatch: pytest.MonkeyPatch) -> FakeSlurm:
    fake = FakeSlurm()
    monkeypatch.setattr(jobs.subprocess, "run", fake)
    monkeypatch.setattr(jobs.shutil, "which", lambda name: f"/usr/bin/{name}")
    return fake


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(jobs, "_monotonic", fake.monotonic)
    monkeypatch.setattr(jobs, "_sleep", fake.sleep)
    return fake


# --- submit ---------------------------------------------------------------------------------


def test_submit_returns_job_id_and_passes_args(slurm: FakeSlurm, tmp_path: Path) -> None:
    slurm.on("sbatch", ok("17\n"))
    job_id = jobs.submit(tmp_path / "run.sbatch", workdir=tmp_path, extra_args=["-N", "4"])
    assert job_id == "17"
    (argv, kwargs) = slurm.calls[0]
    assert argv == [
        "sbatch",
        "--parsable",
        f"--chdir={tmp_path}",
        "-N",
        "4",
        str(tmp_path / "run.sbatch"),
    ]
    assert kwargs["cwd"] == tmp_path


def test_submit_accepts_cluster_suffix_and_warnings(slurm: FakeSlurm) -> None:
    slurm.on("sbatch", ok("23;perfsanity\n", stderr="sbatch: warning: something minor\n"))
    assert jobs.submit(Path("x.sbatch")) == "23"
    assert slurm.calls[0][0] == ["sbatch", "--parsable", "x.sbatch"]


def test_submit_error_carries_sbatch_stderr(slurm: FakeSlurm) -> None:
    slurm.on("sbatch", err(SBATCH_BAD_PARTITION))
    with pytest.raises(jobs.SbatchError) as excinfo:
        jobs.submit(Path("x.sbatch"), extra_args=["-p", "nope"])
    exc = excinfo.value
    assert exc.returncode == 1
    assert exc.stderr == SBATCH_BAD_PARTITION
    assert "Invalid partition name specified" in str(exc)
    assert "sbatch --parsable -p nope x.sbatch" in str(exc)
    assert isinstance(exc, PerfsanityError)


def test_submit_without_job_id_is_an_error(slurm: FakeSlurm) -> None:
    slurm.on("sbatch", ok("Submitted batch job 5\n"))
    with pytest.raises(jobs.SbatchError, match="no job id"):
        jobs.submit(Path("x.sbatch"))


def test_submit_missing_sbatch(slurm: FakeSlurm) -> None:
    slurm.on("sbatch", FileNotFoundError("sbatch"))
    with pytest.raises(jobs.SlurmCommandError, match="not found on PATH"):
        jobs.submit(Path("x.sbatch"))


def test_submit_hanging_sbatch(slurm: FakeSlurm) -> None:
    slurm.on("sbatch", subprocess.TimeoutExpired(["sbatch"], 30))
    with pytest.raises(jobs.SlurmCommandError, match="no answer within"):
        jobs.submit(Path("x.sbatch"))


# --- job_state ------------------------------------------------------------------------------


def test_parse_scontrol_record_keeps_values_with_spaces() -> None:
    record = jobs.parse_scontrol_record(SCONTROL_RUNNING)
    assert record["JobName"] == "my job"
    assert record["AllocNode:Sid"] == "localhost:2134"
    assert record["Power"] == ""
    assert record["NodeList"] == "node[1-2]"
    assert record["ReqNodeList"] == "(null)"


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        (SCONTROL_COMPLETED_4NODE, JobInfo("1", "COMPLETED", 0, 0, "None", "node[1-4]")),
        (SCONTROL_FAILED, JobInfo("2", "FAILED", 7, 0, "NonZeroExitCode", "node[1-2]")),
        (SCONTROL_CANCELLED, JobInfo("3", "CANCELLED", 0, 15, "None", "node1")),
        (SCONTROL_PENDING, JobInfo("4", "PENDING", 0, 0, "Priority", "")),
        (SCONTROL_RUNNING, JobInfo("12", "RUNNING", 0, 0, "None", "node[1-2]")),
    ],
)
def test_job_state_from_scontrol(slurm: FakeSlurm, stdout: str, expected: JobInfo) -> None:
    slurm.on("scontrol", ok(stdout))
    info = jobs.job_state(expected.job_id)
    assert info == expected
    assert info.source == "scontrol"
    assert slurm.argvs("scontrol") == [["scontrol", "show", "job", "-o", expected.job_id]]
    assert info.finished == (expected.state in {"COMPLETED", "FAILED", "CANCELLED"})
    assert info.succeeded == (expected.state == "COMPLETED")


def test_job_state_falls_back_to_sacct(slurm: FakeSlurm) -> None:
    slurm.on("scontrol", err(SCONTROL_INVALID))
    slurm.on("sacct", ok(SACCT_FAILED))
    info = jobs.job_state("1")
    assert info == JobInfo("1", "FAILED", 5, 0, "None", "node[1-2]", source="sacct")
    assert slurm.argvs("sacct") == [
        ["sacct", "-j", "1", "-X", "-n", "-P", "-o", "JobID,State,ExitCode,Reason,NodeList"]
    ]


def test_sacct_cancelled_by_uid_is_cancelled(slurm: FakeSlurm) -> None:
    slurm.on("scontrol", err(SCONTROL_INVALID))
    slurm.on("sacct", ok(SACCT_CANCELLED))
    assert jobs.job_state("2").state == "CANCELLED"


@pytest.mark.parametrize(
    "sacct", [err(SACCT_DISABLED), ok(""), FileNotFoundError("sacct")], ids=["off", "empty", "gone"]
)
def test_unknown_job_without_accounting(slurm: FakeSlurm, sacct: Result) -> None:
    slurm.on("scontrol", err(SCONTROL_INVALID))
    slurm.on("sacct", sacct)
    with pytest.raises(jobs.JobNotFound, match="99"):
        jobs.job_state("99")


def test_unknown_job_when_sacct_not_installed(slurm: FakeSlurm, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs.shutil, "which", lambda name: None)
    slurm.on("scontrol", err(SCONTROL_INVALID))
    with pytest.raises(jobs.JobNotFound):
        jobs.job_state("99")
    assert slurm.argvs("sacct") == []


def test_controller_down_is_a_command_error(slurm: FakeSlurm) -> None:
    slurm.on("scontrol", err(SCONTROL_DOWN))
    with pytest.raises(jobs.SlurmCommandError, match="Unable to contact slurm controller"):
        jobs.job_state("5")
    assert slurm.argvs("sacct") == []


# --- wait_for_job ---------------------------------------------------------------------------


def test_wait_returns_final_info_and_reports_each_poll(slurm: FakeSlurm, clock: FakeClock) -> None:
    slurm.on("scontrol", ok(SCONTROL_PENDING), ok(SCONTROL_PENDING), ok(SCONTROL_COMPLETED_4NODE))
    seen: list[str] = []
    info = jobs.wait_for_job("4", timeout_s=60, poll_s=2, on_poll=lambda i: seen.append(i.state))
    assert info.state == "COMPLETED"
    assert seen == ["PENDING", "PENDING", "COMPLETED"]
    assert clock.sleeps == [2, 2]


def test_wait_timeout_names_job_state_and_timeout(slurm: FakeSlurm, clock: FakeClock) -> None:
    slurm.on("scontrol", ok(SCONTROL_RUNNING))
    with pytest.raises(jobs.JobWaitTimeout) as excinfo:
        jobs.wait_for_job("12", timeout_s=5, poll_s=2)
    exc = excinfo.value
    assert (exc.job_id, exc.last_state, exc.timeout_s, exc.cancelled) == ("12", "RUNNING", 5, False)
    assert "SLURM job 12" in str(exc) and "5s" in str(exc) and "RUNNING" in str(exc)
    assert "left as it is" in str(exc)
    assert isinstance(exc, WaitTimeout)
    assert clock.sleeps == [2, 2, 1]  # never sleeps past the deadline
    assert slurm.argvs("scancel") == []  # not cancelled unless asked


def test_wait_timeout_reports_pending_reason(slurm: FakeSlurm, clock: FakeClock) -> None:
    slurm.on("scontrol", ok(SCONTROL_UNSATISFIABLE))
    with pytest.raises(jobs.JobWaitTimeout, match="reason PartitionNodeLimit") as excinfo:
        jobs.wait_for_job("14", timeout_s=3, poll_s=1)
    assert excinfo.value.last_reason == "PartitionNodeLimit"


def test_wait_timeout_cancels_when_asked(slurm: FakeSlurm, clock: FakeClock) -> None:
    slurm.on("scontrol", ok(SCONTROL_RUNNING))
    slurm.on("scancel", ok())
    with pytest.raises(jobs.JobWaitTimeout, match="was cancelled") as excinfo:
        jobs.wait_for_job("12", timeout_s=1, poll_s=1, cancel_on_timeout=True)
    assert excinfo.value.cancelled
    assert slurm.argvs("scancel") == [["scancel", "12"]]


def test_wait_retries_transient_scontrol_failures(slurm: FakeSlurm, clock: FakeClock) -> None:
    slurm.on(
        "scontrol",
        ok(SCONTROL_RUNNING),
        err(SCONTROL_DOWN),
        subprocess.TimeoutExpired(["scontrol"], 30),
        ok(SCONTROL_FAILED),
    )
    assert jobs.wait_for_job("2", timeout_s=60, poll_s=1).state == "FAILED"


def test_wait_timeout_mentions_failing_queries(slurm: FakeSlurm, clock: FakeClock) -> None:
    slurm.on("scontrol", ok(SCONTROL_RUNNING), err(SCONTROL_DOWN))
    with pytest.raises(jobs.JobWaitTimeout) as excinfo:
        jobs.wait_for_job("12", timeout_s=3, poll_s=1)
    assert excinfo.value.last_state == "RUNNING"
    assert "Unable to contact slurm controller" in str(excinfo.value)


def test_wait_unknown_job_raises_at_once(slurm: FakeSlurm, clock: FakeClock) -> None:
    slurm.on("scontrol", err(SCONTROL_INVALID))
    slurm.on("sacct", err(SACCT_DISABLED))
    with pytest.raises(jobs.JobNotFound):
        jobs.wait_for_job("99", timeout_s=60, poll_s=1)
    assert clock.sleeps == []


def test_wait_rejects_non_positive_timeout() -> None:
    with pytest.raises(ValueError):
        jobs.wait_for_job("1", timeout_s=0)


def test_wait_streams_new_log_lines(slurm: FakeSlurm, clock: FakeClock, tmp_path: Path) -> None:
    log = tmp_path / "job.out"
    writes = iter(["", "line 1\nline", " 2\n", "tail without newline"])
    states = iter([SCONTROL_PENDING, SCONTROL_RUNNING, SCONTROL_RUNNING, SCONTROL_COMPLETED_4NODE])

    def scontrol(argv: list[str]) -> Result:
        chunk = next(writes)
        if chunk:  # the file appears only once the job writes to it
            with log.open("a") as fh:
                fh.write(chunk)
        return ok(next(states))

    slurm.handlers["scontrol"] = scontrol
    lines: list[str] = []
    info = jobs.wait_for_job("1", timeout_s=60, poll_s=1, stream_log=log, log_sink=lines.append)
    assert info.state == "COMPLETED"
    assert lines == ["line 1", "line 2", "tail without newline"]


def test_wait_streams_to_stdout_by_default(
    slurm: FakeSlurm, clock: FakeClock, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "job.out"
    log.write_text("hello\n")
    slurm.on("scontrol", ok(SCONTROL_COMPLETED_4NODE))
    jobs.wait_for_job("1", timeout_s=5, stream_log=log)
    assert capsys.readouterr().out == "hello\n"


# --- cancel ---------------------------------------------------------------------------------


def test_cancel(slurm: FakeSlurm) -> None:
    slurm.on("scancel", ok())
    jobs.cancel("12")
    jobs.cancel("12", signal="TERM")
    assert slurm.argvs("scancel") == [["scancel", "12"], ["scancel", "--signal=TERM", "12"]]


def test_cancel_failure_raises(slurm: FakeSlurm) -> None:
    slurm.on("scancel", err("scancel: error: Unable to contact slurm controller\n"))
    with pytest.raises(jobs.SlurmCommandError, match="Unable to contact"):
        jobs.cancel("12")


# --- classification -------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["NODE_FAIL", "BOOT_FAIL", "PREEMPTED", "REVOKED", "REQUEUED", "REQUEUE_HOLD"])
def test_infrastructure_failures(state: str) -> None:
    assert jobs.is_infrastructure_failure(JobInfo("1", state, 0, 0, "None", "node1"))


@pytest.mark.parametrize(
    "state",
    ["FAILED", "TIMEOUT", "CANCELLED", "COMPLETED", "OUT_OF_MEMORY", "RUNNING", "PENDING"],
)
def test_not_infrastructure_failures(state: str) -> None:
    assert not jobs.is_infrastructure_failure(JobInfo("1", state, 1, 0, "NodeDown", "node1"))


def test_captured_failed_job_is_not_infrastructure(slurm: FakeSlurm) -> None:
    slurm.on("scontrol", ok(SCONTROL_FAILED))
    assert not jobs.is_infrastructure_failure(jobs.job_state("2"))
