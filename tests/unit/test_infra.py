"""The ``infra`` / ``frontend`` sections and the generated nginx.conf.

* defaults keep today's single-box layout (file discovery, TCP requests, ZMQ events, one frontend);
* bad values, several frontends without nginx, and either section on a backend without Dynamo's
  runtime are one-line errors (exit 2) naming the file and the field, with nothing written;
* nginx.conf is golden-tested, and the real ``nginx -t`` accepts it with the socket it adopts.

``PERFSANITY_UPDATE_GOLDEN=1 pytest tests/unit/test_infra.py`` rewrites the golden file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from perfsanity.engines.base import Address
from perfsanity.run import services
from perfsanity.spec.config import load_config
from perfsanity.spec.infra import Frontend, Infra

GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("PERFSANITY_UPDATE_GOLDEN") == "1"


def test_defaults_are_the_single_box_layout(h):
    config = load_config(h.CONFIGS_ROOT / "disagg/perf/mocker-ctx1-gen1.yaml")
    assert (config.infra.discovery, config.infra.request_plane, config.infra.event_plane) == ("file", "tcp", "zmq")
    assert (config.frontend.count, config.frontend.nginx) == (1, False)
    assert services.needed(config) == ()


def test_shipped_cluster_layout_config(h):
    config = load_config(h.CONFIGS_ROOT / "disagg/perf/mocker-ctx2-gen2-etcd-nats.yaml")
    assert config.infra == Infra(discovery="etcd", request_plane="nats", event_plane="nats")
    assert config.frontend == Frontend(count=2, nginx=True)
    assert services.needed(config) == ("etcd", "nats")


@pytest.mark.parametrize("infra,want", [
    ({"discovery": "etcd"}, ("etcd",)),
    ({"event_plane": "nats"}, ("nats",)),
    ({"request_plane": "nats"}, ("nats",)),
    ({"discovery": "etcd", "request_plane": "nats"}, ("etcd", "nats")),
])
def test_services_follow_the_infra_section(h, infra, want):
    config = load_config(h.CONFIGS_ROOT / "disagg/perf/mocker-ctx1-gen1.yaml", overrides={"infra": infra})
    assert services.needed(config) == want


def _write(tmp_path: Path, base: str, **sections) -> Path:
    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "test_configs/disagg/perf" / base).read_text())
    raw.update(sections)
    path = tmp_path / "disagg" / "perf" / f"bad-{base}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("base,sections,needles", [
    ("mocker-ctx1-gen1.yaml", {"infra": {"discovery": "consul"}}, ("infra.discovery", "consul")),
    ("mocker-ctx1-gen1.yaml", {"infra": {"planes": "nats"}}, ("infra.planes",)),
    ("mocker-ctx1-gen1.yaml", {"frontend": {"count": 3}}, ("frontend", "nginx: true")),
    ("mocker-ctx1-gen1.yaml", {"frontend": {"count": 0, "nginx": True}}, ("frontend.count",)),
    ("gb200-glm-4.7-nvfp4_1k1k_sglang_4p2d.yaml", {"infra": {"discovery": "etcd"}}, ("infra", "backend sglang")),
    ("gb200-glm-4.7-nvfp4_1k1k_sglang_4p2d.yaml", {"frontend": {"count": 2, "nginx": True}},
     ("frontend", "backend sglang")),
])
def test_bad_sections_are_one_line_errors(h, tmp_path, base, sections, needles):
    config = _write(tmp_path, base, **sections)
    out = tmp_path / "out"
    res = h.run_submit(["--config", config, "--out", out, "--dry-run"])
    h.assert_one_line_error(res, str(config), *needles)
    h.assert_nothing_written(out)


# ------------------------------------------------------------------------------------ nginx.conf

UPSTREAMS = [Address("DISAGG_SERVER", "10.0.0.1", 41001), Address("DISAGG_SERVER", "10.0.0.1", 41002)]


def test_nginx_conf_golden():
    text = services.render_nginx_conf("10.0.0.1:40000", [str(a) for a in UPSTREAMS], Path("/jobs/unit/nginx"))
    golden = GOLDEN / "nginx.conf"
    if UPDATE:
        golden.write_text(text)
    assert text == golden.read_text(), "nginx.conf changed; PERFSANITY_UPDATE_GOLDEN=1 rewrites the golden file"
    # unprivileged: nothing outside the job dir, no user switch, no fixed system paths
    directives = [ln.split()[0] for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert "user" not in directives and "/var/" not in text and "/run/" not in text
    for directive in services.NGINX_TEMP_DIRS:
        assert f"{directive}_temp_path /jobs/unit/nginx/tmp/" in text


def _nginx() -> str:
    path = shutil.which("nginx") or (Path("/usr/sbin/nginx").is_file() and "/usr/sbin/nginx") or None
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true: nginx is not installed (apt package nginx, see .ci/run)", pytrace=False)
        pytest.skip("nginx is not installed (apt-get install nginx)")
    return str(path)


def _nginx_t(root: Path, edit=lambda text: text) -> tuple[subprocess.CompletedProcess, Path, int]:
    """``nginx -t`` of the generated conf (after ``edit``), with the socket nginx would adopt."""
    nginx = _nginx()
    listen = services.NginxSocket("127.0.0.1")
    try:
        conf = services.prepare_nginx(root, listen, UPSTREAMS)
        conf.write_text(edit(conf.read_text()))
        argv = [nginx, *services.nginx_argv(root, conf, test=True)[1:]]
        proc = subprocess.run(argv, env={**os.environ, **listen.env}, pass_fds=(listen.sock.fileno(),),
                              capture_output=True, text=True, timeout=30, check=False)
    finally:
        listen.close()
    return proc, conf, listen.port


def test_nginx_accepts_the_generated_conf_with_the_adopted_socket(tmp_path):
    root = tmp_path / "nginx"
    proc, conf, port = _nginx_t(root)
    assert proc.returncode == 0 and "test is successful" in proc.stderr, proc.stderr
    assert f"listen 127.0.0.1:{port} " in conf.read_text()
    assert all((root / "tmp" / d).is_dir() for d in services.NGINX_TEMP_DIRS.values())


def test_nginx_rejects_a_broken_conf(tmp_path):
    # the check above can fail: nginx -t refuses a conf with a bad directive
    proc, _, _ = _nginx_t(tmp_path / "nginx", lambda text: text.replace("keepalive 64;", "keepalive sixty-four;"))
    assert proc.returncode != 0 and "keepalive" in proc.stderr, proc.stderr
