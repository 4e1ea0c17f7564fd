"""Benchmark clients (load generators): one module each behind :class:`perfsanity.load.base.BenchmarkClient`.

Adding a client = one new module with a module-level ``CLIENT`` (an instance of a
:class:`~perfsanity.load.base.ClientBase` subclass) + one line in ``_REGISTRY`` (and the name in
``perfsanity.spec.config.Client``, which cannot import this package;
``tests/clients/test_clients_registry.py`` fails when the two differ). The BENCHMARK role and the install
step ask the client's declared capabilities (``tool``), never its name.
"""

from __future__ import annotations

from perfsanity.common.registry import LazyRegistry
from perfsanity.load.base import BenchmarkClient

_REGISTRY: LazyRegistry[BenchmarkClient] = LazyRegistry("client", "CLIENT", {
    "aiperf": "perfsanity.load.aiperf",
    "sglang-bench-serving": "perfsanity.load.sglang_bench",
    "trtllm-benchmark-serving": "perfsanity.load.trtllm_bench",
    "perfsanity": "perfsanity.load.perfsanity_client",
})


get_client = _REGISTRY.get  # the client object for ``benchmark.client``; ValueError naming the known ones
names = _REGISTRY.names  # every registered client name, in registry order


def default_client(*, needs_gpu: bool, has_dataset: bool, benchmark_type: str = "concurrency") -> str:
    """``benchmark.client`` when the config leaves it unset: the lean built-in client (~0.1 s start-up,
    token-id prompts, so no dataset file) for backends that need no GPU where it can measure
    ``benchmark_type``, aiperf for the others."""
    lean = "perfsanity"
    if not needs_gpu and not has_dataset and benchmark_type in get_client(lean).benchmark_types:
        return lean
    return "aiperf"
