"""launch.sh = script prefix (``#SBATCH`` lines + exports) + role plan + ``srunArgs`` + preflight + draft logic.

The exports are ours (``PERFSANITY_*``, the role plan) and, beside them, TensorRT-LLM's variable
contract (:func:`upstream_exports`), so upstream's own ``slurm_launch_draft.sh`` runs as the draft too;
the preflight block defines ``run_cache_transceiver_precheck``, which that draft calls.

The role plan (:func:`role_plan`: one :class:`RoleStep` per role, with its nodes, srun tasks, overlap
and MPI flag) is computed here once from the config and topology; the supervisor starts its steps
from the same plan, and launch.sh carries it as bash arrays for readers of the script (upstream's
draft among them).

Pure text rendering, golden-tested. Every value that comes from YAML, the command line or the
environment goes through :func:`shlex.quote` before it reaches bash, so a config value can never run
a command (``$(touch X)``, backticks, quotes and newlines stay inert data).

Two front ends share this module:

* L0 mode (TensorRT-LLM's Jenkins flow): the script prefix and the srun-args come from files
  Jenkins writes; see :func:`render_launch_sh` with ``prefix_text``/``srun_args``.
* Direct mode: :func:`render_prefix` and :func:`default_srun_args` build them from the config.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from perfsanity.common.errors import ConfigError
from perfsanity.engines import get_backend
from perfsanity.spec.config import Config
from perfsanity.spec.topology import Topology

REPO_ROOT = Path(__file__).resolve().parents[2]


def repo_path(raw: str) -> Path:
    """A config's path value: absolute as given, relative to the repo otherwise (e.g. ``accuracy.task_dir``)."""
    path = Path(raw)
    return path if path.is_absolute() else REPO_ROOT / path
DRAFT_LAUNCH = REPO_ROOT / "jenkins/scripts/perf/disaggregated/slurm_launch_draft.sh"
# run_cache_transceiver_precheck (the preflight), spliced in above the draft as upstream splices its own
PREFLIGHT_SH = REPO_ROOT / "jenkins/scripts/perf/disaggregated/slurm_preflight.sh"
RUN_SH = REPO_ROOT / "jenkins/scripts/slurm_run.sh"
INSTALL_SH = REPO_ROOT / "jenkins/scripts/slurm_install.sh"

# Variables the role steps need inside a container (pyxis passes only those named).
CONTAINER_ENV = (
    "DISAGG_SERVING_TYPE",
    "PERFSANITY_JOB_DIR",
    "PERFSANITY_REPO",
    "PERFSANITY_TEST_ID",
    "PERFSANITY_HOME",
)
_SBATCH_SAFE = re.compile(r"^[A-Za-z0-9._,:@+=/%-]+\Z")  # \Z: "$" would accept a trailing newline


@dataclass(frozen=True)
class LaunchPaths:
    """Absolute paths baked into launch.sh."""

    repo: Path  # the perfsanity checkout the roles run from (L0: --llm-src when it is one)
    job_dir: Path  # where everything of this job is written
    config: Path  # the test config YAML
    run_sh: Path = RUN_SH
    install_sh: Path = INSTALL_SH


def q(value: object) -> str:
    """Quote one value for bash."""
    return shlex.quote(str(value))


def _sbatch_value(config: Config, key: str, value: str) -> str:
    if not _SBATCH_SAFE.match(value):
        raise ConfigError(
            config.source,
            f"slurm.{key}",
            f"bad value {value!r}: #SBATCH values may only use letters, digits and ._,:@+=/%-",
        )
    return value


def render_prefix(config: Config, topology: Topology, job_dir: Path) -> str:
    """Direct mode's script prefix: shebang and ``#SBATCH`` lines from the config."""
    s = config.slurm
    lines = ["#!/bin/bash", f"#SBATCH --nodes={topology.total_nodes}", "#SBATCH --ntasks-per-node=1"]
    lines.append(f"#SBATCH --job-name={_sbatch_value(config, 'job_name', s.job_name)}")
    lines.append(f"#SBATCH --time={_sbatch_value(config, 'job_time', s.job_time)}")
    if s.partition:
        lines.append(f"#SBATCH --partition={_sbatch_value(config, 'partition', s.partition)}")
    if s.account:
        lines.append(f"#SBATCH --account={_sbatch_value(config, 'account', s.account)}")
    if topology.total_gpus:
        lines.append(f"#SBATCH --gres=gpu:{topology.gpus_per_node}")
    out = str(job_dir / "slurm-%j.out")
    if not _SBATCH_SAFE.match(out):
        raise ConfigError(None, "--out", f"bad job directory {str(job_dir)!r}: it lands in an #SBATCH line, so it "
                          "may only use letters, digits and ._,:@+=/%-")
    lines.append(f"#SBATCH --output={out}")
    for arg in s.extra_args_list:
        lines.append(f"#SBATCH {_sbatch_value(config, 'extra_args', arg)}")
    return "\n".join(lines) + "\n"


