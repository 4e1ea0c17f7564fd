"""The SLURM environment of a job step, read in one place.

Everything in perfsanity that needs to know "where am I running" (job id, step, this node's name,
the nodes of the step, task rank, local rank, GPUs) goes through :meth:`SlurmContext.from_env`.
It takes the environment as a mapping so that it stays pure and testable; it returns ``None``
outside SLURM.

Host lists (``node[1-3,5],other``) are expanded with ``scontrol show hostnames`` when a caller
asks for it and SLURM's client is usable, and otherwise by :func:`parse_hostlist`, a pure-Python
parser of the same syntax (ranges, zero padding, several bracket groups per name).
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["SlurmContext", "expand_hostlist", "parse_hostlist"]

_RANGE_RE = re.compile(r"^(\d+)(?:-(\d+))?$")


def _split_top_level(text: str) -> list[str]:
    """Split ``text`` on commas that are not inside ``[...]``."""
    parts: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
            if depth > 1:
                raise ValueError(f"nested '[' in host list {text!r}")
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ']' in host list {text!r}")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise ValueError(f"unbalanced '[' in host list {text!r}")
    parts.append(text[start:])
    return parts


def _expand_ranges(body: str, whole: str) -> list[str]:
    """Expand the inside of one bracket group, e.g. ``01-03,7`` -> ``01 02 03 7``."""
    out: list[str] = []
    for item in body.split(","):
        m = _RANGE_RE.match(item.strip())
        if not m:
            raise ValueError(f"bad range {item!r} in host list {whole!r}")
        lo_text, hi_text = m.group(1), m.group(2)
        if hi_text is None:
            out.append(lo_text)
            continue
        lo, hi = int(lo_text), int(hi_text)
        if hi < lo:
            raise ValueError(f"descending range {item!r} in host list {whole!r}")
        # SLURM pads every number to the width of the range's first one (``01-10``).
        out.extend(str(n).zfill(len(lo_text)) for n in range(lo, hi + 1))
    return out


def _expand_name(pattern: str, whole: str) -> list[str]:
    """Expand one host pattern, which may hold several bracket groups (``r[1-2]n[1-2]``)."""
    pieces: list[list[str]] = []
    rest = pattern
    while rest:
        open_at = rest.find("[")
        if open_at < 0:
            if "]" in rest:
                raise ValueError(f"unbalanced ']' in host list {whole!r}")
            pieces.append([rest])
            break
        close_at = rest.find("]", open_at)
        if close_at < 0:
            raise ValueError(f"unbalanced '[' in host list {whole!r}")
        if open_at:
            pieces.append([rest[:open_at]])
        pieces.append(_expand_ranges(rest[open_at + 1 : close_at], whole))
        rest = rest[close_at + 1 :]
    return ["".join(combo) for combo in itertools.product(*pieces)]


def parse_hostlist(expr: str) -> list[str]:
    """Expand a SLURM host list expression in pure Python.

    ``"node[1-3,5],other"`` -> ``["node1", "node2", "node3", "node5", "other"]``;
    ``"n[01-02]"`` keeps zero padding; ``"r[1-2]n[1-2]"`` gives the cartesian product in
    SLURM's order. Order is preserved and duplicates are kept, as ``scontrol`` does.
    Raises ``ValueError`` for malformed input (unbalanced brackets, bad ranges).
    """
    text = expr.strip()
    if not text:
        return []
    hosts: list[str] = []
    for part in _split_top_level(text):
        part = part.strip()
        if not part:
            raise ValueError(f"empty host name in host list {expr!r}")
        hosts.extend(_expand_name(part, expr))
    return hosts


DEFAULT_SLURM_CONF = "/etc/slurm/slurm.conf"


def expand_hostlist(
    expr: str,
    *,
    env: Mapping[str, str] | None = None,
    use_scontrol: bool = True,
    timeout_s: float = 5.0,
) -> list[str]:
    """Expand a host list with ``scontrol show hostnames``, falling back to :func:`parse_hostlist`.

    ``scontrol`` is used only when ``use_scontrol`` is true, it is on ``PATH``, a slurm.conf
    exists (``SLURM_CONF`` from ``env``, else from the process environment, else
    ``/etc/slurm/slurm.conf``; without one scontrol retries for a minute), the expression is well
    formed (``scontrol`` prints garbage for e.g. ``node[1-3``, so the parser checks it first) and
    it answers within ``timeout_s``. Any failure of ``scontrol`` falls back to the parser.
    """
    parsed = parse_hostlist(expr)
    if not parsed or not use_scontrol or shutil.which("scontrol") is None:
        return parsed
    run_env = dict(os.environ)
    if env is not None and env.get("SLURM_CONF"):
        run_env["SLURM_CONF"] = env["SLURM_CONF"]
    if not os.path.isfile(run_env.get("SLURM_CONF") or DEFAULT_SLURM_CONF):
        return parsed
    try:
        proc = subprocess.run(
            ["scontrol", "show", "hostnames", expr.strip()],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=run_env,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return parsed
    hosts = proc.stdout.split()
    return hosts if proc.returncode == 0 and hosts else parsed


def _int_or_none(value: str | None) -> int | None:
    if value is None or not value.strip():
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def _first(env: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = env.get(name)
        if value is not None and value != "":
            return value
    return None


@dataclass(frozen=True)
class SlurmContext:
    """Where this process runs inside SLURM, as seen by a job step (or the batch script).

    Attributes:
        job_id: ``SLURM_JOB_ID``.
        step_id: ``SLURM_STEP_ID``; ``None`` in the batch script itself (not an ``srun`` step).
        node_name: ``SLURMD_NODENAME``: this node's SLURM name. On the local test cluster every
            node has the same ``hostname``, so this is the only reliable placement signal.
        nodelist: expanded hosts of the step (``SLURM_STEP_NODELIST``), else of the job.
        job_nodelist: expanded hosts of the whole allocation (``SLURM_JOB_NODELIST``).
        procid: global task rank (``SLURM_PROCID``).
        localid: task rank on this node (``SLURM_LOCALID``).
        nnodes: node count of the step (``SLURM_STEP_NUM_NODES``, else ``SLURM_NNODES``).
        ntasks: task count of the step (``SLURM_STEP_NUM_TASKS``, else ``SLURM_NTASKS``).
        gpus: ``CUDA_VISIBLE_DEVICES`` split on commas (indices or UUIDs); empty if unset.
    """

    job_id: str
    step_id: str | None = None
    node_name: str | None = None
    nodelist: tuple[str, ...] = ()
    job_nodelist: tuple[str, ...] = ()
    procid: int | None = None
    localid: int | None = None
    nnodes: int | None = None
    ntasks: int | None = None
    gpus: tuple[str, ...] = ()

    @property
    def in_step(self) -> bool:
        """True inside an ``srun`` step, false in the batch script."""
        return self.step_id is not None

    @property
    def is_leader(self) -> bool:
        """True for global rank 0 (or when no rank is known, e.g. the batch script)."""
        return self.procid in (None, 0)

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str],
        *,
        expand: Callable[[str], Sequence[str]] | None = None,
    ) -> SlurmContext | None:
        """Build the context from an environment mapping; ``None`` outside SLURM.

        ``expand`` turns a host list expression into host names. By default it is
        :func:`expand_hostlist` (``scontrol`` with the pure-Python fallback); pass
        :func:`parse_hostlist` for a strictly pure call. A malformed host list raises
        ``ValueError`` naming the variable.
        """
        job_id = _first(env, "SLURM_JOB_ID", "SLURM_JOBID")
        if job_id is None:
            return None

        def _expand(expr: str) -> Sequence[str]:
            return expand_hostlist(expr, env=env)

        expander = expand if expand is not None else _expand

        def _hosts(*names: str) -> tuple[str, ...]:
            for name in names:
                expr = env.get(name)
                if expr:
                    try:
                        return tuple(expander(expr))
                    except ValueError as exc:
                        raise ValueError(f"{name}: {exc}") from exc
            return ()

        job_nodes = _hosts("SLURM_JOB_NODELIST", "SLURM_NODELIST")
        step_id = _first(env, "SLURM_STEP_ID", "SLURM_STEPID")
        step_nodes = _hosts("SLURM_STEP_NODELIST") if step_id is not None else ()
        gpus_raw = env.get("CUDA_VISIBLE_DEVICES", "")
        gpus = tuple(g.strip() for g in gpus_raw.split(",") if g.strip())
        if step_id is not None:
            nnodes = _int_or_none(_first(env, "SLURM_STEP_NUM_NODES", "SLURM_NNODES"))
            ntasks = _int_or_none(_first(env, "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"))
        else:
            nnodes = _int_or_none(_first(env, "SLURM_JOB_NUM_NODES", "SLURM_NNODES"))
            ntasks = _int_or_none(_first(env, "SLURM_NTASKS", "SLURM_NPROCS"))
        return cls(
            job_id=job_id,
            step_id=step_id,
            node_name=_first(env, "SLURMD_NODENAME"),
            nodelist=step_nodes or job_nodes,
            job_nodelist=job_nodes,
            procid=_int_or_none(env.get("SLURM_PROCID")),
            localid=_int_or_none(env.get("SLURM_LOCALID")),
            nnodes=nnodes,
            ntasks=ntasks,
            gpus=gpus,
        )
