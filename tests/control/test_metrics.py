"""The Prometheus endpoint of a running App, scraped over HTTP on loopback."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from edged.config.settings import MetricsSettings
from edged.daemon.app import App
from edged.demo.broker import free_port
from edged.errors import EX_CONFIG
from tests.control.conftest import photos_config, start_app, wait_until_serving
from tests.helpers.broker import RunningBroker, matching
from tests.helpers.commands import CommandClient
from tests.helpers.daemon import base_config, write_config

pytestmark = pytest.mark.broker

DETECTIONS = "edged/testdev/door/detections"


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of http://127.0.0.1:<port>/metrics, by (name, sorted labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
def metrics_app(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker: RunningBroker
) -> Iterator[tuple[App, int]]:
    """An App on the photos with metrics on a free loopback port."""
    port = free_port()
    cfg: dict[str, Any] = photos_config(tmp_path, models_dir, media_dir, broker)
    cfg["metrics"] = {"enabled": True, "port": port}
    app, stop = start_app(cfg, tmp_path / "edged.toml")
    try:
        yield app, port
    finally:
        stop()


def test_metrics_have_plausible_values(metrics_app: tuple[App, int], broker: RunningBroker) -> None:
    """After a few results: counters count, rates and latencies are in range, all is up."""
    _, port = metrics_app
    sub = broker.subscriber(DETECTIONS)
    deadline = time.monotonic() + 15
    while len(sub.messages()) < 6:  # a few results, so rates and percentiles exist
        assert time.monotonic() < deadline, "no results"
        time.sleep(0.05)
    m = scrape(port)
    door = (("pipeline", "door"),)
    assert m[("edged_pipeline_processed_total", door)] >= 6
    assert m[("edged_pipeline_published_total", door)] >= 6
    assert m[("edged_pipeline_dropped_total", door)] >= 0
    assert m[("edged_pipeline_skipped_total", door)] == 0
    assert m[("edged_pipeline_errors_total", door)] == 0
    assert m[("edged_pipeline_enabled", door)] == 1
    assert 0 < m[("edged_pipeline_fps", door)] <= 12  # capped at 10 per second
    p50 = m[("edged_pipeline_inference_seconds", (("pipeline", "door"), ("quantile", "0.5")))]
    p95 = m[("edged_pipeline_inference_seconds", (("pipeline", "door"), ("quantile", "0.95")))]
    assert 0 < p50 <= p95 < 2.0
    assert m[("edged_source_up", (("kind", "images"), ("source", "cam0")))] == 1
    assert 0 < m[("edged_source_fps", (("source", "cam0"),))] <= 12
    assert m[("edged_mqtt_connected", ())] == 1
    assert m[("edged_mqtt_disconnects_total", ())] == 0
    assert m[("edged_mqtt_unpublishable_total", ())] == 0
    assert m[("edged_mqtt_takeovers_total", ())] == 0
    assert m[("edged_outbox_depth", ())] >= 0
    assert m[("edged_outbox_evicted_total", (("reason", "size"),))] == 0
    assert m[("edged_outbox_degraded", ())] == 0
    assert m[("edged_outbox_passed_total", ())] == 0
    assert m[("edged_uptime_seconds", ())] > 0
    assert ("edged_commands_total", (("outcome", "busy"),)) in m
    assert any(name == "edged_info" and dict(labels)["device"] == "testdev" for name, labels in m)


def test_metrics_follow_a_disable_command(metrics_app: tuple[App, int]) -> None:
    """A disabled pipeline reads edged_pipeline_enabled 0 at the next scrape."""
    app, port = metrics_app
    app.control.controller.set_enabled("door", enabled=False)
    assert scrape(port)[("edged_pipeline_enabled", (("pipeline", "door"),))] == 0


def test_metrics_listen_on_loopback_by_default(metrics_app: tuple[App, int]) -> None:
    """The default host is 127.0.0.1, and the endpoint is bound to it."""
    app, port = metrics_app
    assert MetricsSettings().host == "127.0.0.1"
    assert app.control.metrics is not None
    assert app.control.metrics.address == ("127.0.0.1", port)


def test_a_port_in_use_leaves_the_daemon_running_without_metrics(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker: RunningBroker
) -> None:
    """Metrics that cannot bind are logged as an error; the App runs on and publishes."""
    port = free_port()
    configs = []
    for device in ("testdev", "other"):  # two daemons, one metrics port
        cfg = photos_config(tmp_path / device, models_dir, media_dir, broker)
        cfg.update(device_id=device, metrics={"enabled": True, "port": port})
        configs.append(cfg)
    sub = broker.subscriber("edged/other/door/detections")
    _, stop_first = start_app(configs[0], tmp_path / "first.toml")
    try:
        with capture_logs() as logs:
            second, stop_second = start_app(configs[1], tmp_path / "second.toml")
        try:
            assert second.control.metrics is not None
            assert second.control.metrics.address is None
            assert any(e["event"] == "metrics.unavailable" for e in logs)
            sub.wait_for(matching("edged/other/door/detections"), timeout=10)
        finally:
            stop_second()
    finally:
        stop_first()


def test_the_daemon_does_not_import_prometheus_client_when_metrics_are_off() -> None:
    """prometheus-client is imported only when metrics are enabled (it is an optional extra)."""
    code = (
        "import sys, edged.daemon.app, edged.control\n"
        "assert 'prometheus_client' not in sys.modules, 'imported eagerly'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def test_check_refuses_metrics_without_prometheus_client(tmp_path: Path, models_dir: Path) -> None:
    """`edged check` with metrics on and prometheus-client missing: exit 78, naming the key."""
    config = write_config(
        tmp_path / "edged.toml",
        {**base_config(tmp_path, models_dir, None), "metrics": {"enabled": True}},
    )
    code = (
        "import sys\n"
        "sys.modules['prometheus_client'] = None  # as if the extra were not installed\n"
        "from edged.__main__ import main\n"
        f"sys.exit(main(['check', '--offline', '--config', {str(config)!r}]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == EX_CONFIG, result.stderr
    assert "metrics.enabled: prometheus-client is not installed" in result.stderr


def test_commands_refused_by_the_allow_list_are_counted(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker: RunningBroker
) -> None:
    """allow = ["ping"]: two reloads show as edged_commands_total{outcome="not_allowed"} 2."""
    port = free_port()
    cfg: dict[str, Any] = photos_config(tmp_path, models_dir, media_dir, broker)
    cfg["metrics"] = {"enabled": True, "port": port}
    cfg["commands"] = {"allow": ["ping"]}
    _, stop = start_app(cfg, tmp_path / "edged.toml")
    try:
        with CommandClient(broker.host, broker.port) as client:
            wait_until_serving(client)
            for _ in range(2):
                assert client.request("reload")["ok"] is False
        m = scrape(port)
    finally:
        stop()
    assert m[("edged_commands_total", (("outcome", "not_allowed"),))] == 2
    assert m[("edged_commands_total", (("outcome", "error"),))] == 0
