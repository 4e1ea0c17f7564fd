"""The environment every Dynamo process of a job gets for ``config.infra`` (ai-dynamo 1.6.1; facts in
``docs/upstream/dynamo-infra.md``): discovery backend, request plane, event plane and the hosts it
advertises. ``ETCD_ENDPOINTS`` / ``NATS_SERVER`` are added by the role, from the values the job's
etcd / NATS published (:mod:`perfsanity.run.services`); they are not known before the job runs.

* ``discovery: file`` → ``DYN_DISCOVERY_BACKEND=file`` + ``DYN_FILE_KV=<job>/discovery``;
  ``etcd`` → ``DYN_DISCOVERY_BACKEND=etcd`` (Dynamo's default, named anyway).
* ``request_plane`` → ``DYN_REQUEST_PLANE`` (tcp | nats); the TCP hosts are always set, since the
  frontend's response stream is TCP in both modes.
* ``event_plane`` → ``DYN_EVENT_PLANE`` (zmq | nats); ``DYN_EVENT_PLANE_HOST`` only for zmq.
"""

from __future__ import annotations

from pathlib import Path

from perfsanity.spec.infra import Infra


def runtime_env(infra: Infra, host: str, discovery_dir: Path | str) -> dict[str, str]:
    env = {"DYN_DISCOVERY_BACKEND": infra.discovery}
    if infra.discovery == "file":
        env["DYN_FILE_KV"] = str(discovery_dir)
    env["DYN_REQUEST_PLANE"] = infra.request_plane
    env["DYN_EVENT_PLANE"] = infra.event_plane
    env["DYN_TCP_RPC_HOST"] = host
    env["DYN_TCP_RESPONSE_STREAM_HOST"] = host
    if infra.event_plane == "zmq":
        env["DYN_EVENT_PLANE_HOST"] = host
    return env
