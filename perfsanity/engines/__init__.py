"""Engine backends: one module each behind :class:`perfsanity.engines.base.Backend`.

Adding a backend = one new module + one line in ``_REGISTRY``; role code never changes.
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

# srun tasks per server: MPI engines (TensorRT-LLM) run one rank per GPU, others one per node.
MPI_RANK_PER_GPU = {"trtllm": True, "sglang": False, "dynamo-sglang": False, "dynamo-mocker": False}


def get_backend(name: str) -> Backend:
    """The backend object for ``metadata.backend``."""
    try:
        module = importlib.import_module(_REGISTRY[name])
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; known: {', '.join(_REGISTRY)}") from None
    return module.BACKEND


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def served_model_name(config, model_path: str) -> str:  # noqa: ANN001 - Config (import cycle)
    """The model name clients send: Dynamo and SGLang serve ``metadata.model_name`` (their workers are
    given ``--served-model-name``); trtllm-serve serves the model path it was started with."""
    if config.metadata.backend == "trtllm":
        return model_path
    return config.metadata.model_name
