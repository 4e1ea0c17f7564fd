"""Conformance of every registered backend to :class:`perfsanity.engines.base.Backend`.

The registry and ``perfsanity.spec.config.Backend`` name the same backends; every backend has every
declared capability with the declared type and builds a ServerSpec for each role of a small config;
the capabilities keep the values the old side tables had (``MPI_RANK_PER_GPU``, ``LOCAL_BACKENDS``,
the served-model-name and default-model name checks, the duck-typed discovery flag); and no module
outside ``perfsanity.engines``/``perfsanity.load`` checks a backend's or client's name again.
"""

from __future__ import annotations

import ast
import inspect
import shlex
import types
import typing
from collections.abc import Mapping
from pathlib import Path

import pytest
from backendtest_support import REPO, router_context, worker_context

from perfsanity import engines, load
from perfsanity.engines import base, tooling
from perfsanity.engines.base import Backend, BackendBase, ServerSpec
from perfsanity.jobs.testcases import runs_locally
from perfsanity.plan.launch import LaunchPaths, render_exports, role_plan
from perfsanity.run.install import tools_for
from perfsanity.spec import config as spec_config
from perfsanity.spec.topology import build_topology

NAMES = engines.names()
#: the Protocol's data members and their types (resolved from base.py's string annotations)
CAPABILITIES = typing.get_type_hints(Backend, vars(base))
METHODS = ("services", "served_model_name", "default_model_path", "worker", "router")

#: what the removed side tables and name checks said, per backend:
#: (ranks per GPU, needs a GPU, router needs worker addresses, clients send the model path, tools)
OLD_TABLES = {
    "trtllm": (True, True, True, True, ()),
    "sglang": (False, True, True, False, ()),
    "dynamo-sglang": (False, True, False, False, ()),
    "dynamo-mocker": (False, False, False, False, ("dynamo",)),
}


