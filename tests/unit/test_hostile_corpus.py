"""The hostile-input corpus: over a thousand configs, generated per class plus hand-picked ones, each
ending in a ConfigError of one line (≤ 1000 characters, naming the file or the flag) with nothing
written, or in a valid config (and, for every case of the small classes and one in eight of the big
ones, a complete job dir). Never another exception, a hang or a leftover file.

Classes: alias bombs and cycles, file kinds and sizes, booleans vs numbers in every typed field,
control characters and 200 KB values in every string field, shell-injection payloads, derived keys,
``--set`` values, and odd scalars. Every case runs in-process through the same calls ``submit.py
--dry-run`` makes (for speed); one case of every class also runs through the real CLI.
"""

from __future__ import annotations

import copy
import functools
import os
import typing
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from perfsanity.common.errors import ConfigError
from perfsanity.plan.prepare import parse_set, prepare_direct
from perfsanity.spec.config import Config, load_config
from perfsanity.spec.topology import build_topology

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "test_configs/disagg/perf/mocker-ctx1-gen1.yaml"
BASE_RAW = yaml.safe_load(BASE.read_text())
SECTIONS = ("metadata", "slurm", "hardware", "environment", "benchmark", "accuracy", "profiling", "timeouts")
CONTROL = ("\x00", "\n", "\r", "\x1b[2J", "\x07", "\x7f", "\t")
INJECTION = ("$(touch PWNED)", "`touch PWNED`", "a;touch PWNED", "'\"$(touch PWNED)", "${IFS}touch${IFS}PWNED",
             "x && touch PWNED", "|touch PWNED", "--comment=$(id)", "\\$(touch PWNED)", "-o /tmp/PWNED")
ODD = ("", " ", "-1", "0", "1e999", "nan", ".inf", "~", "null", "[]", "{}", "0x10", "0o17", "1_000", "99999999999999999999",
       "é", "\u202e", "\ufeff", "日本", "*", "&a", "!!binary aGk=", "%", "@x", "01:00:00", "1-00:00:00", "yes", "no")


def fields_of(kind: tuple[type, ...]) -> list[str]:
    """Dotted names of the harness fields whose annotation includes one of ``kind``."""
    out = []
    for section in SECTIONS:
        model = typing.get_args(Config.model_fields[section].annotation) or (Config.model_fields[section].annotation,)
        model = model[0]
        for name, f in model.model_fields.items():
            args = set(typing.get_args(f.annotation)) or {f.annotation}
            if args & set(kind):
                out.append(f"{section}.{name}")
    return out


NUMERIC = [f for f in fields_of((int, float)) if f not in fields_of((bool,))]
BOOLEAN = fields_of((bool,))
STRINGS = [f for f in fields_of((str,)) if f != "metadata.backend"] + ["environment.worker_env_var"]


@dataclass(frozen=True)
class Case:
    cls: str
    name: str
    text: str | None = None  # the config file's text (None: see ``special``)
    sets: tuple[str, ...] = ()  # --set KEY=VALUE
    special: str = ""  # fifo / chardev / dir / missing / empty / symlink-fifo / loop / bytes
    data: bytes = field(default=b"", repr=False)


def with_value(dotted: str, value: Any) -> str:
    raw = copy.deepcopy(BASE_RAW)
    node = raw
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return yaml.safe_dump(raw, sort_keys=False, allow_unicode=False)


