"""Reading YAML input safely: every config, cluster, sweep file and ``--set`` value goes through here.

* **Files**: the path must name a regular file (a FIFO, a character device such as ``/dev/zero``, a
  directory or an empty path is refused before anything is read; the file is opened non-blocking, so
  a FIFO swapped in after the check cannot block) of at most :data:`MAX_BYTES` bytes.
* **YAML**: a SafeLoader subclass that rejects duplicate keys, reads no YAML 1.1 base-60 numbers
  (TensorRT-LLM writes ``job_time: 02:00:00`` unquoted), allows at most :data:`MAX_ALIASES` aliases and
  a document of at most :data:`MAX_NODES` nodes once aliases are expanded (a 1 KB "billion laughs"
  file is refused at once instead of expanding when the config is copied), and no alias that refers
  to the node it sits in (a cycle).

Every problem is one :class:`~perfsanity.common.errors.ConfigError` naming the file and, when known,
the line.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent

from perfsanity.common.errors import ConfigError

MAX_BYTES = 1 << 20  # 1 MiB: the largest shipped config is a few KB
MAX_ALIASES = 100
MAX_NODES = 10_000  # nodes of the document with every alias expanded (a shipped config has < 300)


class _BudgetExceeded(yaml.YAMLError):
    def __init__(self, problem: str, mark: Any = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark


class SafeLoader(yaml.SafeLoader):
    """SafeLoader with unique keys, no base-60 numbers, and bounded alias expansion (see the module doc)."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _BudgetExceeded(f"more than {MAX_ALIASES} aliases", self.peek_event().start_mark)
        return super().compose_node(parent, index)

    def compose_document(self) -> Any:
        node = super().compose_document()
        _check_expansion(node)
        return node


def _check_expansion(root: yaml.Node) -> None:
    """Refuse an alias cycle, or a document larger than MAX_NODES once aliases are expanded (iterative,
    so a deeply nested document cannot overflow the stack here)."""
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            total = 1 + sum(size[id(c)] for c in _children(node))
            if total > MAX_NODES:
                raise _BudgetExceeded(f"aliases expand to more than {MAX_NODES} nodes", node.start_mark)
            size[key] = total
            continue
        if key in size:
            continue
        if key in on_path:
            raise _BudgetExceeded("an alias refers to the node that contains it (a cycle)", node.start_mark)
        on_path.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in on_path:
                raise _BudgetExceeded("an alias refers to the node that contains it (a cycle)", node.start_mark)
            if id(child) not in size:
                stack.append((child, False))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _construct_mapping(loader: SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"a mapping key must be a plain value, not {type(key).__name__} (line {mark.line + 1})", mark
            ) from None
        if key in out:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {_excerpt(key)} (line {mark.line + 1})", mark
            )
        try:
            out[key] = loader.construct_object(value_node, deep=deep)
        except (ValueError, OverflowError) as exc:  # e.g. a 5000-digit int, a date like 2024-13-45
            detail = " ".join(str(exc).split())[:160]
            raise yaml.constructor.ConstructorError(
                None, None, f"bad value of {_excerpt(key)}: {detail}", value_node.start_mark
            ) from None
    return out


def _excerpt(value: Any, limit: int = 60) -> str:
    try:
        text = repr(value)
    except ValueError:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


SafeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

# No YAML 1.1 base-60 numbers (YAML 1.2 dropped them): same resolvers, same order, minus the
# ``[-+]?[1-9][0-9_]*(:[0-5]?[0-9])+`` alternatives.
_INT_RE = re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$")
_FLOAT_RE = re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
                       r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")
_NO_BASE_60 = {"tag:yaml.org,2002:int": _INT_RE, "tag:yaml.org,2002:float": _FLOAT_RE}
SafeLoader.yaml_implicit_resolvers = {
    first: [(tag, _NO_BASE_60.get(tag, regexp)) for tag, regexp in resolvers]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def parse_yaml(text: str, source: str | None, *, what: str = "") -> Any:
    """The YAML document in ``text``; any problem is a ConfigError naming ``source`` (and ``what``, the
    key path, e.g. ``--set gate``) and the line."""
    try:
        return yaml.load(text, Loader=SafeLoader)  # noqa: S506 - SafeLoader subclass
    except RecursionError:
        raise ConfigError(source, what, "invalid YAML: nested too deeply") from None
    except (ValueError, OverflowError) as exc:  # a scalar the constructors reject: 5000-digit int, 2024-13-45
        detail = " ".join(str(exc).split())[:200]
        raise ConfigError(source, what, f"invalid YAML: bad scalar value: {detail}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(source, what, f"{where}invalid YAML: {problem}") from None


def read_text(path: Path | str) -> str:
    """The text of a regular file of at most MAX_BYTES bytes (UTF-8); ConfigError otherwise."""
    if str(path) == "":
        raise ConfigError(None, "", "empty path: name a config file")
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found") from None
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc.strerror or exc}") from None
    _check_regular(path, st)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc.strerror or exc}") from None
    try:
        _check_regular(path, os.fstat(fd))  # the file opened is the file checked
        chunks, total = [], 0
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError as exc:
                if exc.errno == errno.EAGAIN:
                    raise ConfigError(str(path), "", "not a regular file") from None
                raise ConfigError(str(path), "", f"cannot read: {exc.strerror or exc}") from None
            if not chunk:
                break
            total += len(chunk)
            if total > MAX_BYTES:
                raise ConfigError(str(path), "", f"larger than {MAX_BYTES // 1024} KiB; a config is a few KB")
            chunks.append(chunk)
    finally:
        os.close(fd)
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), "", f"cannot read: not UTF-8 text (byte {exc.start})") from None


def _check_regular(path: Path, st: os.stat_result) -> None:
    if stat.S_ISREG(st.st_mode):
        return
    kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
            else "a character device" if stat.S_ISCHR(st.st_mode) else "a block device" if stat.S_ISBLK(st.st_mode)
            else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
    raise ConfigError(str(path), "", f"is {kind}, not a regular file")


def read_yaml(path: Path | str) -> dict[str, Any]:
    """Read one YAML mapping from a file; any problem is a ConfigError naming the file (and line)."""
    text = read_text(path)
    data = parse_yaml(text, str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), "", f"top level must be a mapping, got {type(data).__name__}")
    return data
