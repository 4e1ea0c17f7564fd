"""JUnit XML for Jenkins: one testcase per gated (concurrency, metric), plus testcases for role failures.

Representation (what Jenkins shows):

* ``PASS`` → a passing testcase.
* ``FAIL`` (pre-merge regression) → ``<failure type="PerfRegression">``: the build turns red/unstable.
* ``WARN`` (post-merge regression) → a **passing** testcase with ``<property name="verdict" value="WARN">``
  and a ``<system-out>`` line starting ``PERF REGRESSION (post-merge, warning only)``. A post-merge
  regression is recorded (history, gate.json) but must not fail the nightly; a ``<failure>`` would.
  Consumers find warnings by the ``verdict`` property.
* ``NO_BASELINE`` / ``NO_VALUE`` → ``<skipped>``: the check could not run.
* an accuracy task (``accuracy.<task>``, classname ``….accuracy``) → passing with its score, or
  ``<failure type="AccuracyBelowThreshold">`` (``AccuracyError`` when lm-eval gave no score).
* a role failure (GEN_0, CTX_1, DISAGG_SERVER, BENCHMARK, …) → ``<failure type="RoleFailure">`` with the
  details (log tail) as the failure body. The submit side's pipeline adds ``GATE`` (the gate could not
  run) and ``JOB`` (why the job ended — "SLURM job 12 ended CANCELLED" — when no role says it) the same way.

Every testcase carries ``<properties>``: value, baseline, baseline_source, delta_pct, threshold_pct,
higher_is_better, verdict. Names are ``c<concurrency>.<metric>``; the classname is the config name (dots
replaced by ``_``, since Jenkins splits classnames on dots) followed by ``.gate`` or ``.roles``.
Role-failure text is stripped of secrets; all text of characters XML cannot carry.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from perfsanity.common.errors import ConfigError
from perfsanity.common.files import write_atomic
from perfsanity.common.redact import redact
from perfsanity.load.results_json import AccuracyResult
from perfsanity.results.gate import GateReport, MetricVerdict, Verdict

RoleFailure = tuple[str, str, str]  # (name, message, details)

_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
MAX_DETAILS = 64 * 1024


def clean(text: object, limit: int | None = None, *, secrets: bool = False) -> str:
    """Text that XML 1.0 can carry (control characters dropped), optionally tail-truncated; with
    ``secrets=True`` (free text such as log tails) secret values are redacted first."""
    out = str(text)
    if secrets:
        out = redact(out)
    out = _XML_ILLEGAL.sub("", out)
    if limit is not None and len(out) > limit:
        out = "[… truncated …]\n" + out[-limit:]
    return out


def _base(config_name: str) -> str:
    return clean(config_name).replace(".", "_").strip() or "perfsanity"


def classname(config_name: str, kind: str) -> str:
    return f"{_base(config_name)}.{kind}"


def _props(parent: ET.Element, items: Sequence[tuple[str, object]]) -> None:
    props = ET.SubElement(parent, "properties")
    for name, value in items:
        ET.SubElement(props, "property", name=name, value=clean("" if value is None else value))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _describe(v: MetricVerdict) -> str:
    direction = "higher is better" if v.higher_is_better else "lower is better"
    delta = "n/a" if v.delta_pct is None else f"{v.delta_pct:+.2f}%"
    mean_of = f" (mean of {v.repeats})" if v.repeats > 1 else ""
    text = (f"{v.name}: value {_fmt(v.value)}{mean_of} vs {v.baseline_source} baseline "
            f"{_fmt(v.baseline)} ({delta}, threshold {v.threshold_pct:g}%, {direction})")
    if v.change_point:
        text += f"; change point: {v.change_point}"
    return text


def gate_testcase(v: MetricVerdict, config_name: str) -> ET.Element:
    case = ET.Element("testcase", name=clean(v.name), classname=classname(config_name, "gate"), time="0")
    _props(case, [
        ("metric", v.metric),
        ("concurrency", v.concurrency),
        ("point", v.label),
        ("value", v.value),
        ("baseline", v.baseline),
        ("baseline_source", v.baseline_source),
        ("delta_pct", None if v.delta_pct is None else round(v.delta_pct, 4)),
        ("threshold_pct", v.threshold_pct),
        ("higher_is_better", str(v.higher_is_better).lower()),
        ("verdict", v.verdict.value),
        ("repeats", v.repeats),
        ("baseline_runs", v.baseline_runs),
        ("sigma_pct", None if v.sigma_pct is None else round(v.sigma_pct, 4)),
        ("pvalue", None if v.pvalue is None else f"{v.pvalue:.3g}"),
        ("level", None if v.level is None else f"{v.level:.3g}"),
        ("change_point", v.change_point),
    ])
    text = _describe(v)
    if v.verdict is Verdict.FAIL:
        fail = ET.SubElement(case, "failure", message=clean(f"perf regression: {text}"), type="PerfRegression")
        fail.text = clean(text)
    elif v.verdict is Verdict.WARN:
        out = ET.SubElement(case, "system-out")
        out.text = clean(f"PERF REGRESSION (post-merge, warning only): {text}")
    elif v.verdict in (Verdict.NO_BASELINE, Verdict.NO_VALUE, Verdict.CLIENT_SATURATED):
        ET.SubElement(case, "skipped", message=clean(f"{v.verdict.value}: {v.note or text}"))
    else:
        out = ET.SubElement(case, "system-out")
        out.text = clean(text)
    return case


def role_failure_testcases(failures: Sequence[RoleFailure], *, config_name: str) -> list[ET.Element]:
    """One failing testcase per ``(name, message, details)``."""
    cases = []
    for item in failures:
        if not (isinstance(item, tuple | list) and len(item) == 3):
            raise ConfigError(None, "failures", f"each failure must be (name, message, details), got {item!r}")
        name, message, details = item
        case = ET.Element("testcase", name=clean(name) or "unnamed", classname=classname(config_name, "roles"),
                          time="0")
        fail = ET.SubElement(case, "failure", message=clean(message, 2000, secrets=True), type="RoleFailure")
        fail.text = clean(details, MAX_DETAILS, secrets=True)
        cases.append(case)
    return cases


def accuracy_testcases(results: Sequence[AccuracyResult], *, config_name: str) -> list[ET.Element]:
    """One testcase per accuracy task: passing when it scored and reached ``accuracy.threshold`` (or has
    none), failing otherwise (``AccuracyBelowThreshold``; ``AccuracyError`` when lm-eval gave no score)."""
    cases = []
    for r in results:
        case = ET.Element("testcase", name=clean(f"accuracy.{r.task}"), classname=classname(config_name, "accuracy"),
                          time="0" if r.started_at is None or r.ended_at is None else f"{r.ended_at - r.started_at:.1f}")
        _props(case, [("task", r.task), ("metric", r.metric), ("score", r.score), ("threshold", r.threshold),
                      ("samples", r.samples), ("verdict", "PASS" if r.passed else "FAIL"), ("raw_path", r.raw_path)])
        text = r.verdict_text()
        if r.passed:
            ET.SubElement(case, "system-out").text = clean(text)
        else:
            kind = "AccuracyError" if r.score is None else "AccuracyBelowThreshold"
            fail = ET.SubElement(case, "failure", message=clean(text, 2000, secrets=True), type=kind)
            fail.text = clean(r.error or text, MAX_DETAILS, secrets=True)
        cases.append(case)
    return cases


def _suite(name: str, cases: Sequence[ET.Element], properties: Sequence[tuple[str, object]]) -> ET.Element:
    suite = ET.Element("testsuite", name=clean(name))
    if properties:
        _props(suite, properties)
    for c in cases:
        suite.append(c)
    _recount(suite)
    suite.set("timestamp", datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds"))
    return suite


def _recount(suite: ET.Element) -> None:
    cases = suite.findall("testcase")
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(sum(1 for c in cases if c.find("failure") is not None)))
    suite.set("errors", str(sum(1 for c in cases if c.find("error") is not None)))
    suite.set("skipped", str(sum(1 for c in cases if c.find("skipped") is not None)))
    suite.set("time", "0")


def _recount_root(root: ET.Element) -> None:
    for key in ("tests", "failures", "errors", "skipped"):
        root.set(key, str(sum(int(s.get(key, "0")) for s in root.findall("testsuite"))))


def _write(root: ET.Element, path: Path) -> Path:
    _recount_root(root)
    ET.indent(root)
    write_atomic(path, ET.tostring(root, encoding="utf-8", xml_declaration=True))
    return path


def write_junit(
    path: Path,
    *,
    config_name: str,
    report: GateReport | None = None,
    role_failures: Sequence[RoleFailure] = (),
    accuracy: Sequence[AccuracyResult] = (),
) -> Path:
    """Write a fresh junit file: a ``perf-gate`` suite (if ``report``), an ``accuracy`` suite (if the
    accuracy step ran) and a ``roles`` suite (if any role failed)."""
    root = ET.Element("testsuites", name=clean(f"perfsanity {config_name}"))
    if report is not None:
        cases = [gate_testcase(v, config_name) for v in report.verdicts]
        props = [("config_name", config_name), ("verdict", report.verdict.value),
                 ("pre_merge", str(report.pre_merge).lower()), ("history", report.history or ""),
                 ("regressions", ",".join(v.name for v in report.regressions))]
        root.append(_suite(f"perf-gate.{_base(config_name)}", cases, props))
    if accuracy:
        root.append(_suite(f"accuracy.{_base(config_name)}", accuracy_testcases(accuracy, config_name=config_name),
                           []))
    if role_failures:
        root.append(_suite(f"roles.{_base(config_name)}",
                           role_failure_testcases(role_failures, config_name=config_name), []))
    return _write(root, path)


def add_role_failures(path: Path, *, config_name: str, failures: Sequence[RoleFailure]) -> Path:
    """Append role-failure testcases to ``path`` (created if missing; an existing file must be junit)."""
    if path.exists():
        try:
            root = ET.parse(path).getroot()
        except (ET.ParseError, OSError) as exc:
            raise ConfigError(str(path), "", f"not a readable junit XML file: {exc}") from None
        if root.tag == "testsuite":
            wrapper = ET.Element("testsuites")
            wrapper.append(root)
            root = wrapper
        elif root.tag != "testsuites":
            raise ConfigError(str(path), "", f"root element is <{root.tag}>, expected <testsuites>")
    else:
        root = ET.Element("testsuites", name=clean(f"perfsanity {config_name}"))
    if not failures:
        return _write(root, path)
    name = f"roles.{_base(config_name)}"
    suite = next((s for s in root.findall("testsuite") if s.get("name") == name), None)
    if suite is None:
        suite = _suite(name, [], [])
        root.append(suite)
    for case in role_failure_testcases(failures, config_name=config_name):
        suite.append(case)
    _recount(suite)
    return _write(root, path)
