"""Engine backends: one module each behind :class:`perfsanity.engines.base.Backend`.

Adding a backend = one new module (a ``BACKEND`` instance of a
:class:`~perfsanity.engines.base.BackendBase` subclass, overriding the capabilities that differ from
the defaults) + one line in ``_REGISTRY`` (and the name in ``perfsanity.spec.config.Backend``, which
cannot import this package; ``tests/backends/test_conformance.py`` fails when the two differ). Role,
install, launch and test-case code never change: they ask the backend's declared capabilities.
"""

from __future__ import annotations

import importlib

from perfsanity.engines.base import Backend

_REGISTRY = {
    "trtllm": "perfsanity.engines.trtllm",
    "sglang": "perfsanity.engines.sglang",
    "dynamo-sglang": "perfsanity.engines.dynamo_sglang",
    "dynamo-mocker": "perfsanity.engines.dynamo_mocker",
}

def get_backend(name: str) -> Backend:
    """The backend object for ``metadata.backend``."""
    try:
        module = importlib.import_module(_REGISTRY[name])
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; known: {', '.join(_REGISTRY)}") from None
    return module.BACKEND


def names() -> tuple[str, ...]:
    """Every registered backend name, in registry order."""
    return tuple(_REGISTRY)

