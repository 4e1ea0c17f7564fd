"""Perf history: one record per (run, point), in SQLite (default) or PostgreSQL, via SQLAlchemy 2.

The store is safe for several processes writing at once:

* SQLite: WAL journal, a busy timeout, every transaction taken with ``BEGIN IMMEDIATE`` (so two writers
  never both hold a read lock and then deadlock on the upgrade), and a bounded retry with jitter
  (:mod:`tenacity`) on "database is locked".
* PostgreSQL: plain READ COMMITTED inserts; the schema is migrated under a transaction-scoped advisory
  lock; serialization failures and deadlocks are retried the same way.

The schema is managed by Alembic (:mod:`perfsanity.results.migrations`): opening a store upgrades the
database to the newest revision, in one transaction under the write lock above, so doing it from many
processes at once is safe, and a database made before migrations existed is adopted as it is. A
database migrated by a newer perfsanity is refused with a clear error.

The match keys are defined once, in :data:`perfsanity.plan.jobmeta.MATCH_KEY_FIELDS`; the ORM columns
here are derived from it. A job directory carries them in ``job_meta.json`` (see
:class:`~perfsanity.plan.jobmeta.JobMeta`), because ``results.json``
(:class:`~perfsanity.load.results_json.RunResult`) only knows config name, backend, mode and GPUs.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self, TypeVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    create_engine,
    event,
    func,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, NoSuchModuleError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import StaticPool
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random, wait_random_exponential

from perfsanity.common.errors import ConfigError, PerfsanityError
from perfsanity.common.redact import mask_url
from perfsanity.load.results_json import RunResult, flatten, repeat_metrics
from perfsanity.plan.jobmeta import (
    JOB_META_FILE,
    MATCH_KEY_FIELDS,
    JobMeta,
    KeyField,
    MatchKeys,
    RunMeta,
    default_point,
    keys_at,
    utc,
)
from perfsanity.results import migrations

SCHEMA_VERSION = 1


class AlreadyRecorded(PerfsanityError):
    """:meth:`HistoryStore.add_run` of a run id the history holds already (``ids``: its records)."""

    def __init__(self, message: str, ids: list[int]) -> None:
        super().__init__(message)
        self.ids = ids
ENV_HISTORY = "PERFSANITY_HISTORY"
DEFAULT_HISTORY_PATH = Path("~/.cache/perfsanity/history.sqlite")

# Metrics that also get a typed column (handy for SQL dashboards); every metric is in ``metrics`` JSON.
TYPED_METRICS = (
    "output_token_throughput",
    "total_token_throughput",
    "ttft_median",
    "ttft_p99",
    "tpot_median",
    "itl_median",
)

_LOCK_BUDGET_S = 120.0  # total time a write keeps retrying "database is locked"
_BUSY_TIMEOUT_S = 30.0  # sqlite3 busy handler per statement
_PG_SCHEMA_LOCK_KEY = 0x7065_7266  # arbitrary constant: advisory lock id for schema creation
_RETRY_SQLSTATES = {"40001", "40P01"}  # serialization_failure, deadlock_detected
_T = TypeVar("_T")


# --------------------------------------------------------------------------------------------- keys


def _keys_filter(keys: MatchKeys | Mapping[str, Any] | None) -> dict[str, Any]:
    if keys is None:
        return {}
    if isinstance(keys, MatchKeys):
        return keys.as_dict()
    allowed = set(MatchKeys.field_names())
    unknown = sorted(set(keys) - allowed)
    if unknown:
        raise ConfigError(None, "keys", f"unknown match key(s) {unknown}; allowed: {sorted(allowed)}")
    return dict(keys)


# ------------------------------------------------------------------------------------------- schema


class _UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC (naive on SQLite, timestamptz on PostgreSQL); always returns aware UTC datetimes."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        value = utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class _Base(DeclarativeBase):
    metadata = MetaData()


def _key_column_type(f: KeyField) -> Any:
    return String(f.width) if f.type is str else (Boolean if f.type is bool else Integer)


# One row per (run, concurrency). The match-key columns come from MATCH_KEY_FIELDS, the typed metric
# columns from TYPED_METRICS; NOT NULL unless said otherwise (as the annotated declarative form had it).
_Record: Any = type("_Record", (_Base,), {
    "__tablename__": "perf_records",
    "__table_args__": (Index("ix_perf_records_config_conc_ts", "config_name", "concurrency", "ts"),
                       # a run is recorded once: a second add of the same run id is refused (migration 0002)
                       # widened to the point by migration 0003 (a run has several points per concurrency)
                       Index("uq_perf_records_run_point", "run_uid", "concurrency", "benchmark_type", "point",
                             unique=True)),
    "id": mapped_column(Integer, primary_key=True, autoincrement=True),
    "run_uid": mapped_column(String(36), index=True, nullable=False),
    **{f.name: mapped_column(_key_column_type(f), nullable=False) for f in MATCH_KEY_FIELDS},
    # provenance
    "commit": mapped_column(String(64), default="", nullable=False),
    "branch": mapped_column(String(255), default="", nullable=False),
    "build_url": mapped_column(Text, default="", nullable=False),
    "job_id": mapped_column(String(255), default="", nullable=False),
    "ts": mapped_column(_UTCDateTime(), nullable=False),
    "post_merge": mapped_column(Boolean, nullable=False),
    # measurements
    "metrics": mapped_column(JSON, nullable=False),
    **{f"m_{m}": mapped_column(Float, nullable=True) for m in TYPED_METRICS},
    # validity and gate outcome
    "valid": mapped_column(Boolean, default=True, nullable=False),
    "invalid_reason": mapped_column(Text, default="", nullable=False),
    "gate_verdicts": mapped_column(JSON, nullable=True),
    "is_regression": mapped_column(Boolean, default=False, nullable=False),
})


class _Meta(_Base):
    __tablename__ = "perfsanity_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


@dataclass(frozen=True)
class HistoryRecord:
    """One stored measurement (one run at one concurrency)."""

    id: int
    run_uid: str
    keys: MatchKeys
    commit: str
    branch: str
    build_url: str
    job_id: str
    timestamp: datetime
    post_merge: bool
    metrics: Mapping[str, float]
    valid: bool
    invalid_reason: str
    gate_verdicts: Mapping[str, str] = field(default_factory=dict)
    is_regression: bool = False

    def metric(self, name: str) -> float | None:
        return self.metrics.get(name)


def _to_record(row: _Record) -> HistoryRecord:
    keys = MatchKeys(**{name: getattr(row, name) for name in MatchKeys.field_names()})
    return HistoryRecord(
        id=row.id,
        run_uid=row.run_uid,
        keys=keys,
        commit=row.commit,
        branch=row.branch,
        build_url=row.build_url,
        job_id=row.job_id,
        timestamp=row.ts,
        post_merge=bool(row.post_merge),
        metrics={k: float(v) for k, v in (row.metrics or {}).items()},
        valid=bool(row.valid),
        invalid_reason=row.invalid_reason or "",
        gate_verdicts=dict(row.gate_verdicts or {}),
        is_regression=bool(row.is_regression),
    )


# -------------------------------------------------------------------------------------------- store


def default_history_url() -> str:
    """``$PERFSANITY_HISTORY`` (a path or a SQLAlchemy URL), else ``~/.cache/perfsanity/history.sqlite``."""
    return os.environ.get(ENV_HISTORY) or str(DEFAULT_HISTORY_PATH.expanduser())


def _normalize_url(url: str | Path) -> str:
    text_url = str(url).strip()
    if not text_url:
        raise ConfigError(None, "history", "empty history location")
    if "://" in text_url:
        return text_url
    path = Path(text_url).expanduser().resolve()
    return f"sqlite:///{path}"


def _is_sqlite_locked(exc: BaseException) -> bool:
    msg = str(getattr(exc, "orig", exc)).lower()
    return "database is locked" in msg or "database is busy" in msg or "database table is locked" in msg


class HistoryStore:
    """Perf history in SQLite (path or ``sqlite:///…``) or PostgreSQL (``postgresql+psycopg://…``)."""

    def __init__(self, url: str | Path | None = None, *, lock_budget_s: float = _LOCK_BUDGET_S) -> None:
        self.url = _normalize_url(url if url is not None else default_history_url())
        self.masked_url = mask_url(self.url)
        self._lock_budget_s = lock_budget_s
        try:
            sa_url = make_url(self.url)
        except ArgumentError:
            raise ConfigError(None, "history", f"not a database URL or path: {self.masked_url}") from None
        backend = sa_url.get_backend_name()
        if backend not in ("sqlite", "postgresql"):
            raise ConfigError(
                None, "history", f"unsupported database {backend!r} in {self.masked_url}; use a SQLite path "
                "or postgresql+psycopg://user@host/db"
            )
        self.dialect = backend
        try:
            if backend == "sqlite":
                self._engine = self._sqlite_engine(sa_url)
            else:
                self._engine = create_engine(sa_url, pool_pre_ping=True)
        except (NoSuchModuleError, ImportError) as exc:
            raise PerfsanityError(f"history {self.masked_url}: database driver missing ({exc})") from None
        self._schema_ready = False

    # ---- engine setup

    def _sqlite_engine(self, sa_url: Any) -> Engine:
        database = sa_url.database
        if database and database != ":memory:":
            path = Path(database)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(None, "history", f"cannot create directory {path.parent}: {exc}") from None
            engine = create_engine(sa_url, connect_args={"timeout": _BUSY_TIMEOUT_S})
        else:
            engine = create_engine(
                sa_url, connect_args={"check_same_thread": False}, poolclass=StaticPool
            )
        memory = not database or database == ":memory:"

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see _on_begin)
            cur = dbapi_conn.cursor()
            try:
                cur.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
                if not memory:
                    # the journal-mode switch needs a moment alone with the file: retried like a write
                    retry = self._lock_retry(_is_sqlite_locked, wait_random(0.01, 0.1))
                    retry(cur.execute, "PRAGMA journal_mode = WAL")
                    cur.execute("PRAGMA synchronous = NORMAL")
            finally:
                cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine

    # ---- plumbing

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _lock_retry(self, transient: Callable[[BaseException], bool], wait: Any) -> Retrying:
        """Retry ``transient`` errors for at most the lock budget, then re-raise the last one."""
        return Retrying(retry=retry_if_exception(transient), stop=stop_after_delay(self._lock_budget_s),
                        wait=wait, reraise=True)

    def _transient(self, exc: BaseException) -> bool:
        if not isinstance(exc, DBAPIError):
            return False
        if self.dialect == "sqlite":
            return _is_sqlite_locked(exc)
        return getattr(exc.orig, "sqlstate", None) in _RETRY_SQLSTATES

    def _retrying(self, what: str, fn: Callable[[], _T]) -> _T:
        """Run ``fn``, retrying locks / serialization failures with jittered backoff (bounded by the lock
        budget); a database error becomes one :class:`PerfsanityError` naming the store and ``what``."""
        try:
            return self._lock_retry(self._transient, wait_random_exponential(multiplier=0.02, max=1.0))(fn)
        except DBAPIError as exc:
            lines = str(getattr(exc, "orig", exc)).strip().splitlines()
            detail = lines[0] if lines else type(exc).__name__
            raise PerfsanityError(f"history {self.masked_url}: {what} failed: {detail}") from None

    def _ensure_schema(self) -> None:
        if self._schema_ready:
            return

        def upgrade() -> None:
            with self._engine.begin() as conn:
                if self.dialect == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_SCHEMA_LOCK_KEY})
                migrations.upgrade_to_head(conn, where=f"history {self.masked_url}")
                row = conn.execute(select(_Meta.value).where(_Meta.key == "schema_version")).first()
                if row is not None and int(row[0]) > SCHEMA_VERSION:
                    raise PerfsanityError(
                        f"history {self.masked_url} has schema version {row[0]}, newer than this perfsanity "
                        f"understands ({SCHEMA_VERSION}); upgrade perfsanity"
                    )

        self._retrying("migrating the schema", upgrade)
        self._schema_ready = True

    # ---- API

    def add_run(
        self,
        keys: MatchKeys | Mapping[str | int, MatchKeys],
        run: RunResult,
        meta: RunMeta | None = None,
    ) -> list[int]:
        """Store every point of ``run``; returns the new record ids in ``run.results`` order.

        ``keys`` is either common keys (moved to each result's point: concurrency, benchmark type,
        label, own isl/osl) or a mapping point label → keys (a plain point also by its concurrency). A run whose status is ``failed``, a concurrency with no completed
        request, or a client_saturated one is stored as invalid (it never feeds a baseline).
        """
        meta = meta or RunMeta()
        ts = meta.resolved_timestamp()
        run_uid = meta.run_id or str(uuid.uuid4())
        rows: list[_Record] = []
        for res in run.results:
            k = keys_at(keys, res)
            if k is None:
                what = (f"concurrency {res.concurrency}" if res.label == default_point(res.concurrency)
                        else f"point {res.label}")
                raise ConfigError(None, "keys", f"no match keys for {what}")
            for name, mine in (("concurrency", res.concurrency), ("point", res.label)):
                if getattr(k, name) != mine:
                    raise ConfigError(None, f"keys[{res.label}].{name}", f"is {getattr(k, name)!r}, result says "
                                      f"{mine!r}")
            for name in ("config_name", "backend", "mode", "total_gpus"):
                if getattr(k, name) != getattr(run, name):
                    raise ConfigError(
                        None, f"keys.{name}", f"{getattr(k, name)!r} does not match the run's "
                        f"{getattr(run, name)!r}"
                    )
            metrics = {m: v for m, v in (flatten(res) | repeat_metrics(res)).items() if math.isfinite(v)}
            valid, reason = meta.valid, meta.invalid_reason
            if valid and run.status == "failed":
                valid, reason = False, "run failed: " + "; ".join(run.failures)[:500]
            if valid and res.completed == 0:
                valid, reason = False, "no completed requests"
            if valid and res.validity == "client_saturated":
                valid, reason = False, ("client_saturated: " + "; ".join(res.evidence))[:500]
            rows.append(
                _Record(
                    run_uid=run_uid,
                    **k.as_dict(),
                    commit=meta.commit,
                    branch=meta.branch,
                    build_url=mask_url(meta.build_url, keep_user=False),
                    job_id=meta.job_id,
                    ts=ts,
                    post_merge=meta.post_merge,
                    metrics=metrics,
                    **{f"m_{m}": metrics.get(m) for m in TYPED_METRICS},
                    valid=valid,
                    invalid_reason=reason if not valid else "",
                    is_regression=False,
                )
            )
        if not rows:
            return []
        self._ensure_schema()

        def insert() -> list[int]:
            fresh = [_clone_row(r) for r in rows]  # a failed attempt leaves the originals dirty
            try:
                with Session(self._engine) as session, session.begin():
                    session.add_all(fresh)
                    session.flush()
                    return [r.id for r in fresh]
            except IntegrityError:
                if not meta.run_id:
                    raise
            with Session(self._engine) as session:  # the unique run id: another writer recorded it
                ids = list(session.scalars(select(_Record.id).where(_Record.run_uid == run_uid).order_by(_Record.id)))
            raise AlreadyRecorded(f"run {run_uid} is already recorded in {self.masked_url} (records {ids})", ids)

        return self._retrying("adding records", insert)

    def query(
        self,
        keys: MatchKeys | Mapping[str, Any] | None = None,
        *,
        since: datetime | timedelta | None = None,
        until: datetime | None = None,
        valid_only: bool = True,
        post_merge_only: bool = False,
        branch: str | None = None,
        limit: int | None = None,
    ) -> list[HistoryRecord]:
        """Records matching ``keys`` (all :class:`MatchKeys` fields, or a partial mapping such as
        ``{"config_name": "x"}``), oldest first. ``since`` is inclusive, ``until`` exclusive."""
        filters = _keys_filter(keys)
        stmt = select(_Record)
        for name, value in filters.items():
            stmt = stmt.where(getattr(_Record, name) == value)
        if isinstance(since, timedelta):
            since = datetime.now(UTC) - since
        if since is not None:
            stmt = stmt.where(_Record.ts >= utc(since))
        if until is not None:
            stmt = stmt.where(_Record.ts < utc(until))
        if valid_only:
            stmt = stmt.where(_Record.valid.is_(True))
        if post_merge_only:
            stmt = stmt.where(_Record.post_merge.is_(True))
        if branch is not None:
            stmt = stmt.where(_Record.branch == branch)
        if limit is not None:
            # newest ``limit`` records, still returned oldest first
            stmt = stmt.order_by(_Record.ts.desc(), _Record.id.desc()).limit(limit)
        else:
            stmt = stmt.order_by(_Record.ts, _Record.id)
        self._ensure_schema()

        def run() -> list[HistoryRecord]:
            with Session(self._engine) as session, session.begin():
                return [_to_record(r) for r in session.scalars(stmt)]

        records = self._retrying("querying", run)
        if limit is not None:
            records.reverse()
        return records

    def series(
        self,
        keys: MatchKeys,
        metric: str,
        *,
        since: datetime | timedelta | None = None,
        until: datetime | None = None,
        post_merge_only: bool = True,
    ) -> list[tuple[datetime, float]]:
        """``(timestamp, value)`` of ``metric`` over valid records with exactly these keys."""
        out = []
        for rec in self.query(keys, since=since, until=until, post_merge_only=post_merge_only):
            value = rec.metrics.get(metric)
            if value is not None:
                out.append((rec.timestamp, value))
        return out

    def get(self, record_id: int) -> HistoryRecord:
        self._ensure_schema()

        def run() -> HistoryRecord | None:
            with Session(self._engine) as session, session.begin():
                row = session.get(_Record, record_id)
                return _to_record(row) if row is not None else None

        rec = self._retrying("reading a record", run)
        if rec is None:
            raise PerfsanityError(f"history {self.masked_url}: no record with id {record_id}")
        return rec

    def mark_invalid(self, record_id: int, reason: str) -> None:
        """Exclude a record from baselines (e.g. a known-bad node); the record is kept."""
        if not reason.strip():
            raise ConfigError(None, "reason", "give a reason for invalidating a record")
        self._update(record_id, valid=False, invalid_reason=reason.strip())

    def mark_valid(self, record_id: int) -> None:
        self._update(record_id, valid=True, invalid_reason="")

    def set_gate_verdicts(self, record_id: int, verdicts: Mapping[str, str]) -> None:
        """Remember the gate's verdict per metric for this record (WARN/FAIL marks it a regression)."""
        self._update(
            record_id,
            gate_verdicts=dict(verdicts),
            is_regression=any(v in ("WARN", "FAIL") for v in verdicts.values()),
        )

    def _update(self, record_id: int, **values: Any) -> None:
        self._ensure_schema()

        def run() -> int:
            with self._engine.begin() as conn:
                result = conn.execute(update(_Record).where(_Record.id == record_id).values(**values))
                return result.rowcount

        if self._retrying("updating a record", run) == 0:
            raise PerfsanityError(f"history {self.masked_url}: no record with id {record_id}")

    def configs(self) -> list[str]:
        """Distinct config names in the store."""
        self._ensure_schema()

        def run() -> list[str]:
            with self._engine.begin() as conn:
                rows = conn.execute(select(_Record.config_name).distinct().order_by(_Record.config_name))
                return [r[0] for r in rows]

        return self._retrying("listing configs", run)

    def count(self) -> int:
        """Number of records (valid or not)."""
        self._ensure_schema()

        def run() -> int:
            with self._engine.begin() as conn:
                return int(conn.execute(select(func.count()).select_from(_Record)).scalar_one())

        return self._retrying("counting records", run)


