"""Importers: another tool's job or sweep file → an equivalent perfsanity test config (or a test config
carrying a ``sweep:`` block), plus the list of source keys that did not map.

One module per source format (:mod:`.srtctl`, :mod:`.dynamo_sweep`); this module holds what they share:
the unmapped-key list, SGLang flag names → ``worker_config`` keys, the check that what was built is
accepted exactly as ``submit.py --dry-run`` would accept it, and the atomic write. The facts about
the source formats, with their upstream sources, are in ``FACTS.md`` next to this file.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from perfsanity.common.errors import ConfigError
from perfsanity.common.files import write_atomic
from perfsanity.common.redact import redact_data
from perfsanity.engines import facts
from perfsanity.engines.sglang import HARNESS_OWNED
from perfsanity.jobs.sweep import load_sweep, validate_points
from perfsanity.plan.prepare import prepare_direct
from perfsanity.spec.config import kind_of


@dataclass(frozen=True)
class Unmapped:
    """One source key that has no perfsanity equivalent: its dotted path and why."""

    path: str
    reason: str


@dataclass
class Imported:
    """What an importer built: the output's data, where it goes, and what did not map."""

    source: Path
    out: Path
    data: dict[str, Any]
    unmapped: list[Unmapped] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)
    points: int = 0  # sweep points (0: a single config)

    @property
    def kind(self) -> str:
        return kind_of(self.out)


#: SGLang flags (dashes, without ``--``) that are the harness's typed parallelism keys
PARALLEL_FLAGS = {
    "tp": "tensor_parallel_size",
    "tp-size": "tensor_parallel_size",
    "tensor-parallel-size": "tensor_parallel_size",
    "pp-size": "pipeline_parallel_size",
    "pipeline-parallel-size": "pipeline_parallel_size",
    "ep": "moe_expert_parallel_size",
    "ep-size": "moe_expert_parallel_size",
    "expert-parallel-size": "moe_expert_parallel_size",
    "enable-dp-attention": "enable_attention_dp",
}
_NAME_RE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str) -> str:
    """A config name (``[A-Za-z0-9._-]+``) made from ``text``."""
    return _NAME_RE.sub("-", text).strip("-.") or "imported"


def sglang_options(release: str) -> frozenset[str]:
    """The option strings (``--tp-size`` …) of one SGLang release in ``engines/facts/sglang.json``."""
    return frozenset(facts.load("sglang")["releases"][release]["options"])


def map_sglang_flags(section: Any, where: str, options: frozenset[str], release: str,
                     unmapped: list[Unmapped], *, source: Path) -> dict[str, Any]:
    """An SGLang flag mapping (``mem-fraction-static: 0.8``, dashes or underscores) → ``worker_config`` keys.

    Parallelism flags become the harness's typed keys (:data:`PARALLEL_FLAGS`); flags the harness
    sets from the topology, and flags the SGLang release does not have, go to ``unmapped``."""
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise ConfigError(str(source), where, f"must be a mapping of SGLang flags, got {type(section).__name__}")
    out: dict[str, Any] = {}
    for raw_key, value in section.items():
        if not isinstance(raw_key, str) or not raw_key.strip("-"):
            raise ConfigError(str(source), f"{where}.{raw_key}", "an SGLang flag name must be a non-empty string")
        flag = raw_key.strip().lstrip("-").replace("_", "-")
        path = f"{where}.{raw_key}"
        key = PARALLEL_FLAGS.get(flag)
        if key is None:
            snake = flag.replace("-", "_")
            if snake in HARNESS_OWNED:
                unmapped.append(Unmapped(path, "set by the harness from the topology"))
                continue
            how, _ = facts.match_option("--" + flag, options)
            if how != "exact":
                unmapped.append(Unmapped(path, f"--{flag} is not an option of sglang {release}"))
                continue
            key = snake
        if key in out:
            raise ConfigError(str(source), path, f"sets {key} a second time; keep one spelling")
        out[key] = value
    return out


