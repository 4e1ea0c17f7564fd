"""Shared set-up of the tests that run on the real local SLURM (``scripts/local_slurm/start.sh``).

* ``cluster`` (session): the running cluster; skips without one, fails under ``CI=true``.
* ``s`` (this module): helpers for end-to-end jobs — running ``submit.py`` / the Jenkins script as
  subprocesses with an isolated history, reading ``scontrol``, finding a job's leftover processes.

tests/slurm is not a package, so test modules reach the helpers through the ``s`` fixture.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from perfsanity.jobs import slurm as jobs
from perfsanity.run.context import parse_hostlist

REPO_ROOT = Path(__file__).resolve().parents[2]
SUBMIT = REPO_ROOT / "submit.py"
RUN_PERF_TEST = REPO_ROOT / "jenkins/scripts/perf/run_perf_test.sh"
LOCAL_CLUSTER = REPO_ROOT / "test_configs/clusters/local-slurm.yaml"
TEST_CONFIGS = Path(__file__).resolve().parent / "configs"
DEFAULT_BASE = Path(os.environ.get("PERFSANITY_SLURM_BASE", "/tmp/perfsanity-slurm"))
NEEDED_NODES = 4


@dataclass(frozen=True)
class Cluster:
    """What the tests know about the running cluster."""

    slurm_conf: str
    nodes: tuple[str, ...]
    gpus_per_node: int


def _read_env_file(path: Path) -> dict[str, str]:
    """Parse the ``export K=V`` lines that start.sh writes."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text().splitlines():
        if line.startswith("export ") and "=" in line:
            key, _, value = line[len("export ") :].partition("=")
            values[key.strip()] = value.strip().strip("'\"")
    return values


