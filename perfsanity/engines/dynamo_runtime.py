"""The environment every Dynamo process of a job gets for ``config.infra`` (ai-dynamo 1.6.1; facts in
``docs/upstream/dynamo-infra.md``): discovery backend, request plane, event plane and the hosts it
advertises. ``ETCD_ENDPOINTS`` / ``NATS_SERVER`` are added by the role, from the values the job's
etcd / NATS published (:mod:`perfsanity.run.services`); they are not known before the job runs.

* ``discovery: file`` → ``DYN_DISCOVERY_BACKEND=file`` + ``DYN_FILE_KV=<job>/discovery``;
  ``etcd`` → ``DYN_DISCOVERY_BACKEND=etcd`` (Dynamo's default, named anyway).
* ``request_plane`` → ``DYN_REQUEST_PLANE`` (tcp | nats); the TCP hosts are always set, since the
  frontend's response stream is TCP in both modes.
* ``event_plane`` → ``DYN_EVENT_PLANE`` (zmq | nats); ``DYN_EVENT_PLANE_HOST`` only for zmq.

What the frontend has discovered (:func:`discovered_workers`): ``dynamo.frontend``'s ``GET /health``
answers ``{"status", "endpoints", "instances": [{"namespace", "component", "endpoint", "instance_id",
...}]}``, one entry per endpoint of every worker instance it currently sees. Workers serve
``dyn://<namespace>.prefill.generate`` (prefill) or ``dyn://<namespace>.backend.generate`` (decode and
aggregated): ``dynamo/mocker/args.py`` ``DEFAULT_PREFILL_ENDPOINT``/``DEFAULT_ENDPOINT`` and
``dynamo/sglang/args.py`` (ai-dynamo 1.6.1), and seen on a running mocker job.
Its Prometheus ``/metrics`` names no decode worker before the first request, so it is not used.
"""

from __future__ import annotations

import json
from collections import Counter
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


#: the component of a worker instance's ``generate`` endpoint -> the worker kinds it serves
_COMPONENT_KINDS = {"prefill": ("ctx",), "backend": ("gen", "server")}
DISCOVERY_PATH = "/health"


def discovered_workers(body: bytes) -> dict[str, int]:
    """Worker kind -> distinct instances the frontend's ``/health`` answer lists serving ``generate``."""
    try:
        data = json.loads(body)
        instances = data["instances"]
        seen = {(str(i["component"]), i["instance_id"]) for i in instances if i.get("endpoint") == "generate"}
    except (ValueError, TypeError, KeyError, AttributeError):
        raise ValueError(f"not a dynamo.frontend /health answer with an 'instances' list: {body[:200]!r}") from None
    counts: Counter[str] = Counter()
    for component, _ in seen:
        for kind in _COMPONENT_KINDS.get(component, ()):
            counts[kind] += 1
    return dict(counts)


class FrontendDiscovery:
    """Mixin for backends behind ``dynamo.frontend``: readiness checks what the frontend discovered."""

    discovery_path = DISCOVERY_PATH

    def discovered_workers(self, body: bytes) -> dict[str, int]:
        return discovered_workers(body)