def unmapped_keys(data: Mapping[str, Any], mapped: Mapping[str, Any], prefix: str = "") -> list[Unmapped]:
    """Every key of ``data`` not covered by ``mapped`` (a tree of the keys that mapped: a key with value
    ``True`` is mapped as a whole, a nested mapping names the keys inside it that mapped)."""
    out: list[Unmapped] = []
    for key, value in data.items():
        path = f"{prefix}{key}"
        rule = mapped.get(key)
        if rule is True:
            continue
        if isinstance(rule, Mapping) and isinstance(value, Mapping):
            out += unmapped_keys(value, rule, path + ".")
        else:
            out.append(Unmapped(path, "no perfsanity equivalent"))
    return out


def header(result: Imported, tool: str) -> str:
    lines = [f"# Imported from {result.source.name} by `perfsanity import {tool}` (docs/import.md)."]
    if result.unmapped:
        lines.append("# Not mapped:")
        lines += [f"#   {u.path}: {u.reason}" for u in result.unmapped]
    return "\n".join(lines) + "\n"


class _Dumper(yaml.SafeDumper):
    """Block mappings, flow lists: a sweep's value lists stay one line each."""


_Dumper.add_representer(list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))


def render(result: Imported, tool: str) -> str:
    return header(result, tool) + yaml.dump(redact_data(result.data), Dumper=_Dumper, sort_keys=False, width=120)


def check(result: Imported, text: str) -> None:
    """Validate ``text`` exactly as ``submit.py --dry-run`` (``--config`` or ``--sweep``) would, in a
    scratch directory; a refusal is a ConfigError naming the source file."""
    with tempfile.TemporaryDirectory(prefix="perfsanity-import-") as tmp:
        scratch = Path(tmp) / result.kind / result.out.name
        scratch.parent.mkdir(parents=True)
        scratch.write_text(text)
        try:
            if result.points:
                sweep = load_sweep(scratch)
                if len(sweep.points) != result.points:  # the importer's own bug, not the user's
                    raise AssertionError(f"{len(sweep.points)} points, expected {result.points}")
                validate_points(sweep, Path(tmp) / "out")
            else:
                prepare_direct(scratch, Path(tmp) / "job")
        except ConfigError as exc:
            where = f" at {exc.key_path}" if exc.key_path else ""
            raise ConfigError(str(result.source), "", f"the imported config is refused{where}: {exc.message}") from None


def write(result: Imported, tool: str) -> str:
    """Render, validate, and write the output atomically (nothing is written when it is refused)."""
    if result.out.exists() and not result.out.is_file():
        raise ConfigError(None, "-o", f"{result.out} exists and is not a regular file")
    text = render(result, tool)
    check(result, text)
    try:
        write_atomic(result.out, text)
    except OSError as exc:
        raise ConfigError(None, "-o", f"cannot write {result.out}: {exc.strerror or exc}") from None
    return text


def default_out(name: str, kind: str) -> Path:
    """``$PERFSANITY_OUT`` (else ``out``)``/import/<kind>/<name>.yaml``: the kind is in the path, where
    perfsanity reads it from."""
    return Path(os.environ.get("PERFSANITY_OUT") or "out") / "import" / kind / f"{name}.yaml"


def out_path(arg: str | None, name: str, kind: str) -> Path:
    """The output path (``-o``, else :func:`default_out`); its place must give the config's kind."""
    if arg is None:
        return default_out(name, kind)
    out = Path(arg)
    if out.suffix not in (".yaml", ".yml"):
        raise ConfigError(None, "-o", f"{arg}: the output is a YAML file; name it <name>.yaml")
    if not re.fullmatch(r"[A-Za-z0-9._-]+", out.stem):
        raise ConfigError(None, "-o", f"{arg}: the file name is the config name and must match [A-Za-z0-9._-]+")
    if kind_of(out) != kind:
        want = "under a directory named 'aggr'" if kind == "aggr" else "not under a directory named 'aggr'"
        raise ConfigError(None, "-o", f"{arg}: a {kind} config must be written {want} (perfsanity reads the "
                                      "kind from the file's place)")
    return out


def positive_int(value: Any, source: Path, where: str, *, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
        want = "a non-negative" if allow_zero else "a positive"
        raise ConfigError(str(source), where, f"bad value {value!r}: must be {want} integer")
    return value


def format_report(result: Imported) -> list[str]:
    lines = [f"wrote {result.out}"] + result.summary
    if result.unmapped:
        lines.append(f"not mapped ({len(result.unmapped)}):")
        lines += [f"  {u.path}: {u.reason}" for u in result.unmapped]
    else:
        lines.append("not mapped: nothing")
    return lines
