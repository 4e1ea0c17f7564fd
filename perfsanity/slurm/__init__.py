"""SLURM access for perfsanity: the job-step environment (:mod:`.env`) and job control (:mod:`.jobs`)."""

from __future__ import annotations

from perfsanity.slurm.env import SlurmContext, expand_hostlist, parse_hostlist
from perfsanity.slurm.jobs import (
    JobInfo,
    JobNotFound,
    JobWaitTimeout,
    SbatchError,
    SlurmCommandError,
    SlurmError,
    cancel,
    is_infrastructure_failure,
    job_state,
    submit,
    wait_for_job,
)

__all__ = [
    "JobInfo",
    "JobNotFound",
    "JobWaitTimeout",
    "SbatchError",
    "SlurmCommandError",
    "SlurmContext",
    "SlurmError",
    "cancel",
    "expand_hostlist",
    "is_infrastructure_failure",
    "job_state",
    "parse_hostlist",
    "submit",
    "wait_for_job",
]