def conforms(value: object, hint: object) -> bool:
    """``isinstance`` for the annotation forms the protocol uses (str, bool, tuple[str, ...], tuple[str, str] | None,
    Mapping[str, str])."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return value is None
    if origin is None:
        return isinstance(value, hint) and (hint is not int or not isinstance(value, bool))
    if origin in (typing.Union, types.UnionType):  # X | None
        return any(conforms(value, a) for a in args)
    if origin is tuple and args[-1:] != (Ellipsis,):  # tuple[str, str]: fixed length
        return isinstance(value, tuple) and len(value) == len(args) and all(map(conforms, value, args))
    if origin is tuple:
        return isinstance(value, tuple) and all(conforms(v, args[0]) for v in value)
    if origin is Mapping or (isinstance(origin, type) and issubclass(origin, Mapping)):
        return isinstance(value, Mapping) and all(conforms(k, args[0]) and conforms(v, args[1])
                                                  for k, v in value.items())
    raise AssertionError(f"conforms() does not know the annotation {hint!r}; extend it")


def test_registry_matches_config_literal():
    assert set(NAMES) == set(typing.get_args(spec_config.Backend))
    assert len(NAMES) == len(set(NAMES))


def test_client_registry_matches_config_literal():
    assert set(load.names()) == set(typing.get_args(spec_config.Client))


def test_protocol_declares_the_capabilities():
    # the members role/install/launch/testcases code relies on; a rename here must be deliberate
    assert set(CAPABILITIES) == {"name", "tools", "ranks_per_gpu", "needs_gpu", "router_needs_worker_addresses",
                                 "has_default_model", "service_env", "uses_job_infra", "discovery_path",
                                 "profiler_endpoints"}
    for method in METHODS:
        assert callable(getattr(Backend, method)), method


@pytest.mark.parametrize("name", NAMES)
def test_backend_has_every_capability_with_its_type(name):
    backend = engines.get_backend(name)
    assert isinstance(backend, BackendBase)
    assert backend.name == name
    for member, hint in CAPABILITIES.items():
        assert hasattr(backend, member), f"{name}: no {member}"
        assert conforms(getattr(backend, member), hint), f"{name}.{member}={getattr(backend, member)!r} is not {hint}"
    for method in METHODS:
        impl = getattr(backend, method)
        assert callable(impl), f"{name}.{method} is not callable"
        declared = list(inspect.signature(getattr(Backend, method)).parameters)[1:]  # without self
        assert list(inspect.signature(impl).parameters) == declared, f"{name}.{method} signature"
    for tool in backend.tools:
        assert tool in tooling.TOOLS, f"{name}: tool {tool!r} is not a perfsanity.engines.tooling env"


@pytest.mark.parametrize("name", NAMES)
def test_worker_and_router_build_server_specs(name, make_config):
    config = make_config(name)
    topology = build_topology(config)
    specs = [engines.get_backend(name).worker(worker_context(config, p)) for p in topology.workers]
    specs.append(engines.get_backend(name).router(router_context(config)))
    assert len(specs) == 3  # CTX_0, GEN_0, DISAGG_SERVER
    for spec in specs:
        assert isinstance(spec, ServerSpec)
        assert spec.argv and all(isinstance(word, str) and word for word in spec.argv)
        assert conforms(spec.env, Mapping[str, str]) and conforms(spec.files, Mapping[str, str])
        assert all(not Path(rel).is_absolute() and ".." not in Path(rel).parts for rel in spec.files)
        assert isinstance(spec.port, int) and spec.port >= 0
        assert spec.health_path.startswith("/")
        assert spec.tool is None or spec.tool in tooling.TOOLS


@pytest.mark.parametrize("name", NAMES)
def test_services_back_every_service_env(name, make_config):
    backend = engines.get_backend(name)
    services = backend.services("127.0.0.2", make_config(name))
    assert conforms(dict(services), Mapping[str, ServerSpec])
    # a role waits for the value of every service named in service_env: one must publish it
    assert set(backend.service_env) <= set(services)
    for spec in services.values():
        assert "127.0.0.2" in spec.argv  # services bind the host they are given, never a wildcard


@pytest.mark.parametrize("name", NAMES)
def test_capabilities_keep_the_old_tables(name, make_config, monkeypatch, tmp_path):
    ranks_per_gpu, needs_gpu, needs_addresses, sends_path, tools = OLD_TABLES[name]
    backend = engines.get_backend(name)
    assert backend.ranks_per_gpu is ranks_per_gpu
    assert backend.needs_gpu is needs_gpu
    assert runs_locally(name) is (not needs_gpu)
    assert backend.router_needs_worker_addresses is needs_addresses
    assert backend.tools == tools
    config = make_config(name)
    assert backend.served_model_name(config, "/models/x") == ("/models/x" if sends_path else "tiny")

    from perfsanity.engines import model_assets

    tiny = tmp_path / "tiny-model"
    monkeypatch.setattr(model_assets, "ensure_tiny_model", lambda: tiny)
    assert backend.default_model_path() == (str(tiny) if name == "dynamo-mocker" else None)
    assert backend.has_default_model is (backend.default_model_path() is not None)
    assert backend.uses_job_infra is name.startswith("dynamo-")  # etcd/NATS/nginx: Dynamo's runtime only


@pytest.mark.parametrize("name", NAMES)
def test_launch_plan_uses_ranks_per_gpu(name, make_config, tmp_path):
    config = make_config(name, worker_config={"gen": {"tensor_parallel_size": 2}})
    topology = build_topology(config)
    tasks = {step.role: str(step.tasks) for step in role_plan(config, topology)}
    paths = LaunchPaths(repo=tmp_path, job_dir=tmp_path / "job", config=tmp_path / "unit.yaml")
    text = render_exports(config, topology, paths, "disagg_upload-e2e-unit")
    (line,) = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("roleTasks=(")]
    assert shlex.split(line.removeprefix("roleTasks=(")[:-1]) == list(tasks.values())  # launch.sh says the same
    gen = topology.role("GEN_0")
    assert (gen.gpus, gen.num_nodes) == (2, 1)  # the plan really depends on the capability
    assert tasks["GEN_0"] == ("2" if OLD_TABLES[name][0] else "1")


def test_unknown_backend_is_not_local():
    assert runs_locally(None) is False and runs_locally("no-such-backend") is False


def test_tools_for_asks_backend_and_client():
    assert tools_for("dynamo-mocker", "aiperf") == ["dynamo", "aiperf"]
    assert tools_for("trtllm", "aiperf") == ["aiperf"]
    assert tools_for("sglang", "sglang-bench-serving") == []
    assert tools_for("trtllm", "trtllm-benchmark-serving") == []
    # the accuracy step's lm-eval, after the client's tool, once
    assert tools_for("dynamo-mocker", "aiperf", accuracy=True) == ["dynamo", "aiperf", "lm-eval"]
    assert tools_for("sglang", "sglang-bench-serving", accuracy=True) == ["lm-eval"]


def test_a_new_backend_needs_only_worker_and_router(make_config):
    class Minimal(BackendBase):
        name = "minimal"

        def worker(self, ctx):
            return ServerSpec(argv=("serve",))

        def router(self, ctx):
            return ServerSpec(argv=("route",))

    backend = Minimal()
    for member, hint in CAPABILITIES.items():
        assert conforms(getattr(backend, member), hint), member
    assert (backend.tools, backend.ranks_per_gpu, backend.needs_gpu, backend.router_needs_worker_addresses,
            dict(backend.service_env), dict(backend.services("h", make_config())), backend.default_model_path()) == \
        ((), False, True, True, {}, {}, None)
    assert backend.served_model_name(make_config(), "/models/x") == "tiny"

    class Incomplete(BackendBase):
        name = "incomplete"

        def worker(self, ctx):
            return ServerSpec(argv=("serve",))

    with pytest.raises(TypeError, match="router"):
        Incomplete()


# ---------------------------------------------------------------------------------------
# no name checks or duck typing outside the packages that own the names
# ---------------------------------------------------------------------------------------

PACKAGE = REPO / "perfsanity"
#: where backend/client names may appear: their own packages, the config Literals and defaults, and the
#: importers, whose job is to translate other tools' backend and benchmark names into ours
NAME_OWNERS = ("engines/", "load/", "spec/config.py", "jobs/importers/")


def _outside_modules() -> list[Path]:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20  # the package was found
    return [p for p in files if not p.relative_to(PACKAGE).as_posix().startswith(NAME_OWNERS)]


def test_no_backend_or_client_names_outside_their_packages():
    names = set(NAMES) | set(load.names())
    # the built-in client shares the project's name, a constant in many unrelated places (prog names,
    # paths): for it only a comparison (``== "perfsanity"``, ``in (...)``) counts as a name check
    project = "perfsanity"
    found = []
    for path in _outside_modules():
        tree = ast.parse(path.read_text(), filename=str(path))
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)
                      and isinstance(node.body[0].value, ast.Constant)}
        compared = {id(n) for node in ast.walk(tree) if isinstance(node, ast.Compare)
                    for operand in (node.left, *node.comparators) for n in ast.walk(operand)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in names and id(node) not in docstrings:
                if node.value == project and id(node) not in compared:
                    continue
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}")
    assert not found, "name checks outside perfsanity/engines and perfsanity/load:\n" + "\n".join(found)


def test_no_duck_typed_capabilities_outside_their_packages():
    found = []
    for path in _outside_modules():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in ("getattr", "hasattr") and node.args):
                target = ast.unparse(node.args[0])
                if "backend" in target or "client" in target:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "optional capabilities found by duck typing:\n" + "\n".join(found)