def bomb(levels: int, width: int) -> str:
    lines = ["a0: &a0 [x, x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    return "".join(f"    {line}\n" for line in lines)


def corpus() -> list[Case]:
    base = BASE.read_text()
    cases: list[Case] = []
    # alias bombs: small ones load, big ones are refused at once
    for where in ("worker_config.gen", "gate", "sweep", "cache_transceiver_precheck"):
        for levels in range(2, 10):
            for width in (2, 3, 5, 10):
                if where == "worker_config.gen":
                    text = base.replace("  gen:\n", "  gen:\n    bomb:\n" + "".join(
                        "  " + line + "\n" for line in bomb(levels, width).splitlines()), 1)
                else:
                    text = base + f"{where}:\n  bomb:\n" + bomb(levels, width).replace("    ", "    ", 1)
                cases.append(Case("alias", f"{where}-{levels}x{width}", text))
    for doc in ("gate: &a [*a]\n", "gate: &a {x: *a}\n", "sweep: &s {k: [1, *s]}\n", "gate: &a [[[*a]]]\n",
                "cache_transceiver_precheck: &c {a: {b: *c}}\n", "gate: &a {<<: *a}\n", "x: &a [*a]\n"):
        cases.append(Case("cycle", doc.strip(), base + doc))
    cases.append(Case("cycle", "worker-self", base.replace("  gen:\n", "  gen: &g\n    me: *g\n", 1)))
    cases.append(Case("alias", "101-aliases", base + "gate:\n  a: &v 1\n  l: [" + ", ".join(["*v"] * 101) + "]\n"))
    # file kinds and sizes
    for special in ("fifo", "chardev", "dir", "missing", "empty", "symlink-fifo", "loop", "devnull"):
        cases.append(Case("file", special, special=special))
    for name, data in (("oversize", base.encode() + b"#" * (1 << 20)), ("latin1", "model: \xe9\n".encode("latin-1")),
                       ("nul-bytes", base.encode() + b"\x00\x00"), ("bom", b"\xef\xbb\xbf" + base.encode()),
                       ("raw-esc", base.encode() + b"x: \x1b[31m\n"), ("empty-file", b""), ("only-comment", b"# x\n"),
                       ("list-top", b"- a\n"), ("scalar-top", b"hello\n"), ("deep", b"a: " + b"[" * 5000)):
        cases.append(Case("file", name, special="bytes", data=data))
    # booleans are no numbers, numbers no booleans
    for key in NUMERIC:
        for value in (True, False):
            cases.append(Case("bool-number", f"{key}={value}", with_value(key, value)))
    for key in BOOLEAN:
        for value in (0, 1, 2, 0.5):
            cases.append(Case("bool-number", f"{key}={value}", with_value(key, value)))
    for value in (True, [True, 1], "true"):
        cases.append(Case("bool-number", f"concurrency_list={value}", with_value("benchmark.concurrency_list", value)))
    # control characters, 200 KB values and injection payloads in every string field
    for key in STRINGS:
        for ch in CONTROL:
            cases.append(Case("control", f"{key}+{ch!r}", with_value(key, f"a{ch}b")))
        size = 100_000 if len(cases) % 4 == 0 else 10_000  # 200 KB in a quarter of the fields, 20 KB elsewhere
        cases.append(Case("long", f"{key}-{size // 500}kb", with_value(key, "a." * size)))
        cases.append(Case("long", f"{key}-{size // 500}kb-quotes", with_value(key, "9'" * (size + 1))))
        for payload in INJECTION:
            cases.append(Case("injection", f"{key}:{payload}", with_value(key, payload)))
        for odd in ODD[len(cases) % 4::4]:  # a quarter of the odd scalars per field, a different quarter each
            cases.append(Case("odd", f"{key}:{odd!r}", with_value(key, odd)))
    for key in ("worker_config.gen.served", "worker_config.ctx.x.y"):
        for ch in CONTROL:
            cases.append(Case("control", f"{key}+{ch!r}", with_value(key, f"a{ch}b")))
    for key in NUMERIC:
        for odd in ("1e999", "-1", "0", "nan", "99999999999999999999", "1.5", "'8'", "[]"):
            cases.append(Case("odd", f"{key}:{odd}", base, sets=(f"{key}={odd}",)))
    # derived keys, in the file and by --set
    for key in ("name", "kind", "source"):
        cases.append(Case("derived", f"file-{key}", base + f"{key}: x\n"))
        cases.append(Case("derived", f"set-{key}", base, sets=(f"{key}=x",)))
    # --set values: bombs, cycles, junk
    for value in ("&a [*a]", "[&a [1,1,1,1,1,1,1,1,1,1], " + ", ".join(["*a"] * 120) + "]", "{a: 1, a: 2}", "[",
                  "!!python/object:os.system x", "'unterminated", "a: b: c", "\x00"):
        cases.append(Case("set", f"gate={value[:20]!r}", base, sets=(f"gate={value}",)))
    for item in ("=x", "novalue", "worker_config.gen=3", "metadata.model_name.x=1", "a" * 5000 + "=1"):
        cases.append(Case("set", item[:30], base, sets=(item,)))
    return cases


CLASSES = ("alias", "bool-number", "control", "cycle", "derived", "file", "injection", "long", "odd", "set")


@functools.cache
def cases() -> tuple[Case, ...]:
    """The corpus, built on first use (not at collection: rendering 200 KB values takes seconds)."""
    return tuple(corpus())


def cli_sample(cls: str) -> Case:
    return next(c for c in cases() if c.cls == cls)


def materialize(case: Case, tmp_path: Path) -> str:
    """The --config argument for ``case`` (a file, FIFO, device... under tmp_path)."""
    path = tmp_path / "in" / "case.yaml"
    path.parent.mkdir()
    if case.text is not None:
        path.write_text(case.text)
    elif case.special == "bytes":
        path.write_bytes(case.data)
    elif case.special in ("fifo", "symlink-fifo"):
        fifo = tmp_path / "in" / "fifo"
        os.mkfifo(fifo)
        if case.special == "fifo":
            return str(fifo)
        path.symlink_to(fifo)
    elif case.special == "chardev":
        return "/dev/zero"
    elif case.special == "devnull":
        return "/dev/null"
    elif case.special == "dir":
        return str(path.parent)
    elif case.special == "missing":
        return str(tmp_path / "in" / "nope.yaml")
    elif case.special == "empty":
        return ""
    elif case.special == "loop":
        path.symlink_to(path)
    return str(path)


def leftovers(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if p.name != "in")


def full_run(case: Case) -> bool:
    """Whether a case the loader accepts also goes through the whole dry run (job dir written): every
    class except the big ones, where one in eight (by name) does, to keep the suite fast."""
    if case.cls not in ("odd", "injection", "control", "long", "alias"):
        return True
    return zlib.crc32(case.name.encode()) % 8 == 0


def check_error(exc: ConfigError, config: str) -> None:
    text = str(exc)
    assert "\n" not in text and len(text) <= 1000, text[:2000]
    assert (config and config in text) or exc.key_path.startswith("--") or "--config" in text, text


def run_case(case: Case, tmp_path: Path) -> None:
    config = materialize(case, tmp_path)
    out = tmp_path / "job"
    try:
        if config == "":
            raise ConfigError(None, "--config", "is empty")  # what cli/submit.py says before any loading
        overrides = parse_set(case.sets) or None
        config_obj = load_config(Path(config), overrides=overrides)
        build_topology(config_obj)
        if not full_run(case):
            return
        job = prepare_direct(Path(config), out, overrides=overrides)
        job.write()
    except ConfigError as exc:
        check_error(exc, config)
        assert leftovers(tmp_path) == [], leftovers(tmp_path)
        return
    assert {"launch.sh", "config.resolved.yaml", "job.json", "job_meta.json", "logs"} <= set(os.listdir(out))
    assert leftovers(tmp_path) == ["job"]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert yaml.safe_load((out / "config.resolved.yaml").read_text())["name"]


@pytest.mark.slow  # a thousand cases in all (~30 s); test_one_case_of_every_class_through_the_cli stays fast
@pytest.mark.parametrize("cls", CLASSES)
def test_corpus_class(cls: str, tmp_path: Path) -> None:
    # one test per class (the cases in a loop, each in its own dir): a thousand test items would cost
    # more in set-up than the cases themselves
    for i, case in enumerate(c for c in cases() if c.cls == cls):
        where = tmp_path / str(i)
        where.mkdir()
        try:
            run_case(case, where)
        except AssertionError as exc:
            raise AssertionError(f"case {case.cls}/{case.name}: {exc}") from None
        except Exception as exc:  # anything but a ConfigError is a defect of the harness
            raise AssertionError(f"case {case.cls}/{case.name}: {type(exc).__name__}: {str(exc)[:500]}") from exc


def test_corpus_is_large_and_covers_every_class() -> None:
    assert len(cases()) >= 1000, len(cases())
    assert {c.cls for c in cases()} == set(CLASSES)


@pytest.mark.parametrize("cls", CLASSES)
def test_one_case_of_every_class_through_the_cli(cls: str, tmp_path: Path, h) -> None:
    import subprocess
    import sys

    case = cli_sample(cls)
    config = materialize(case, tmp_path)
    args = ["--config", config, "--out", tmp_path / "job", "--dry-run"] + [a for s in case.sets for a in ("--set", s)]
    proc = subprocess.run([sys.executable, str(h.SUBMIT), *map(str, args)], cwd=tmp_path, env=h.cli_env(),
                          capture_output=True, text=True, timeout=10, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    if proc.returncode == 0:
        assert (tmp_path / "job/launch.sh").is_file()
    else:
        assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr[-3000:]
        assert leftovers(tmp_path) == []
