"""JUnit output, read back with junitparser."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from junitparser import Error, Failure, JUnitXml, Properties, Skipped

from perfsanity.common.errors import ConfigError
from perfsanity.results.gate import GateReport, MetricVerdict, Verdict
from perfsanity.results.junit import add_role_failures, write_junit

CONFIG = "ds.r1 <script>alert(1)</script>"


def _v(metric, verdict, value=100.0, baseline=100.0, delta=0.0, note="", **stats):
    return MetricVerdict(concurrency=64, metric=metric, value=value, baseline=baseline, baseline_source="history",
                         delta_pct=delta, threshold_pct=5.0, higher_is_better=metric.endswith("throughput"),
                         verdict=verdict, history_days=30, note=note, **stats)


REPORT = GateReport(
    config_name=CONFIG, pre_merge=False, evaluated_at=datetime(2025, 1, 1, tzinfo=UTC), lookback_days=90,
    history="postgresql+psycopg://perf:***@db/perf",
    verdicts=(
        _v("output_token_throughput", Verdict.WARN, 93.0, 100.0, -7.0, repeats=5, baseline_runs=150,
           sigma_pct=2.1, pvalue=1.5e-6, level=0.01 / 5, change_point="-7.0% level shift from this run, p=1.0e-05"),
        _v("total_token_throughput", Verdict.FAIL, 80.0, 100.0, -20.0),
        _v("ttft_median", Verdict.PASS, 101.0, 100.0, 1.0),
        _v("ttft_p99", Verdict.NO_BASELINE, 300.0, None, None, note="1 day(s) of history, need 3"),
        _v("itl_median", Verdict.NO_VALUE, None, 10.0, None, note="metric missing from results"),
    ),
)


def _cases(path):
    xml = JUnitXml.fromfile(str(path))
    return {case.name: case for suite in xml for case in suite}


def test_gate_testcases(tmp_path):
    path = write_junit(tmp_path / "junit.xml", config_name=CONFIG, report=REPORT)
    cases = _cases(path)
    assert set(cases) == {"c64.output_token_throughput", "c64.total_token_throughput", "c64.ttft_median",
                          "c64.ttft_p99", "c64.itl_median"}
    warn, fail = cases["c64.output_token_throughput"], cases["c64.total_token_throughput"]
    assert warn.classname == "ds_r1 <script>alert(1)</script>.gate"
    assert warn.is_passed and "PERF REGRESSION (post-merge, warning only)" in warn.system_out
    assert isinstance(fail.result[0], Failure) and "-20.00%" in fail.result[0].message
    assert fail.result[0].text.startswith("c64.total_token_throughput: value 80 vs history baseline 100")
    assert cases["c64.ttft_median"].is_passed
    assert isinstance(cases["c64.ttft_p99"].result[0], Skipped)
    assert "NO_BASELINE" in cases["c64.ttft_p99"].result[0].message
    assert isinstance(cases["c64.itl_median"].result[0], Skipped)
    (case_props,) = warn.iterchildren(Properties)  # junitparser has no TestCase.properties()
    props = {p.name: p.value for p in case_props}
    assert props["verdict"] == "WARN" and props["baseline_source"] == "history" and props["delta_pct"] == "-7.0"
    assert (props["repeats"], props["baseline_runs"], props["sigma_pct"], props["pvalue"], props["level"]) == \
        ("5", "150", "2.1", "1.5e-06", "0.002")
    assert "value 93 (mean of 5)" in warn.system_out and "change point: -7.0% level shift" in warn.system_out
    xml = JUnitXml.fromfile(str(path))
    suite = next(iter(xml))
    assert (suite.tests, suite.failures, suite.skipped, suite.errors) == (5, 1, 2, 0)
    suite_props = {p.name: p.value for p in suite.properties()}
    assert suite_props["verdict"] == "FAIL"
    assert suite_props["regressions"] == "c64.output_token_throughput,c64.total_token_throughput"


def test_role_failures_with_hostile_text(tmp_path):
    details = "Traceback...\n\x00\x1b[31mCUDA error\x1b[0m HF_TOKEN=hf_abcdefghijklmnopqrstuv <b>bold</b>"
    path = write_junit(tmp_path / "j.xml", config_name=CONFIG,
                       role_failures=[("GEN_0", "exited with code 1", details),
                                      ("DISAGG_SERVER", "not ready after 600 s", "")])
    cases = _cases(path)
    gen = cases["GEN_0"]
    assert gen.classname.endswith(".roles")
    (failure,) = gen.result
    assert isinstance(failure, Failure) and failure.message == "exited with code 1"
    assert "CUDA error" in failure.text and "<b>bold</b>" in failure.text
    assert "hf_abcdefghijklmnopqrstuv" not in path.read_text()
    assert "\x00" not in path.read_text()


def test_add_role_failures_appends_to_existing_file(tmp_path):
    path = write_junit(tmp_path / "j.xml", config_name=CONFIG, report=REPORT)
    add_role_failures(path, config_name=CONFIG, failures=[("CTX_1", "OOM", "tail")])
    add_role_failures(path, config_name=CONFIG, failures=[("BENCHMARK", "client crashed", "tail")])
    xml = JUnitXml.fromfile(str(path))
    suites = {s.name: s for s in xml}
    roles = next(s for name, s in suites.items() if name.startswith("roles."))
    assert {c.name for c in roles} == {"CTX_1", "BENCHMARK"}
    assert roles.failures == 2 and roles.tests == 2
    assert len(_cases(path)) == 7
    fresh = add_role_failures(tmp_path / "new.xml", config_name="x", failures=[("GEN_0", "m", "d")])
    assert isinstance(_cases(fresh)["GEN_0"].result[0], Failure)
    assert not any(isinstance(r, Error) for c in _cases(path).values() for r in c.result)


def test_bad_inputs(tmp_path):
    with pytest.raises(ConfigError, match="name, message, details"):
        write_junit(tmp_path / "j.xml", config_name="x", role_failures=[("GEN_0", "only two")])  # type: ignore[list-item]
    bad = tmp_path / "bad.xml"
    bad.write_text("<html>")
    with pytest.raises(ConfigError, match="not a readable junit XML"):
        add_role_failures(bad, config_name="x", failures=[("a", "b", "c")])
