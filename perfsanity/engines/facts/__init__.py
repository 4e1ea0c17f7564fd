"""Engine facts shipped in the repo, and the submit-time checks built on them.

Submit must not need an engine installed, so what the engines accept is data here:

* ``trtllm.yaml``: TensorRT-LLM's ``trtllm-serve`` / ``disaggregated`` options, the LLM-API YAML
  keys and the disaggregated server schema per fact set (named by upstream commit), plus a
  per-release capability table (``report_addr``, ``port_zero``, ``config_alias``). Hand-written
  from upstream source (no wheel installs here).
* ``sglang.json``: every option string of SGLang's server parser per release, dumped from the real
  parser (``dump_sglang_options.py`` run in the ``sglang`` / ``dynamo-sglang`` tool venvs;
  ``tests/backends/test_engine_facts.py`` fails when the shipped file and the parser disagree),
  plus a history of options whose meaning changed between releases.
* ``dynamo_mocker.json``: every option string of ``python -m dynamo.mocker``'s parser per ai-dynamo
  release, dumped the same way (``dump_mocker_options.py`` in the ``dynamo`` tool venv).

Which release a config targets: ``metadata.engine_version``, else the container image's tag when it
names a known release, else the file's default. A config may list keys newer than the facts in
``metadata.engine_keys_unchecked``; they are passed through unchecked. Every problem is a
:class:`~perfsanity.common.errors.ConfigError` (exit 2) naming the key, the engine and the release.
"""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from perfsanity.common.errors import ConfigError
from perfsanity.spec.config import Config

FACTS_DIR = Path(__file__).resolve().parent


@functools.cache
def load(name: str) -> Mapping[str, Any]:
    """The parsed facts file ``name`` (``trtllm`` or ``sglang``)."""
    for suffix, reader in ((".yaml", yaml.safe_load), (".json", json.loads)):
        path = FACTS_DIR / f"{name}{suffix}"
        if path.is_file():
            return reader(path.read_text())
    raise FileNotFoundError(f"no facts file {name}.yaml/.json in {FACTS_DIR}")


def facts_path(name: str) -> Path:
    return next(p for p in (FACTS_DIR / f"{name}.yaml", FACTS_DIR / f"{name}.json") if p.is_file())


@dataclass(frozen=True)
class Problem:
    """One rejected key or flag: where it came from (a config key path or a generated argv) and why."""

    where: str
    message: str


def select_release(config: Config, known: Iterable[str], default: str, aliases: Mapping[str, str] | None = None,
                   *, engine: str, source: str | None) -> str:
    """The fact-set name for ``config``: ``metadata.engine_version`` (must be known), else the container
    image tag if it is known, else ``default``."""
    aliases = dict(aliases or {})
    known = list(known)
    if default not in known:
        raise ConfigError(source, "", f"no {engine} facts for the default release {default!r}; known: "
                          f"{', '.join(known)} (perfsanity/engines/facts/{engine_facts_file(engine)})")
    wanted = config.metadata.engine_version
    if wanted:
        name = aliases.get(wanted, wanted)
        if name not in known:
            raise ConfigError(source, "metadata.engine_version",
                              f"no {engine} facts for release {wanted!r}; known: {', '.join(known + sorted(aliases))} "
                              f"(perfsanity/engines/facts/{engine_facts_file(engine)})")
        return name
    image = config.container_image or ""
    tag = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else ""
    tag = aliases.get(tag, tag)
    return tag if tag in known else default


def engine_facts_file(engine: str) -> str:
    if engine.startswith("TensorRT"):
        return "trtllm.yaml"
    return "dynamo_mocker.json" if engine == "dynamo.mocker" else "sglang.json"


def match_option(flag: str, options: frozenset[str]) -> tuple[str, list[str]]:
    """How an argparse parser with ``allow_abbrev`` on (SGLang's, dynamo.mocker's) takes ``flag``:
    ("exact" | "prefix" | "ambiguous" | "unknown", the options it matches)."""
    if flag in options:
        return "exact", [flag]
    matches = sorted(o for o in options if o.startswith(flag))
    if len(matches) == 1:
        return "prefix", matches
    return ("ambiguous", matches) if matches else ("unknown", [])


def option_problem(key: str, options: frozenset[str], *, parser: str) -> str | None:
    """Why engine key ``key``, given as ``--key-with-dashes``, does not select one option of ``options``
    (``parser`` names the parser and release in the message, e.g. "sglang 0.5.23"); None when it does."""
    flag = "--" + key.replace("_", "-")
    how, matches = match_option(flag, options)
    if how == "ambiguous":
        return f"{flag} is ambiguous in {parser} (could match {', '.join(matches)})"
    if how == "unknown":
        return f"{flag} is not an option of {parser}" + suggestion(key, [o[2:].replace("-", "_") for o in options])
    return None


def suggestion(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.75)
    return f"; did you mean {close[0]!r}?" if close else ""


def unchecked(config: Config) -> frozenset[str]:
    return frozenset(config.metadata.engine_keys_unchecked)


def raise_problems(problems: list[Problem], source: str | None, *, engine: str, release: str, facts: str) -> None:
    """One ConfigError naming every problem (first key path as the error's key)."""
    if not problems:
        return
    detail = "; ".join(f"{p.where}: {p.message}" for p in problems)
    raise ConfigError(
        source, "",
        f"{detail} ({engine} {release}, facts perfsanity/engines/facts/{facts}; a key newer than the facts "
        "can be listed in metadata.engine_keys_unchecked)")
