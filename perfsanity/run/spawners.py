"""Spawners: how the supervisor starts a job's steps — ``srun`` steps inside a SLURM allocation, or
local processes — behind one interface (as submitit's ``local/`` and ``slurm/`` executors share one).

Contract of a :class:`Spawner`:

* ``hosts(needed)``: the allocation's node names in order (node index ``n`` of the topology runs on
  ``hosts[n]``); the supervisor checks there are at least ``needed``.
* ``start_install(procs, hosts)``: the per-node install step (one task per node).
* ``start_role(procs, step, hosts)``: one role's step on its hosts.
* ``start_preflight(procs, name, hosts, argv)``: one short preflight step, one task per host
  (:mod:`perfsanity.run.preflight`); its task output is the returned process's log.
* ``echo``: the step names whose process log the supervisor copies to its stdout while they run
  (``None`` = every step).

Both start processes through the caller's :class:`~perfsanity.common.processes.ProcessSet` and return
its :class:`~perfsanity.common.processes.ManagedProcess`, so every step is stopped the same way
(TERM to its process group, KILL after a bound). Neither knows about verdicts or timeouts.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from perfsanity.common.processes import ManagedProcess, ProcessSet
from perfsanity.plan.launch import RoleStep
from perfsanity.run.context import SlurmContext

INSTALL = "install"
#: the harness interpreter a role step runs (slurm_run.sh): the supervisor's own, so a role neither asks
#: the bootstrap again nor resolves ``python3`` through a version-manager shim (~0.5 s per role)
ENV_PYTHON = "PERFSANITY_PYTHON"
# SLURM's view of a job step: a local process must not believe it runs in one
_SLURM_STEP_VARS = ("SLURM_JOB_ID", "SLURM_JOBID", "SLURM_STEP_ID", "SLURM_PROCID", "SLURM_NODELIST",
                    "SLURM_JOB_NODELIST", "SLURM_STEP_NODELIST")


class Spawner(Protocol):
    echo: frozenset[str] | None

    def hosts(self, needed: int) -> tuple[str, ...]: ...

    def start_install(self, procs: ProcessSet, hosts: Sequence[str]) -> ManagedProcess: ...

    def start_role(self, procs: ProcessSet, step: RoleStep, hosts: Sequence[str]) -> ManagedProcess: ...

    def start_preflight(self, procs: ProcessSet, name: str, hosts: Sequence[str],
                        argv: Sequence[str]) -> ManagedProcess: ...


class SrunSpawner:
    """``srun`` steps inside the allocation (the batch script's environment is the steps' environment).

    A step's task output goes to ``logs/<ROLE>.log`` (srun ``-o``); srun's own messages go to
    ``logs/srun/<ROLE>.log``, which the supervisor echoes into the job's output (slurm-<id>.out).
    """

    echo = None

    def __init__(self, job_dir: Path, *, srun_args: Sequence[str], run_sh: str | Path, install_sh: str | Path,
                 environ: Mapping[str, str] | None = None, srun: str = "srun") -> None:
        self.job_dir = Path(job_dir)
        self.logs = self.job_dir / "logs"
        self.srun_args = tuple(srun_args)
        self.run_sh = str(run_sh)
        self.install_sh = str(install_sh)
        # every step (preflight, install, roles) runs the harness under this interpreter where its path exists
        self.environ = {**(os.environ if environ is None else environ), ENV_PYTHON: sys.executable}
        self.srun = srun

    def hosts(self, needed: int) -> tuple[str, ...]:
        """The allocation's nodes: ``SLURM_JOB_NODELIST`` expanded by ``scontrol show hostnames``."""
        ctx = SlurmContext.from_env(self.environ)
        return ctx.job_nodelist if ctx else ()

    def install_argv(self, hosts: Sequence[str]) -> list[str]:
        n = str(len(hosts))
        return [self.srun, *self.srun_args, "-N", n, "-n", n, "--ntasks-per-node=1", "-w", ",".join(hosts),
                "--kill-on-bad-exit=1", f"--job-name={INSTALL}", "-o", str(self.logs / f"{INSTALL}.log"),
                "bash", self.install_sh]

    def role_argv(self, step: RoleStep, hosts: Sequence[str]) -> list[str]:
        argv = [self.srun, *self.srun_args, "-N", str(len(hosts)), "-n", str(step.tasks), "-w", ",".join(hosts),
                "--kill-on-bad-exit=1", f"--job-name={step.role}", "-o", str(self.logs / f"{step.role}.log")]
        if step.overlap:
            argv.append("--overlap")
        if step.mpi:
            argv.append(f"--mpi={step.mpi}")
        return [*argv, "bash", self.run_sh]

    def preflight_argv(self, name: str, hosts: Sequence[str], argv: Sequence[str]) -> list[str]:
        # --overlap: several roles' checks share a node; no -o: the task output comes back to this host,
        # so a node that cannot write the job dir is still heard
        n = str(len(hosts))
        return [self.srun, *self.srun_args, "-N", n, "-n", n, "--ntasks-per-node=1", "-w", ",".join(hosts),
                "--overlap", f"--job-name={name}", *argv]

    def start_preflight(self, procs: ProcessSet, name: str, hosts: Sequence[str],
                        argv: Sequence[str]) -> ManagedProcess:
        env = {k: v for k, v in self.environ.items() if k != "DISAGG_SERVING_TYPE"}
        return procs.start(name, self.preflight_argv(name, hosts, argv), env=env,
                           log_path=self.logs / "preflight" / f"{name}.log", cwd=self.job_dir)

    def start_install(self, procs: ProcessSet, hosts: Sequence[str]) -> ManagedProcess:
        env = {k: v for k, v in self.environ.items() if k != "DISAGG_SERVING_TYPE"}
        return procs.start(INSTALL, self.install_argv(hosts), env=env, log_path=self.logs / "srun" / f"{INSTALL}.log",
                           cwd=self.job_dir)

    def start_role(self, procs: ProcessSet, step: RoleStep, hosts: Sequence[str]) -> ManagedProcess:
        env = {**self.environ, "DISAGG_SERVING_TYPE": step.role}
        return procs.start(step.role, self.role_argv(step, hosts), env=env,
                           log_path=self.logs / "srun" / f"{step.role}.log", cwd=self.job_dir)