def _unavailable(reason: str) -> None:
    message = f"no local SLURM cluster reachable ({reason}); run scripts/local_slurm/start.sh"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true: {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The running local cluster; skips (fails under CI=true) when none is reachable."""
    env_values = _read_env_file(DEFAULT_BASE / "env.sh")
    conf = os.environ.get("SLURM_CONF") or env_values.get("SLURM_CONF") or "/etc/slurm/slurm.conf"
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        _unavailable("sinfo/sbatch not on PATH")
    if not Path(conf).is_file():
        _unavailable(f"no SLURM config at {conf}")
    try:
        proc = subprocess.run(
            ["sinfo", "-h", "-N", "-t", "idle,mixed,allocated", "-o", "%N"],
            capture_output=True,
            text=True,
            timeout=15,
            env={**os.environ, "SLURM_CONF": conf},
            check=False,
        )
    except subprocess.TimeoutExpired:
        _unavailable("sinfo did not answer within 15s")
    if proc.returncode != 0:
        _unavailable(f"sinfo failed: {proc.stderr.strip()}")
    nodes = tuple(sorted(set(proc.stdout.split()), key=lambda n: (len(n), n)))
    if len(nodes) < NEEDED_NODES:
        _unavailable(f"need {NEEDED_NODES} usable nodes, sinfo shows {list(nodes)}")
    saved = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf  # jobs.* run the clients with the inherited environment
    try:
        yield Cluster(
            slurm_conf=conf,
            nodes=nodes[:NEEDED_NODES],
            gpus_per_node=int(env_values.get("PERFSANITY_SLURM_GPUS_PER_NODE", "0") or 0),
        )
    finally:
        if saved is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved


# Captured at import: every conftest.py here is imported under the name "conftest", so looking
# sys.modules["conftest"] up later may find another directory's conftest.
_THIS_MODULE = sys.modules[__name__]


@pytest.fixture(scope="session")
def s():
    """This module: the helpers below."""
    return _THIS_MODULE


# ------------------------------------------------------------------------------------ processes


def job_processes(marker: str, job_id: str | None = None) -> list[str]:
    """Live (non-zombie) processes whose argv or environment contains ``marker``, from /proc.

    Use a unique job dir path as the marker: every process of a job either names it on its command
    line or inherits it (``PERFSANITY_JOB_DIR``, ``SLURM_SUBMIT_DIR``), including the servers the roles
    start, whose argv does not name it. With ``job_id``, only processes of that SLURM job (its
    ``SLURM_JOB_ID``). (``ps`` may cut long lines; zombies have an empty cmdline.)
    """
    me = os.getpid()
    needle = marker.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            argv = (entry / "cmdline").read_bytes()
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                environ = b""
        except (OSError, IndexError):
            continue  # exited meanwhile
        if job_id is not None and f"SLURM_JOB_ID={job_id}".encode() not in environ.split(b"\0"):
            continue
        if state != "Z" and (needle in argv or needle in environ):
            text = argv.replace(b"\0", b" ").decode(errors="replace").strip()
            found.append(f"{entry.name} {text[:300]}")
    return found


def wait_no_processes(marker: str, timeout_s: float, job_id: str | None = None) -> list[str]:
    """Poll until no process of ``marker`` is left or ``timeout_s`` passed; return what is left."""
    deadline = time.monotonic() + timeout_s
    while (left := job_processes(marker, job_id)) and time.monotonic() < deadline:
        time.sleep(0.3)
    return left


# ------------------------------------------------------------------------------------- commands


def env(tmp_root: Path, **extra: str) -> dict[str, str]:
    """Environment for submit.py / the Jenkins script (sbatch passes it on to the job's steps).

    History goes to a private SQLite file so that test jobs neither read nor write the user's."""
    out = dict(os.environ)
    out["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), out.get("PYTHONPATH")]))
    out["PERFSANITY_HISTORY"] = str(tmp_root / "history.sqlite")
    out.pop("PERFSANITY_CLUSTER", None)
    out.pop("PERFSANITY_PRE_MERGE", None)
    out.pop("PERFSANITY_RUN_CI", None)
    out.update(extra)
    return out


def run(argv: Sequence[str], *, env: dict[str, str], timeout_s: float, cwd: Path = REPO_ROOT,
        log: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command (bounded); stdout+stderr are kept in the result and, if given, in ``log``."""
    started = time.monotonic()
    try:
        proc = subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        pytest.fail(f"{' '.join(argv)} did not finish within {timeout_s:g}s; output:\n{out[-4000:]}", pytrace=False)
    proc.elapsed_s = time.monotonic() - started  # type: ignore[attr-defined]
    if log is not None:
        log.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    return proc


def submit_cmd(config: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(SUBMIT), "--config", str(config), "--cluster", str(LOCAL_CLUSTER),
            "--out", str(out), *extra]


def job_id_of(job_dir: Path) -> str | None:
    try:
        return str(json.loads((job_dir / "jobid.json").read_text())["job_id"])
    except (OSError, ValueError, KeyError):
        return None


def cancel_quietly(job_id: str | None) -> None:
    if job_id:
        try:
            jobs.cancel(job_id)
        except jobs.SlurmError:
            pass


def scontrol_job(job_id: str) -> dict[str, str]:
    """Every field of ``scontrol show job -o`` (StartTime, EndTime, NodeList, ...)."""
    return dict(jobs.job_state(job_id).raw)


def job_nodes(job_id: str) -> list[str]:
    return parse_hostlist(jobs.job_state(job_id).nodelist)


def seconds_between(start: str, end: str) -> float:
    """``EndTime - StartTime`` of scontrol's ISO timestamps."""
    import datetime as dt

    return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()


def wait_for(predicate, timeout_s: float, what: str, poll_s: float = 0.5):  # noqa: ANN001, ANN201
    """Poll ``predicate`` until it returns a truthy value (returned) or fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"waited {timeout_s:g}s for {what}", pytrace=False)
        time.sleep(poll_s)


def wait_first_result(job_dir: Path, job_id: str, timeout_s: float) -> dict:
    """results.json once it holds its first concurrency; fails at once if the job ended before that."""

    def first_result() -> dict | None:
        data = read_json(job_dir / "results.json")
        if data and data.get("results"):
            return data
        info = jobs.job_state(job_id)
        if info.finished:
            pytest.fail(f"job {job_id} ended {info.state} before its first concurrency finished", pytrace=False)
        return None

    return wait_for(first_result, timeout_s=timeout_s, what=f"job {job_id}: first concurrency in results.json",
                    poll_s=0.3)


def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def started_roles(job_dir: Path) -> dict[str, dict]:
    """``rendezvous/<ROLE>.<rank>.started`` files → {"ROLE.rank": data}."""
    out = {}
    for path in sorted((job_dir / "rendezvous").glob("*.started")):
        data = read_json(path)
        if data is not None:
            out[path.name.removesuffix(".started")] = data
    return out


# ------------------------------------------------------------------------------------- nodes


def node_state(node: str) -> str:
    """sinfo's state of one node (``idle``, ``allocated``, ``down``, ``idle+drain``...), lower case."""
    proc = subprocess.run(["sinfo", "-h", "-N", "-n", node, "-o", "%T"], capture_output=True, text=True, timeout=15,
                          check=False)
    return proc.stdout.strip().lower()


def node_down(node: str, reason: str) -> None:
    """``scontrol update state=down``: slurmctld fails the jobs on it (NODE_FAIL, or requeue)."""
    subprocess.run(["scontrol", "update", f"nodename={node}", "state=down", f"reason={reason}"], check=True,
                   capture_output=True, timeout=15)


def resume_node(node: str) -> None:
    """Bring a node back into service (with ReturnToService=2 it often already came back by itself)."""
    for _ in range(20):
        state = node_state(node)
        if state and not any(w in state for w in ("down", "drain", "fail")):
            return
        subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], capture_output=True, timeout=15,
                       check=False)
        time.sleep(0.5)
