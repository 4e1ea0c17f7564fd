"""Run a declarative Jenkinsfile's stages and post conditions here, without a Jenkins server.

Only what the project's Jenkinsfile uses is modelled, and anything else is an error (so a new step
cannot be silently ignored): ``environment { K = "${params.X}" }``, ``stages { stage('n') { steps
{...} } }``, ``post { always {...} }`` and the steps ``sh '...'``, ``catchError(...) {...}``,
``junit(testResults: '...', allowEmptyResults: ...)`` and ``archiveArtifacts(artifacts: '...', ...)``.

Declarative semantics kept: stages run in order; a failing step outside ``catchError`` fails its
stage and the build, and every later stage is skipped; ``catchError`` marks the stage and the build
FAILURE and goes on; ``post { always }`` runs whatever happened (as one block: a failing step
ends it); ``junit`` with
``allowEmptyResults: false`` fails when its pattern matches no file (parameters reach ``sh`` as
environment variables, as Jenkins passes them).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from junitparser import JUnitXml


class JenkinsfileError(Exception):
    """The file uses something this model does not know."""


class StepFailed(Exception):
    pass


@dataclass
class Build:
    result: str = "SUCCESS"
    stages: dict[str, str] = field(default_factory=dict)  # name -> SUCCESS | FAILURE | SKIPPED
    junit_files: list[Path] = field(default_factory=list)
    junit_cases: list[tuple[str, str, str]] = field(default_factory=list)  # (classname, name, result)
    archived: list[Path] = field(default_factory=list)
    log: list[str] = field(default_factory=list)


def _strip_comments(text: str) -> str:
    out, i, quote = [], 0, None
    while i < len(text):
        ch = text[i]
        if quote:
            out.append(ch)
            if ch == "\\" and i + 1 < len(text):
                out.append(text[i + 1])
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
            out.append(ch)
        elif text.startswith("//", i):
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def _block(text: str, open_at: int) -> tuple[str, int]:
    """The body of the ``{`` at ``open_at`` and the index after its ``}`` (quotes respected)."""
    assert text[open_at] == "{"
    depth, i, quote = 0, open_at, None
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : i], i + 1
        i += 1
    raise JenkinsfileError("unbalanced braces")


def _named_block(text: str, name: str) -> str | None:
    m = re.search(rf"(?<![\w.]){re.escape(name)}\s*\{{", text)
    return _block(text, m.end() - 1)[0] if m else None


def _args(call: str, key: str) -> str | None:
    m = re.search(rf"{key}\s*:\s*'([^']*)'", call) or re.search(rf'{key}\s*:\s*"([^"]*)"', call)
    return m.group(1) if m else None


Step = tuple  # ("sh", script) | ("catchError", [steps]) | ("junit", pattern, allow_empty) | ("archive", patterns)


def _steps(body: str) -> list[Step]:
    steps: list[Step] = []
    i = 0
    while True:
        m = re.compile(r"\S").search(body, i)
        if not m:
            return steps
        i = m.start()
        rest = body[i:]
        if sh := re.match(r"sh\s+'([^']*)'|sh\s+\"([^\"]*)\"", rest):
            steps.append(("sh", sh.group(1) if sh.group(1) is not None else sh.group(2)))
            i += sh.end()
        elif rest.startswith("catchError"):
            brace = body.index("{", i)
            inner, i = _block(body, brace)
            steps.append(("catchError", _steps(inner)))
        elif call := re.match(r"(junit|archiveArtifacts)\s*\(", rest):
            depth, j = 0, i + call.end() - 1
            while True:
                depth += {"(": 1, ")": -1}.get(body[j], 0)
                j += 1
                if depth == 0:
                    break
            text = body[i:j]
            if call.group(1) == "junit":
                allow = re.search(r"allowEmptyResults\s*:\s*true", text) is not None
                steps.append(("junit", _args(text, "testResults"), allow))
            else:
                steps.append(("archive", [p.strip() for p in (_args(text, "artifacts") or "").split(",")]))
            i = j
        else:
            raise JenkinsfileError(f"unknown step at: {rest[:60]!r}")


@dataclass
class Pipeline:
    env: dict[str, str]
    stages: list[tuple[str, list[Step]]]
    post_always: list[Step]


def parse(path: Path, params: Mapping[str, str]) -> Pipeline:
    text = _strip_comments(path.read_text())
    pipeline = _named_block(text, "pipeline")
    if pipeline is None:
        raise JenkinsfileError(f"{path}: no pipeline block")
    env: dict[str, str] = {}
    env_body = _named_block(pipeline, "environment") or ""
    for key, value in re.findall(r"(\w+)\s*=\s*\"([^\"]*)\"", env_body):
        env[key] = re.sub(r"\$\{params\.(\w+)\}", lambda m: str(params[m.group(1)]), value)
    stages_body = _named_block(pipeline, "stages")
    if stages_body is None:
        raise JenkinsfileError(f"{path}: no stages")
    stages = []
    for m in re.finditer(r"stage\s*\(\s*'([^']+)'\s*\)\s*\{", stages_body):
        body, _ = _block(stages_body, m.end() - 1)
        steps_body = _named_block(body, "steps")
        if steps_body is None:
            raise JenkinsfileError(f"{path}: stage {m.group(1)!r} has no steps")
        stages.append((m.group(1), _steps(steps_body)))
    stages_end = _block(pipeline, re.search(r"(?<![\w.])stages\s*\{", pipeline).end() - 1)[1]
    post_m = re.search(r"(?<![\w.])post\s*\{", pipeline[stages_end:])
    always: list[Step] = []
    if post_m:
        post, _ = _block(pipeline, stages_end + post_m.end() - 1)
        for cond, body in _top_blocks(post):
            if cond != "always":
                raise JenkinsfileError(f"{path}: post condition {cond!r} not modelled")
            always = _steps(body)
    return Pipeline(env, stages, always)


def _top_blocks(text: str) -> list[tuple[str, str]]:
    """The ``name { ... }`` blocks at the top level of ``text``."""
    out, i = [], 0
    while m := re.compile(r"(\w+)\s*\{").search(text, i):
        body, i = _block(text, m.end() - 1)
        out.append((m.group(1), body))
    return out


def _ant_glob(workspace: Path, pattern: str) -> list[Path]:
    """Jenkins' Ant-style pattern: a trailing ``**`` means every file below."""
    if pattern.endswith("**"):
        pattern += "/*"
    return sorted(p for p in workspace.glob(pattern) if p.is_file())


