"""perfsanity.load registry: every config client name resolves to a conforming BenchmarkClient."""

from __future__ import annotations

import inspect
import typing

import pytest
from clienttest_support import make_run

import perfsanity.load as clients
from perfsanity.engines import tooling
from perfsanity.load.base import BenchmarkClient, ClientBase, ClientCommand
from perfsanity.spec.config import Client

#: the Protocol's data members and their types
CAPABILITIES = typing.get_type_hints(BenchmarkClient)
#: the tool each client needs installed (what run/install.py's CLIENT_TOOLS table said)
OLD_TOOLS = {"aiperf": "aiperf", "sglang-bench-serving": None, "trtllm-benchmark-serving": None, "perfsanity": None}


def test_registry_matches_config_literal():
    assert set(clients.names()) == set(typing.get_args(Client))
    assert set(OLD_TOOLS) == set(clients.names())


def test_protocol_declares_the_capabilities():
    assert CAPABILITIES == {"name": str, "tool": str | None, "reads_prompt_files": bool}


@pytest.mark.parametrize("name", typing.get_args(Client))
def test_only_aiperf_reads_the_pre_generated_prompt_files(name: str):
    # aiperf takes them as --input-file single-turn; the others make their own prompts
    assert clients.get_client(name).reads_prompt_files is (name == "aiperf")


@pytest.mark.parametrize("name", typing.get_args(Client))
def test_each_client_has_name_command_parse(name: str):
    c = clients.get_client(name)
    assert isinstance(c, ClientBase)
    assert c.name == name
    assert callable(c.command) and callable(c.parse)
    for method in ("command", "parse"):
        declared = list(inspect.signature(getattr(BenchmarkClient, method)).parameters)[1:]
        assert list(inspect.signature(getattr(c, method)).parameters) == declared, f"{name}.{method}"


@pytest.mark.parametrize("name", typing.get_args(Client))
def test_each_client_declares_the_tool_it_runs_from(name: str, tmp_path):
    c = clients.get_client(name)
    assert c.tool == OLD_TOOLS[name]
    assert c.tool is None or c.tool in tooling.TOOLS
    cmd = c.command(make_run(out_dir=tmp_path))
    assert isinstance(cmd, ClientCommand)
    assert cmd.argv and all(isinstance(word, str) and word for word in cmd.argv)
    assert cmd.tool == c.tool  # the env the install step prepares is the one the command runs from


def test_a_client_needs_command_and_parse():
    class Incomplete(ClientBase):
        name = "incomplete"

        def command(self, run):
            return ClientCommand(argv=("load",))

    with pytest.raises(TypeError, match="parse"):
        Incomplete()


def test_unknown_client():
    with pytest.raises(ValueError, match="unknown client 'locust'; known: aiperf"):
        clients.get_client("locust")
