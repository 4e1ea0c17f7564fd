"""``job_meta.json``: the history match keys and provenance of a job, derived from its config."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping

from perfsanity.results.history import JobMeta
from perfsanity.spec.config import Config, WorkerConfig
from perfsanity.spec.topology import Topology


def _par(worker: WorkerConfig | None) -> dict[str, int | bool]:
    if worker is None:
        return {"tp": 0, "pp": 0, "ep": 0, "attention_dp": False}
    return {"tp": worker.tensor_parallel_size, "pp": worker.pipeline_parallel_size,
            "ep": worker.moe_expert_parallel_size or 1, "attention_dp": worker.enable_attention_dp}


def gpu_type(config: Config, environ: Mapping[str, str]) -> str:
    if config.hardware.gpu_type:
        return config.hardware.gpu_type
    if environ.get("PERFSANITY_GPU_TYPE"):
        return environ["PERFSANITY_GPU_TYPE"]
    return config.metadata.supported_gpus[0] if config.metadata.supported_gpus else "unknown"


def job_meta(config: Config, topology: Topology, *, commit: str | None,
             environ: Mapping[str, str] = os.environ) -> JobMeta:
    wc = config.worker_config
    gen = wc.server if config.kind == "aggr" else wc.gen
    ctx = None if config.kind == "aggr" else (wc.ctx if config.num_ctx_servers else None)
    g, c = _par(gen), _par(ctx)
    keys = {
        "config_name": config.name,
        "model": config.metadata.model_name,
        "precision": config.metadata.precision or "",
        "gpu_type": gpu_type(config, environ),
        "backend": config.metadata.backend,
        "mode": config.benchmark.mode if config.kind == "disagg" else "aggr",
        "num_ctx_servers": len(topology.of_kind("ctx")),
        "num_gen_servers": len(topology.of_kind("gen")) or len(topology.of_kind("server")),
        "ctx_tp": c["tp"], "ctx_pp": c["pp"], "ctx_ep": c["ep"], "ctx_attention_dp": c["attention_dp"],
        "gen_tp": g["tp"], "gen_pp": g["pp"], "gen_ep": g["ep"], "gen_attention_dp": g["attention_dp"],
        "isl": config.benchmark.input_length,
        "osl": config.benchmark.output_length,
        "total_gpus": topology.total_gpus,
    }
    return JobMeta.model_validate({
        "keys": keys,
        "commit": environ.get("GIT_COMMIT") or commit or "",
        "branch": environ.get("BRANCH_NAME") or environ.get("GIT_BRANCH") or "",
        "build_url": environ.get("BUILD_URL", ""),
        "job_id": environ.get("SLURM_JOB_ID", ""),
        "timestamp": dt.datetime.now(dt.UTC),
        "gate": config.gate,
    })