def _clone_row(row: _Record) -> _Record:
    cols = {c.key: getattr(row, c.key) for c in _Record.__table__.columns if c.key != "id"}
    return _Record(**cols)


def group_by_keys(records: Iterable[HistoryRecord]) -> dict[MatchKeys, list[HistoryRecord]]:
    out: dict[MatchKeys, list[HistoryRecord]] = {}
    for rec in records:
        out.setdefault(rec.keys, []).append(rec)
    return out


def keys_for_run(job_meta: JobMeta, run: RunResult) -> dict[str, MatchKeys]:
    """Match keys per point label of ``run``; checks that meta and results describe the same run."""
    for name in ("config_name", "backend", "mode", "total_gpus"):
        mine, theirs = getattr(job_meta.keys, name), getattr(run, name)
        if mine != theirs:
            raise ConfigError(JOB_META_FILE, f"keys.{name}", f"{mine!r} differs from results.json ({theirs!r})")
    return {res.label: job_meta.keys_for(res) for res in run.results}


__all__: Sequence[str] = (
    "HistoryRecord",
    "HistoryStore",
    "JOB_META_FILE",
    "JobMeta",
    "MatchKeys",
    "RunMeta",
    "default_history_url",
    "group_by_keys",
    "keys_for_run",
    "utc",
)