def default_srun_args(config: Config, repo: Path) -> list[str]:
    """Direct mode's srun args: container flags only when a container is configured."""
    args: list[str] = []
    if config.container_image:
        args.append(f"--container-image={config.container_image}")
        if config.container_mounts:
            args.append(f"--container-mounts={config.container_mounts}")
        args.append(f"--container-workdir={repo}")
        args.append("--no-container-mount-home")
    return args


def read_srun_args_file(path: Path) -> list[str]:
    """L0 srun-args file: one argument per line (blank lines and ``#`` comments skipped)."""
    out: list[str] = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def has_container_args(srun_args: Sequence[str]) -> bool:
    return any(a.startswith("--container-image") for a in srun_args)


def job_exports(
    config: Config,
    topology: Topology,
    paths: LaunchPaths,
    test_id: str,
    extra: dict[str, object] | None = None,
) -> dict[str, str]:
    """The job's environment as launch.sh exports it (the local launcher uses the same values)."""
    gens, ctxs = topology.of_kind("gen"), topology.of_kind("ctx")
    servers = topology.of_kind("server")

    def first(ps: tuple, attr: str) -> int:
        return getattr(ps[0], attr) if ps else 0

    exports: dict[str, object] = {
        "PERFSANITY_REPO": paths.repo,
        "PERFSANITY_JOB_DIR": paths.job_dir,
        "PERFSANITY_CONFIG": paths.config,
        "PERFSANITY_TEST_ID": test_id,
        "PERFSANITY_RUN_SH": paths.run_sh,
        "PERFSANITY_INSTALL_SH": paths.install_sh,
        "PERFSANITY_TIMEOUT": config.slurm.timeout,
        "PERFSANITY_SHUTDOWN_TIMEOUT": config.timeouts.shutdown,
        "PERFSANITY_INSTALL_TIMEOUT": config.timeouts.install,
        "PERFSANITY_SRUN_MPI": config.slurm.mpi or "",
        "numCtxServers": len(ctxs),
        "numGenServers": len(gens),
        "numServers": len(servers),
        "gpusPerNode": topology.gpus_per_node,
        "totalNodes": topology.total_nodes,
        "totalGpus": topology.total_gpus,
        "ctxGpusPerServer": first(ctxs, "gpus"),
        "genGpusPerServer": first(gens, "gpus"),
        "ctxNodesPerServer": first(ctxs, "num_nodes"),
        "genNodesPerServer": first(gens, "num_nodes"),
        "pytestCommand": f"pytest perf/test_perf_sanity.py::test_e2e[{test_id}]",
        **upstream_exports(config, topology, paths, test_id),
        **(extra or {}),
    }
    return {k: str(v) for k, v in exports.items()}


def upstream_exports(config: Config, topology: Topology, paths: LaunchPaths, test_id: str) -> dict[str, object]:
    """TensorRT-LLM's launch.sh contract (what its ``slurm_launch_draft.sh`` reads), from our plan.

    ``gpusPerNodePer*Server`` is the srun tasks per node of the role's step (one per GPU for MPI
    engines, else one per node), so upstream's ``--ntasks`` equals ours. Every role runs the same pytest
    command (``run_sh`` tells the roles apart by ``DISAGG_SERVING_TYPE``). ``jobWorkspace`` comes from
    L0's script prefix and is only defaulted to the job dir (:func:`render_exports`).
    ``docs/upstream/trtllm-l0-facts.md`` §2 lists the draft's reads.
    """
    per_gpu = get_backend(config.metadata.backend).ranks_per_gpu
    command = f"pytest perf/test_perf_sanity.py::test_e2e[{test_id}]"

    def shape(kind: str) -> tuple[int, int, int]:
        """(GPUs, nodes, tasks per node) of the first server of ``kind``."""
        ps = topology.of_kind(kind)
        if not ps:
            return 0, 0, 0
        return ps[0].gpus, ps[0].num_nodes, ps[0].tasks(per_gpu) // ps[0].num_nodes

    out: dict[str, object] = {
        "testOutputDir": paths.job_dir / "logs",
        "runScript": paths.run_sh,
        "installScript": paths.install_sh,
        "configYamlPath": paths.config,
    }
    if config.kind == "aggr":
        _, nodes, per_node = shape("server")
        return out | {"gpusPerNodePerServer": per_node, "nodesPerServer": nodes, "world_size": nodes * per_node}
    ctx, gen = shape("ctx"), shape("gen")
    out |= {
        "gpusPerCtxServer": ctx[0], "gpusPerGenServer": gen[0],
        "nodesPerCtxServer": ctx[1], "nodesPerGenServer": gen[1],
        "gpusPerNodePerCtxServer": ctx[2], "gpusPerNodePerGenServer": gen[2],
        "pytestCommandCTXWorker": command, "pytestCommandGENWorker": command,
        "pytestCommandDisaggServer": command, "pytestCommandBenchmark": command,
    }
    if config.num_ctx_servers == 0:
        out["TRTLLM_DISAGG_BENCHMARK_GEN_ONLY"] = 1  # upstream's draft skips the CTX steps
    return out