def role_env(exports: Mapping[str, str], role: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """A local role's environment: this process's (minus SLURM's step variables), what launch.sh would
    export, the role's name, and the checkout on ``PYTHONPATH``."""
    env = dict(os.environ if base is None else base)
    for name in _SLURM_STEP_VARS:
        env.pop(name, None)
    env.update(exports)
    env["DISAGG_SERVING_TYPE"] = role
    env["PERFSANITY_JOB_ID"] = "local"
    env[ENV_PYTHON] = sys.executable
    repo = exports["PERFSANITY_REPO"]
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class LocalSpawner:
    """Every step a local session-led process on this machine: the install module, then
    ``bash <run_sh>`` per role with the role's environment; output to ``logs/<name>.log``."""

    echo = frozenset({INSTALL, "BENCHMARK"})

    def __init__(self, job_dir: Path, exports: Mapping[str, str], base_env: Mapping[str, str] | None = None) -> None:
        self.job_dir = Path(job_dir)
        self.logs = self.job_dir / "logs"
        self.exports = dict(exports)
        self.base_env = base_env

    def hosts(self, needed: int) -> tuple[str, ...]:
        return ("localhost",) * needed  # every node index is this machine

    def start_install(self, procs: ProcessSet, hosts: Sequence[str]) -> ManagedProcess:
        argv = [sys.executable, "-m", "perfsanity.run.install", "--job-dir", str(self.job_dir)]
        return procs.start(INSTALL, argv, env=role_env(self.exports, "BENCHMARK", self.base_env),
                           log_path=self.logs / f"{INSTALL}.log")

    def start_role(self, procs: ProcessSet, step: RoleStep, hosts: Sequence[str]) -> ManagedProcess:
        return procs.start(step.role, ["bash", self.exports["PERFSANITY_RUN_SH"]],
                           env=role_env(self.exports, step.role, self.base_env),
                           log_path=self.logs / f"{step.role}.log", cwd=self.job_dir)
