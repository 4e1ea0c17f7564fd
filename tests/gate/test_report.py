"""HTML reports: content, escaping, plots; a slow test renders them in headless Chromium."""

from __future__ import annotations

import base64
import os
import re
import shutil
import struct
import subprocess
from datetime import timedelta

import pytest
from gate_helpers import DAY0, in_ci, job_meta, make_keys, make_run, seed_history

from perfsanity.results.gate import GateConfig, evaluate
from perfsanity.results.history import HistoryStore
from perfsanity.results.report.job import render_job_report, write_job_report
from perfsanity.results.report.trend import render_trend_report, write_trend_report

EVIL = '<script>alert("x")</script>&"'
NOW = DAY0 + timedelta(days=90, hours=3)


def _sweep(scale: float = 1.0):
    out = {}
    for c, (tput, ttft, tpot) in {1: (120, 60, 8), 8: (900, 70, 9), 32: (3000, 110, 10.5), 64: (5000, 200, 12),
                                  128: (7000, 480, 17), 256: (7600, 1300, 30)}.items():
        out[c] = {"output_token_throughput": tput * scale, "total_token_throughput": 2 * tput * scale,
                  "ttft_median": ttft, "ttft_p99": ttft * 2.2, "tpot_median": tpot, "itl_median": tpot * 0.95,
                  "output_token_throughput_per_gpu": tput * scale / 12, "e2e_median": ttft + tpot * 1024}
    return out


def _pngs(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", png[16:24])


def test_job_report_escapes_everything_and_embeds_plots():
    run = make_run(_sweep(), config_name=EVIL).model_copy(update={
        "status": "failed", "failures": ("GEN_0: exited 1 <img src=x onerror=alert(1)> token=abc123secret",)})
    gate = evaluate(run, config=GateConfig(baselines={"output_token_throughput": {64: 6000.0}}))
    html = render_job_report(run, gate=gate, meta=job_meta(EVIL))
    assert "<script>" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&amp;&#34;" in html  # Jinja2 autoescape (markupsafe)
    assert "abc123secret" not in html
    assert 'class="warn"' in html and ">WARN<" in html  # the c64 throughput row, colored
    pngs = _pngs(html)
    assert len(pngs) == 2
    for png in pngs:
        w, h = _png_size(png)
        assert w >= 400 and h >= 250
    assert 'href="https://jenkins.example/job/perf/42/"' in html


def test_metric_and_config_names_are_not_mistaken_for_secrets():
    run = make_run(_sweep(), config_name="kv-key-token-test")
    gate = evaluate(run, config=GateConfig(baselines={"output_token_throughput": 1.0}))
    html = render_job_report(run, gate=gate)
    assert "kv-key-token-test: PASS (post-merge" in html and "***" not in html


def test_job_report_link_only_for_http():
    meta = job_meta().model_copy(update={"build_url": "javascript:alert(1)"})
    html = render_job_report(make_run(_sweep()), meta=meta)
    assert 'href="javascript' not in html


def test_write_job_report_from_job_dir_with_history_trends(tmp_path):
    with HistoryStore(tmp_path / "h.sqlite") as store:
        today = seed_history(store, days=40, change_day=30,
                             change={"output_token_throughput": 0.9, "total_token_throughput": 0.9})
        job = tmp_path / "job"
        job.mkdir()
        make_run({64: today}).write(job / "results.json")
        job_meta(timestamp=DAY0 + timedelta(days=40, hours=3)).write(job / "job_meta.json")
        out = write_job_report(job, history=store)
    html = out.read_text()
    assert out == job / "report.html"
    assert "Trends" in html and "<details>" in html
    assert len(_pngs(html)) == 2 + 6  # sweep plots (1 concurrency still gives both) + one trend per gated metric


def test_trend_report_marks_change_points(tmp_path):
    with HistoryStore(tmp_path / "h.sqlite") as store:
        seed_history(store, change_day=60, change={"output_token_throughput": 0.95, "total_token_throughput": 0.95})
        seed_history(store, concurrency=8, seed=4)
        html = render_trend_report(store, make_keys().config_name, now=NOW,
                                   metrics=["output_token_throughput", "ttft_median"])
    assert "concurrency 8" in html and "concurrency 64" in html
    assert html.count(">regression<") == 1
    assert len(_pngs(html)) == 4


def test_trend_report_without_history_is_a_clear_error(tmp_path):
    from perfsanity.common.errors import PerfsanityError

    with HistoryStore(tmp_path / "h.sqlite") as store, pytest.raises(PerfsanityError, match="no post-merge history"):
        render_trend_report(store, "nothing-here", now=NOW)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["job", "trend"])