@dataclass(frozen=True)
class RoleStep:
    """One role's step, as a launcher starts it (``srun -N len(nodes) -n tasks`` or a local process)."""

    role: str
    nodes: tuple[int, ...]  # indices into the job's node list
    tasks: int  # srun tasks: one per GPU for MPI engines, else one per node
    gpus: int
    overlap: bool  # shares its node with other steps (srun --overlap)
    is_worker: bool  # an engine server (gen/ctx/server), not the router or the benchmark
    mpi: str = ""  # srun --mpi value of this step ('' = none): slurm.mpi, workers only


def role_plan(config: Config, topology: Topology) -> tuple[RoleStep, ...]:
    """The steps of a job, in start order (workers, router, benchmark)."""
    per_gpu = get_backend(config.metadata.backend).ranks_per_gpu
    steps = []
    for p in topology.roles:
        worker = p.kind in ("gen", "ctx", "server")
        steps.append(RoleStep(p.role, p.nodes, p.tasks(per_gpu), p.gpus, p.shares_node, worker,
                              (config.slurm.mpi or "") if worker else ""))
    return tuple(steps)


def render_exports(
    config: Config,
    topology: Topology,
    paths: LaunchPaths,
    test_id: str,
    extra: dict[str, object] | None = None,
) -> str:
    """Exports and the role plan (bash arrays indexed alike) that the draft logic reads."""
    exports = job_exports(config, topology, paths, test_id, extra)
    lines = ["# --- generated by perfsanity: job settings and role plan ---"]
    lines += [f"export {k}={q(v)}" for k, v in exports.items()]
    # upstream's draft writes into jobWorkspace, which L0's script prefix sets; the job dir otherwise
    lines += [f'if [ -z "${{jobWorkspace:-}}" ]; then jobWorkspace={q(paths.job_dir)}; fi', "export jobWorkspace"]
    steps = role_plan(config, topology)

    def arr(name: str, values: list[object]) -> str:
        return f"{name}=(" + " ".join(q(v) for v in values) + ")"

    # the supervisor builds the same plan from the config: the arrays are for drafts and readers
    lines += ["# role plan, one entry per role (perfsanity.plan.launch.role_plan)", "# shellcheck disable=SC2034", "{"]
    lines.append(arr("    roleNames", [s.role for s in steps]))
    lines.append(arr("    roleNodes", [" ".join(str(n) for n in s.nodes) for s in steps]))
    lines.append(arr("    roleTasks", [s.tasks for s in steps]))
    lines.append(arr("    roleGpus", [s.gpus for s in steps]))
    lines.append(arr("    roleOverlap", [1 if s.overlap else 0 for s in steps]))
    lines.append(arr("    roleIsWorker", [1 if s.is_worker else 0 for s in steps]))
    lines.append("}")
    return "\n".join(lines) + "\n"


def step_srun_args(srun_args: Sequence[str]) -> list[str]:
    """The srun args every step gets: the given ones, plus ``--container-env`` in a container."""
    args = list(srun_args)
    if has_container_args(args):
        args.append("--container-env=" + ",".join(CONTAINER_ENV))
    return args


def render_srun_args(srun_args: Sequence[str]) -> str:
    args = step_srun_args(srun_args)
    # always single-quoted: shlex.quote leaves "a,b" bare, which shellcheck flags (SC2054)
    body = "".join(f"    '{a}'\n" if "'" not in a else f"    {q(a)}\n" for a in args)
    return f"srunArgs=(\n{body})\n"


def render_launch_sh(
    config: Config,
    topology: Topology,
    paths: LaunchPaths,
    *,
    prefix_text: str,
    srun_args: Sequence[str],
    draft_text: str,
    test_id: str,
    extra_exports: dict[str, object] | None = None,
) -> str:
    """The whole launch.sh."""
    prefix = prefix_text if prefix_text.endswith("\n") else prefix_text + "\n"
    if not prefix.startswith("#!"):
        prefix = "#!/bin/bash\n" + prefix
    return (
        prefix
        + "\n"
        + render_exports(config, topology, paths, test_id, extra_exports)
        + "\n"
        + render_srun_args(srun_args)
        + "\n"
        + PREFLIGHT_SH.read_text()
        + "\n"
        + draft_text
    )
