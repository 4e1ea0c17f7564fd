"""Optional upload of history records to OpenSearch, one document per (run, concurrency).

Off by default: nothing is sent unless a URL is configured (``PERFSANITY_OPENSEARCH_URL`` or an
explicit :class:`UploadConfig`). Documents follow the flat, type-prefixed style of TensorRT-LLM's perf
database so the same dashboards can read them: ``s_`` string, ``l_`` long, ``d_`` double, ``b_`` bool,
``ts_`` timestamp (epoch milliseconds). Metrics are ``d_<flat metric name>`` (``d_ttft_p99``, …).

Documents are sent with the ``_bulk`` API (NDJSON) to ``<url>/<index>/_bulk``, each with a stable
``_id`` (run uid + concurrency), so re-uploading a run overwrites instead of duplicating.
Credentials come from the environment only (``PERFSANITY_OPENSEARCH_USER``/``_PASSWORD`` for basic
auth or ``PERFSANITY_OPENSEARCH_TOKEN`` for a bearer token) and never appear in messages (URLs are
shown through :func:`perfsanity.common.redact.mask_url`). Unreachable servers, 5xx and 429 answers are
retried (:mod:`tenacity`, exponential backoff, ``attempts`` in all); other HTTP errors are final.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from perfsanity.common.errors import ConfigError, PerfsanityError
from perfsanity.common.redact import mask_url
from perfsanity.results.history import HistoryRecord

ENV_URL = "PERFSANITY_OPENSEARCH_URL"
ENV_INDEX = "PERFSANITY_OPENSEARCH_INDEX"
ENV_USER = "PERFSANITY_OPENSEARCH_USER"
ENV_PASSWORD = "PERFSANITY_OPENSEARCH_PASSWORD"  # noqa: S105 - name of a variable, not a secret
ENV_TOKEN = "PERFSANITY_OPENSEARCH_TOKEN"  # noqa: S105
DEFAULT_INDEX = "perfsanity-perf"
DOC_SCHEMA = "perfsanity-perf-v1"


@dataclass(frozen=True)
class UploadConfig:
    url: str
    index: str = DEFAULT_INDEX
    timeout_s: float = 30.0
    attempts: int = 3
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # auth; never printed

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(None, ENV_URL, f"must be an http(s) URL, got {mask_url(self.url, keep_user=False)!r}")
        if not self.index or any(c in self.index for c in '/\\ ?#*"<>|,') or self.index != self.index.lower():
            raise ConfigError(None, ENV_INDEX, f"not a valid index name: {self.index!r}")
        if self.attempts < 1 or self.timeout_s <= 0:
            raise ConfigError(None, "upload", "attempts must be >= 1 and timeout_s > 0")

    @property
    def endpoint(self) -> str:
        """``<url>/<index>/_bulk``, without credentials, query or fragment (safe to print)."""
        parts = urlsplit(mask_url(self.url, keep_user=False))
        return urlunsplit((parts.scheme, parts.netloc, f"{parts.path.rstrip('/')}/{self.index}/_bulk", "", ""))

    @property
    def display_url(self) -> str:
        return self.endpoint


def config_from_env(env: Mapping[str, str] | None = None) -> UploadConfig | None:
    """The upload target from the environment, or None (upload off) when no URL is set."""
    env = os.environ if env is None else env
    url = env.get(ENV_URL, "").strip()
    if not url:
        return None
    headers: dict[str, str] = {}
    parts = urlsplit(url)
    user, password = env.get(ENV_USER), env.get(ENV_PASSWORD)
    if parts.username and not user:  # credentials in the URL: move them to a header
        user, password = parts.username, parts.password or ""
    if env.get(ENV_TOKEN):
        headers["Authorization"] = f"Bearer {env[ENV_TOKEN]}"
    elif user:
        cred = base64.b64encode(f"{user}:{password or ''}".encode()).decode("ascii")
        headers["Authorization"] = f"Basic {cred}"
    return UploadConfig(url=mask_url(url, keep_user=False), index=env.get(ENV_INDEX, DEFAULT_INDEX).strip(),
                        headers=headers)


def document(record: HistoryRecord) -> dict[str, Any]:
    """One record as a flat, type-prefixed document."""
    k = record.keys
    doc: dict[str, Any] = {
        "s_schema": DOC_SCHEMA,
        "s_config_name": k.config_name,
        "s_model_name": k.model,
        "s_precision": k.precision,
        "s_gpu_type": k.gpu_type,
        "s_backend": k.backend,
        "s_mode": k.mode,
        "l_num_ctx_servers": k.num_ctx_servers,
        "l_num_gen_servers": k.num_gen_servers,
        "l_ctx_tp_size": k.ctx_tp,
        "l_ctx_pp_size": k.ctx_pp,
        "l_ctx_ep_size": k.ctx_ep,
        "b_ctx_enable_attention_dp": k.ctx_attention_dp,
        "l_gen_tp_size": k.gen_tp,
        "l_gen_pp_size": k.gen_pp,
        "l_gen_ep_size": k.gen_ep,
        "b_gen_enable_attention_dp": k.gen_attention_dp,
        "l_isl": k.isl,
        "l_osl": k.osl,
        "l_concurrency": k.concurrency,
        "s_benchmark_type": k.benchmark_type,
        "s_point": k.point,
        "l_num_gpus": k.total_gpus,
        "s_commit": record.commit,
        "s_branch": record.branch,
        "s_build_url": mask_url(record.build_url, keep_user=False),
        "s_job_id": record.job_id,
        "s_run_uid": record.run_uid,
        "l_record_id": record.id,
        "ts_created": int(record.timestamp.timestamp() * 1000),
        "b_is_post_merge": record.post_merge,
        "b_is_valid": record.valid,
        "s_invalid_reason": record.invalid_reason,
        "b_is_regression": record.is_regression,
    }
    for metric, value in sorted(record.metrics.items()):
        doc[f"d_{metric}"] = float(value)
    for metric, verdict in sorted(record.gate_verdicts.items()):
        doc[f"s_gate_{metric}"] = verdict
    return doc


def document_id(record: HistoryRecord) -> str:
    k = record.keys
    # a plain concurrency point keeps the id it had before benchmark types
    point = str(k.concurrency) if (k.benchmark_type, k.point) == ("concurrency", f"c{k.concurrency}") else k.point
    return hashlib.sha256(f"{record.run_uid}:{point}".encode()).hexdigest()[:32]


def bulk_body(records: Sequence[HistoryRecord], index: str) -> bytes:
    lines = []
    for rec in records:
        lines.append(json.dumps({"index": {"_index": index, "_id": document_id(rec)}}))
        lines.append(json.dumps(document(rec), sort_keys=True))
    return ("\n".join(lines) + "\n").encode()


class _Transient(Exception):
    """A failed POST worth retrying (unreachable, 5xx, 429)."""


class _Final(Exception):
    """A failed POST not worth retrying (other HTTP errors)."""


def _post(config: UploadConfig, body: bytes, headers: Mapping[str, str]) -> bytes:
    req = urllib.request.Request(config.endpoint, data=body, headers=dict(headers), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=config.timeout_s) as resp:  # noqa: S310 - http(s) only
            return resp.read()
    except urllib.error.HTTPError as exc:
        error = f"HTTP {exc.code} {exc.reason}"
        raise (_Transient(error) if exc.code >= 500 or exc.code == 429 else _Final(error)) from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise _Transient(f"unreachable ({getattr(exc, 'reason', exc)})") from None


def upload_records(records: Sequence[HistoryRecord], config: UploadConfig) -> int:
    """POST ``records`` in one bulk request; returns how many were indexed. Raises
    :class:`PerfsanityError` on HTTP errors, unreachable servers or per-document failures."""
    if not records:
        return 0
    body = bulk_body(records, config.index)
    headers = {"Content-Type": "application/x-ndjson", "Accept": "application/json", **config.headers}
    retrying = Retrying(retry=retry_if_exception_type(_Transient), stop=stop_after_attempt(config.attempts),
                        wait=wait_exponential(multiplier=0.5, max=4.0), reraise=True)
    try:
        payload = retrying(_post, config, body, headers)
    except (_Transient, _Final) as exc:
        tries = retrying.statistics.get("attempt_number", config.attempts)
        raise PerfsanityError(f"upload to {config.display_url} failed after {tries} attempt(s): {exc}") from None
    try:
        answer = json.loads(payload or b"{}")
    except json.JSONDecodeError:
        raise PerfsanityError(f"upload to {config.display_url}: answer is not JSON") from None
    if isinstance(answer, dict) and answer.get("errors"):
        reasons = []
        for item in answer.get("items", []):
            info = next(iter(item.values()), {}) if isinstance(item, dict) else {}
            err = info.get("error") if isinstance(info, dict) else None
            if err:
                reasons.append(str(err.get("reason", err) if isinstance(err, dict) else err))
        raise PerfsanityError(
            f"upload to {config.display_url}: {len(reasons)} document(s) rejected: "
            f"{reasons[0] if reasons else 'unknown reason'}"
        )
    return len(records)
