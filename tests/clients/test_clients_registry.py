"""perfsanity.load registry: every config client name resolves to a BenchmarkClient."""

from __future__ import annotations

import typing

import pytest

import perfsanity.load as clients
from perfsanity.spec.config import Client


def test_registry_matches_config_literal():
    assert set(clients.names()) == set(typing.get_args(Client))


@pytest.mark.parametrize("name", typing.get_args(Client))
def test_each_client_has_name_command_parse(name: str):
    c = clients.get_client(name)
    assert c.name == name
    assert callable(c.command) and callable(c.parse)


def test_unknown_client():
    with pytest.raises(ValueError, match="unknown client 'locust'; known: aiperf"):
        clients.get_client("locust")
