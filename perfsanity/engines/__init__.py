"""Engine backends: one module each behind :class:`perfsanity.engines.base.Backend`.

Adding a backend = one new module (a ``BACKEND`` instance of a
:class:`~perfsanity.engines.base.BackendBase` subclass, overriding the capabilities that differ from
the defaults) + one line in ``_REGISTRY`` (and the name in ``perfsanity.spec.config.Backend``, which
cannot import this package; ``tests/backends/test_conformance.py`` fails when the two differ). Role,
install, launch and test-case code never change: they ask the backend's declared capabilities.
"""

from __future__ import annotations

from perfsanity.common.registry import LazyRegistry
from perfsanity.engines.base import Backend

_REGISTRY: LazyRegistry[Backend] = LazyRegistry("backend", "BACKEND", {
    "trtllm": "perfsanity.engines.trtllm",
    "sglang": "perfsanity.engines.sglang",
    "dynamo-sglang": "perfsanity.engines.dynamo_sglang",
    "dynamo-mocker": "perfsanity.engines.dynamo_mocker",
})


get_backend = _REGISTRY.get  # the backend object for ``metadata.backend``; ValueError naming the known ones
names = _REGISTRY.names  # every registered backend name, in registry order