def test_reports_render_in_headless_chromium(tmp_path, kind):
    browser = _chromium()
    if browser is None:
        if in_ci():
            pytest.fail("chromium not installed but CI=true (apt-get install chromium)")
        pytest.skip("chromium not installed (apt-get install chromium)")
    with HistoryStore(tmp_path / "h.sqlite") as store:
        today = seed_history(store, change_day=60,
                             change={"output_token_throughput": 0.95, "total_token_throughput": 0.95})
        if kind == "job":
            sweep = _sweep(0.97)
            sweep[64] = today
            run = make_run(sweep)
            gate = evaluate(run, history=store, keys=make_keys(), now=NOW)
            page = tmp_path / "report.html"
            page.write_text(render_job_report(run, gate=gate, meta=job_meta(timestamp=NOW)))
        else:
            page = write_trend_report(store, make_keys().config_name, tmp_path / "trend.html", now=NOW,
                                      metrics=["output_token_throughput", "ttft_median"])
    shot = tmp_path / f"{kind}.png"
    profile = tmp_path / "chromium-profile"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--no-first-run", "--disable-sync", f"--user-data-dir={profile}",
           "--hide-scrollbars", "--window-size=1400,2000", f"--screenshot={shot}", page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                          env={**os.environ, "HOME": str(tmp_path)}, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    png = shot.read_bytes()
    assert _png_size(png) == (1400, 2000)
    assert len(png) > 50_000, "a near-empty screenshot: the page did not render"
    keep = os.environ.get("PERFSANITY_KEEP_SCREENSHOTS")
    if keep:
        shutil.copy(shot, os.path.join(keep, shot.name))


def test_job_report_lists_profiles_profiler_calls_and_accuracy(tmp_path):
    """Every file under profiles/ is listed (linked, with its size); each profiler call and accuracy task
    is a row, their free text escaped."""
    from perfsanity.load.results_json import AccuracyResult, ProfilerCall

    job = tmp_path / "job"
    (job / "profiles" / "GEN_0").mkdir(parents=True)
    (job / "profiles" / "GEN_0" / "trace-rank0.json.gz").write_bytes(b"x" * 2048)
    (job / "profiles" / "CTX_0.0.nsys-rep").write_bytes(b"y" * 10)
    call = ProfilerCall(window="c8", action="start", role="GEN_0", url="http://127.0.0.1:1/start_profile",
                        sent_at=1.0, answered_at=1.5, status=404, answer=EVIL)
    acc = AccuracyResult(task="tiny_arith", metric="exact_match,strip", score=0.25, threshold=0.5, samples=8)
    make_run(_sweep()).model_copy(update={"profiler_calls": (call,), "accuracy": (acc,)}).write(job / "results.json")
    html = write_job_report(job).read_text()
    assert '<a href="profiles/GEN_0/trace-rank0.json.gz">profiles/GEN_0/trace-rank0.json.gz</a> (2 KiB)' in html
    assert "profiles/CTX_0.0.nsys-rep</a> (10 B)" in html
    assert "<h2>Profiler windows</h2>" in html and "/start_profile" in html and "00:00:01.500" in html
    assert EVIL not in html and "&lt;script&gt;" in html
    assert "<h2>Accuracy</h2>" in html and "tiny_arith" in html and "FAIL" in html


def test_job_report_without_profiles_or_accuracy_has_no_such_sections(tmp_path):
    job = tmp_path / "job"
    (job / "profiles").mkdir(parents=True)  # roles create it; empty, it is not shown
    make_run(_sweep()).write(job / "results.json")
    html = write_job_report(job).read_text()
    assert "<h2>Profiles</h2>" not in html and "<h2>Profiler windows</h2>" not in html
    assert "<h2>Accuracy</h2>" not in html