def run(path: Path, workspace: Path, params: Mapping[str, str], env: Mapping[str, str], *,
        before_stage: Mapping[str, Callable[[], None]] | None = None, sh_timeout_s: float = 600) -> Build:
    """Run the Jenkinsfile at ``path`` with ``workspace`` as the job's workspace (sh steps' cwd)."""
    pipeline = parse(path, params)
    build = Build()
    sh_env = {**env, **{k: str(v) for k, v in params.items()}, **pipeline.env}

    def sh(script: str) -> None:
        try:
            proc = subprocess.run(["bash", "-c", script], cwd=workspace, env=sh_env, capture_output=True,
                                  text=True, timeout=sh_timeout_s, check=False)
        except subprocess.TimeoutExpired:
            build.log.append(f"sh {script!r}: no end within {sh_timeout_s}s")
            raise StepFailed(script) from None
        build.log.append(f"$ {script} -> exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
        if proc.returncode != 0:
            raise StepFailed(f"{script}: exit {proc.returncode}")

    def execute(steps: list[Step], stage: str | None) -> None:
        for step in steps:
            kind = step[0]
            if kind == "sh":
                sh(step[1])
            elif kind == "catchError":
                try:
                    execute(step[1], stage)
                except StepFailed:
                    build.result = "FAILURE"
                    if stage:
                        build.stages[stage] = "FAILURE"
            elif kind == "junit":
                files = _ant_glob(workspace, step[1])
                if not files and not step[2]:
                    raise StepFailed(f"junit: no test report files were found for {step[1]!r}")
                for f in files:
                    build.junit_files.append(f)
                    for suite in JUnitXml.fromfile(str(f)):
                        for case in suite:
                            result = "passed" if case.is_passed else "skipped" if case.is_skipped else "failed"
                            build.junit_cases.append((case.classname, case.name, result))
            elif kind == "archive":
                for pattern in step[1]:
                    build.archived.extend(_ant_glob(workspace, pattern))

    failed = False
    for name, steps in pipeline.stages:
        if failed:
            build.stages[name] = "SKIPPED"
            continue
        build.stages[name] = "SUCCESS"
        if before_stage and name in before_stage:
            before_stage[name]()
        try:
            execute(steps, name)
        except StepFailed:
            build.stages[name] = "FAILURE"
            build.result = "FAILURE"
            failed = True
    try:  # one block: a failing step ends it (the steps after it do not run)
        execute(pipeline.post_always, None)
    except StepFailed as exc:
        build.log.append(f"post always: {exc}")
        build.result = "FAILURE"
    return build
