"""The ``infra`` and ``frontend`` config sections: how Dynamo's processes find and talk to each other,
and how many frontends serve the job.

``infra`` (Dynamo backends only)::

    infra:
      discovery: file      # file: the job's shared discovery/ dir | etcd: a per-job etcd
      request_plane: tcp   # tcp: direct TCP between frontend and workers | nats: through a per-job NATS
      event_plane: zmq     # zmq: the per-job ZMQ broker | nats: the per-job NATS (JetStream)

The default is file/tcp/zmq for every topology: nothing to start besides the ZMQ broker, and the
shared job dir is all the state there is (on SLURM it is on the shared file system already). The
cluster layout that srtctl and Dynamo's SLURM guide use is ``etcd``/``nats``/``nats``: DISAGG_SERVER
then starts etcd and/or NATS on its node before any worker needs them, on ports of this job only
(:mod:`perfsanity.run.services`).

``frontend``::

    frontend:
      count: 1       # Dynamo frontends DISAGG_SERVER starts (each on an OS-assigned port)
      nginx: false   # an nginx in front of them, on a port of its own; the benchmark then targets nginx

More than one frontend needs ``nginx: true``: the benchmark has one front door.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Discovery = Literal["file", "etcd"]
RequestPlane = Literal["tcp", "nats"]
EventPlane = Literal["zmq", "nats"]
MAX_FRONTENDS = 32


class Infra(BaseModel):
    """Discovery backend, request plane and event plane of the job's Dynamo processes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    discovery: Discovery = Field(default="file", description="file: shared discovery/ dir; etcd: per-job etcd")
    request_plane: RequestPlane = Field(default="tcp", description="tcp: direct; nats: through the per-job NATS")
    event_plane: EventPlane = Field(default="zmq", description="zmq: per-job broker; nats: the per-job NATS")

    @property
    def needs_etcd(self) -> bool:
        return self.discovery == "etcd"

    @property
    def needs_nats(self) -> bool:
        return self.request_plane == "nats" or self.event_plane == "nats"

    @property
    def is_default(self) -> bool:
        return self == Infra()


class Frontend(BaseModel):
    """How many frontends DISAGG_SERVER runs, and whether nginx balances across them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    count: int = Field(default=1, ge=1, le=MAX_FRONTENDS)
    nginx: bool = False

    @model_validator(mode="after")
    def _one_front_door(self) -> Frontend:
        if self.count > 1 and not self.nginx:
            raise ValueError(f"frontend.count={self.count} needs frontend.nginx: true (the benchmark has one "
                             "front door)")
        return self

    @property
    def is_default(self) -> bool:
        return self == Frontend()
