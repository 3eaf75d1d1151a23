"""End to end: the role converges into a fresh Debian root, which boots and runs edged.

One root for the module, in this order: debootstrap (or the cached root),
the wheelhouse, two converges through the chroot connection, boot with
systemd-nspawn. The tests then look at the booted system. Tests that change
the service (drop-ins) put it back as they found it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import secrets
import shutil
import stat
import subprocess
import time
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edged.catalog.catalog import load_catalog
from edged.demo.broker import LocalBroker, free_port
from edged.errors import EX_CONFIG
from tests.deploy.conftest import require_deploy_tools
from tests.deploy.machine import (
    REPORT,
    Container,
    PlaybookRun,
    ansible_playbook,
    build_wheelhouse,
    make_root,
    timed,
    unmount_below,
    write_inventory,
)
from tests.deploy.mqtt import accepts, publish_acknowledged
from tests.helpers.broker import RunningBroker, Subscriber, make_tls_material, matching
from tests.test_systemd_unit import MAX_EXPOSURE, UNIT

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(1500)]

HOST = "deploy-root"
DEVICE = "deploy-test"
MODEL = "ssd-mobilenet-v1-coco-int8"
CLIP = "/srv/edged/clip.mp4"
USER = "edged"
AVAIL = f"edged/{DEVICE}/availability"
DETECTIONS = f"edged/{DEVICE}/door/detections"
DROPIN = "etc/systemd/system/edged.service.d/90-deploy-test.conf"
# The role's optional broker, installed into the root beside the daemon (which
# keeps publishing to the host's TLS broker).
BROKER_USER = "dashboard"
BROKER_PASSWORD = secrets.token_urlsafe(18)


@dataclass
class Deployment:
    """The converged, booted root and what talks to it."""

    work: Path
    root: Path
    hostvars: dict[str, Any]
    password: str
    broker: RunningBroker
    subscriber: Subscriber
    converges: list[PlaybookRun]
    container: Container
    boot_state: str

    def group_id(self, name: str) -> int:
        for line in (self.root / "etc" / "group").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == name:
                return int(fields[2])
        raise AssertionError(f"no group {name} in the root")

    def user_id(self, name: str) -> int:
        for line in (self.root / "etc" / "passwd").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == name:
                return int(fields[2])
        raise AssertionError(f"no user {name} in the root")

    def set_dropin(self, text: str | None) -> None:
        """Install (or remove, for None) the test's drop-in for edged.service."""
        path = self.root / DROPIN
        if text is None:
            path.unlink(missing_ok=True)
        else:
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
        self.container.run(["systemctl", "daemon-reload"])
        self.container.run(["systemctl", "reset-failed", "edged.service"], check=False)

    def restart(self) -> subprocess.CompletedProcess[str]:
        return self.container.run(["systemctl", "restart", "edged.service"], check=False)

    def restore(self) -> None:
        """Back to the role's configuration: no drop-in, service started and ready."""
        self.set_dropin(None)
        result = self.restart()
        assert result.returncode == 0, result.stderr + self.journal_tail()

    def state(self) -> dict[str, str]:
        return self.container.show(
            "edged.service",
            "ActiveState",
            "SubState",
            "Result",
            "NRestarts",
            "ExecMainStatus",
            "StatusText",
            "MainPID",
        )

    def journal_tail(self, lines: int = 40) -> str:
        out = self.container.run(
            ["journalctl", "-u", "edged.service", "-n", str(lines), "-o", "cat", "--no-pager"],
            check=False,
        )
        return "\n" + out.stdout


def _hostvars(work: Path, model_mirror: Path, broker: RunningBroker) -> dict[str, Any]:
    assert broker.ca_file is not None
    return {
        "ansible_python_interpreter": "/usr/bin/python3",
        "ansible_become": False,
        "edged_device_id": DEVICE,
        "edged_wheelhouse_dir": str(work / "wheelhouse"),
        "edged_models_src_dir": str(model_mirror),
        "edged_models": [MODEL],
        "edged_mqtt_host": "127.0.0.1",
        "edged_mqtt_port": broker.port,
        "edged_mqtt_ca_cert": broker.ca_file.read_text(),
        "edged_mqtt_username": USER,
        "edged_mqtt_password": broker.password,
        "edged_mqtt_homeassistant": False,
        "edged_stats_interval_s": 5,
        # A device-class drop-in, as group_vars would give one.
        "edged_service_overrides": {"MemoryMax": "768M", "Environment": ["EDGED_LOG_LEVEL=info"]},
        "edged_sources": [{"name": "cam0", "kind": "file", "uri": CLIP, "loop": True, "fps": 10}],
        "edged_broker_install": True,
        "edged_broker_listener_address": "127.0.0.1",  # loopback: plain MQTT is allowed
        "edged_broker_listener_port": free_port(),  # the root shares the host's network
        "edged_broker_users": [{"username": BROKER_USER, "password": BROKER_PASSWORD}],
        "edged_pipelines": [
            {
                "name": "door",
                "source": "cam0",
                "task": "detection",
                "model": MODEL,
                "threshold": 0.5,
                "publish": "all",
                "max_fps": 2,
                "threads": 1,
            }
        ],
    }


def _timed_wheelhouse(work: Path) -> None:
    with timed("2 wheelhouse (build edged, dependency wheels; beside step 1)"):
        build_wheelhouse(work / "wheelhouse", work / "build")


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, model_mirror: Path, media_dir: Path
) -> Iterator[Deployment]:
    """Root → wheelhouse → broker → converge twice (chroot) → boot. Cleans up on any failure."""
    require_deploy_tools()
    work = tmp_path_factory.mktemp("deploy")
    root = work / "root"
    with contextlib.ExitStack() as cleanup:
        # Callbacks run last-registered first: container, broker, mounts, files.
        for scratch in (root, work / "wheelhouse", work / "build"):  # logs stay for a post-mortem
            cleanup.callback(shutil.rmtree, scratch, ignore_errors=True)
        cleanup.callback(unmount_below, root)
        # The wheelhouse is built while the root is made: both mostly wait.
        with ThreadPoolExecutor(max_workers=1) as pool:
            wheels = pool.submit(_timed_wheelhouse, work)
            with timed("1 root (debootstrap or cache)"):
                REPORT["root made from"] = make_root(root)
            wheels.result()
        clip = root / CLIP.lstrip("/")
        clip.parent.mkdir(parents=True)
        shutil.copy(media_dir / "person_walking_0-30s.mp4", clip)
        clip.chmod(0o644)

        (work / "tls").mkdir()
        tls = make_tls_material(work / "tls")
        password = secrets.token_urlsafe(18)
        broker = LocalBroker(
            users={USER: password},
            tls_cert=tls.cert,
            tls_key=tls.key,
            tls_ca=tls.ca,
            workdir=work / "broker",
        )
        running = RunningBroker(broker, username=USER, password=password, ca_file=tls.ca)
        cleanup.callback(running.close)
        broker.start()
        subscriber = running.subscriber(f"edged/{DEVICE}/#")

        hostvars = _hostvars(work, model_mirror, running)
        chroot = {"ansible_connection": "community.general.chroot", "ansible_host": str(root)}
        inventory = write_inventory(work / "inventory-chroot.json", HOST, {**chroot, **hostvars})
        converges = []
        for n in (1, 2):
            with timed(f"3 converge #{n} (chroot)"):
                converges.append(ansible_playbook(inventory, work / f"converge-{n}.log"))
            assert converges[-1].returncode == 0, converges[-1].tail()

        container = Container(root, work / "console.log")
        cleanup.callback(container.shutdown)
        with timed("4 boot (until start-up finished)"):
            boot_state = container.boot()
        REPORT["system state after boot"] = boot_state
        yield Deployment(
            work,
            root,
            hostvars,
            password,
            running,
            subscriber,
            converges,
            container,
            boot_state,
        )


# --- Ansible ------------------------------------------------------------------------


def test_role_converges_and_a_second_run_changes_nothing(deployment: Deployment) -> None:
    """The first run into the fresh root changes it; the second reports changed=0."""
    first, second = deployment.converges
    assert first.recap["failed"] == 0
    assert first.recap["changed"] > 0, first.tail()
    assert second.recap["failed"] == 0
    assert second.recap["changed"] == 0, second.tail()
    assert "systemd is not running on the target" in first.log  # a chroot: start is left to boot


def test_role_installed_the_project_unit_config_models_and_secrets(
    deployment: Deployment,
) -> None:
    """The unit is systemd/edged.service byte for byte; secrets are root-only; models verified."""
    root = deployment.root
    assert (root / "etc/systemd/system/edged.service").read_bytes() == UNIT.read_bytes()
    assert (root / "etc/systemd/system/multi-user.target.wants/edged.service").is_symlink()

    for name in ("mqtt_password", "offload_token"):
        st = (root / "etc/edged/credentials" / name).stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, 0, 0), name
    assert (root / "etc/edged/credentials/mqtt_password").read_text() == deployment.password

    config = root / "etc/edged/edged.toml"
    st = config.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o640, 0)
    assert st.st_gid == deployment.group_id("edged")
    text = config.read_text()
    assert deployment.password not in text
    mqtt = tomllib.loads(text)["mqtt"]
    assert mqtt["tls"] is True
    assert mqtt["username"] == USER
    assert "password_file" not in mqtt  # the password comes from LoadCredential only

    for artifact in load_catalog().get(MODEL).artifacts():
        installed = root / "var/lib/edged/models" / artifact.name
        assert hashlib.sha256(installed.read_bytes()).hexdigest() == artifact.sha256


def test_unit_verifies_cleanly_inside_the_root(deployment: Deployment) -> None:
    """`systemd-analyze verify` prints nothing for the unit and its drop-in, where ExecStart exists."""
    c = deployment.container
    result = c.run(["systemd-analyze", "verify", "edged.service"], check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (result.stdout + result.stderr).strip() == ""
    props = c.show("edged.service", "DropInPaths", "MemoryMax", "Environment")
    assert props["DropInPaths"].endswith("/edged.service.d/50-ansible.conf"), props
    assert props["MemoryMax"] == str(768 * 2**20)
    assert "EDGED_LOG_LEVEL=info" in props["Environment"]


def test_role_verifies_the_running_service_in_the_booted_root(deployment: Deployment) -> None:
    """Run once more, into the booted root: nothing changes, and the verify step sees it run."""
    nsenter = {
        "ansible_connection": "community.docker.nsenter",
        "ansible_nsenter_pid": deployment.container.init_pid,
    }
    inventory = write_inventory(
        deployment.work / "inventory-booted.json", HOST, {**nsenter, **deployment.hostvars}
    )
    with timed("5 converge #3 (nsenter, booted root)"):
        run = ansible_playbook(inventory, deployment.work / "converge-3.log")
    assert run.returncode == 0, run.tail()
    assert run.recap["failed"] == 0
    assert run.recap["changed"] == 0, run.tail()
    verified = re.search(r"Check that edged is active and running\].*?\n(.*?)\n\n", run.log, re.S)
    assert verified, run.tail()
    assert "ActiveState=active" in verified.group(1), verified.group(1)
    assert "SubState=running" in verified.group(1)


# --- systemd ------------------------------------------------------------------------


def test_service_is_active_only_after_ready(deployment: Deployment) -> None:
    """Type=notify: "activating" while models load, "active (running)" once READY=1 came."""
    c = deployment.container
    assert deployment.state()["ActiveState"] == "active"  # started at boot
    c.run(["systemctl", "restart", "--no-block", "edged.service"])
    seen: list[tuple[str, str]] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        s = c.show("edged.service", "ActiveState", "SubState")
        if not seen or seen[-1] != (s["ActiveState"], s["SubState"]):
            seen.append((s["ActiveState"], s["SubState"]))
        if seen[-1] == ("active", "running") and ("activating", "start") in seen:
            break
        time.sleep(0.05)
    assert ("activating", "start") in seen, seen
    assert seen[-1] == ("active", "running"), seen
    assert seen.index(("activating", "start")) < len(seen) - 1

    props = c.show(
        "edged.service",
        "StatusText",
        "ExecMainStartTimestampMonotonic",
        "ActiveEnterTimestampMonotonic",
    )
    assert props["StatusText"] == "1 pipelines running"  # only sent with READY=1
    start_us = int(props["ExecMainStartTimestampMonotonic"])
    active_us = int(props["ActiveEnterTimestampMonotonic"])
    REPORT["exec to READY (daemon start-up in the root)"] = f"{(active_us - start_us) / 1e6:6.2f} s"
    # This start's journal: the daemon logged its sources starting (just
    # before READY=1) before systemd logged "Started" and made it active.
    entries = [
        (int(e["__MONOTONIC_TIMESTAMP"]), str(e.get("MESSAGE", "")))
        for e in c.journal("edged.service")
        if int(e["__MONOTONIC_TIMESTAMP"]) >= start_us
    ]
    sources_started = [t for t, m in entries if '"source.starting"' in m]
    started = [t for t, m in entries if m.startswith("Started edged.service")]
    assert sources_started, entries[-10:]
    assert started, entries[-10:]
    assert sources_started[0] < started[0]
    assert sources_started[0] < active_us


def test_daemon_publishes_over_tls_with_the_credential(deployment: Deployment) -> None:
    """A subscriber on the host sees 'online' and person detections, over TLS with a password."""
    sub = deployment.subscriber
    sub.wait_for(matching(AVAIL, b"online"), timeout=30)

    def person(message: Any) -> bool:
        if message.topic != DETECTIONS:
            return False
        result = json.loads(message.payload)
        return any(d["label"] == "person" for d in result["detections"])

    found = json.loads(sub.wait_for(person, timeout=60).payload)
    assert found["v"] == 1
    assert found["device"] == DEVICE
    assert found["source"] == "cam0"
    assert found["model"]["name"] == MODEL
    assert found["model"]["sha256"] == load_catalog().get(MODEL).file.sha256
    # The broker only lets the daemon in with the password, which reached it
    # as a credential; it never shows up in the journal.
    log = deployment.container.run(["journalctl", "-u", "edged.service", "-o", "cat"]).stdout
    assert deployment.password not in log
    assert '"tls": true' in log


def test_reload_rereads_the_configuration_in_the_same_process(deployment: Deployment) -> None:
    """`systemctl reload` (ExecReload sends SIGHUP) reloads the daemon without a restart."""
    c = deployment.container

    def reloads() -> int:
        log = c.run(["journalctl", "-u", "edged.service", "-o", "cat"]).stdout
        return log.count('"event": "app.reloaded"')

    before, count = deployment.state(), reloads()
    c.run(["systemctl", "reload", "edged.service"])
    c.wait_for("the daemon to log 'reloaded'", lambda: reloads() > count, timeout=60)
    after = deployment.state()
    assert after["MainPID"] == before["MainPID"]
    assert (after["ActiveState"], after["SubState"]) == ("active", "running")


def test_journal_stores_each_line_at_its_level(deployment: Deployment) -> None:
    """journald reads edged's <N> prefixes: every JSON line's PRIORITY matches its level."""
    want = {"debug": "7", "info": "6", "warning": "4", "error": "3", "critical": "2"}
    entries = deployment.container.journal("edged.service")
    lines = [
        e for e in entries if isinstance(e.get("MESSAGE"), str) and e["MESSAGE"].startswith("{")
    ]
    assert lines
    for e in lines:
        assert e["PRIORITY"] == want[json.loads(e["MESSAGE"])["level"]], e["MESSAGE"]
    # The prefix is read by journald, never stored as part of the message.
    assert not [e for e in entries if str(e.get("MESSAGE", "")).startswith("<")]


def test_sandbox_holds(deployment: Deployment) -> None:
    """No capabilities, read-only system, hidden secrets; only /var/lib/edged is writable."""
    c = deployment.container
    pid = deployment.state()["MainPID"]
    status = dict(
        line.split(":", 1)
        for line in c.run(["cat", f"/proc/{pid}/status"]).stdout.splitlines()
        if ":" in line
    )
    assert int(status["CapEff"].strip(), 16) == 0
    assert int(status["CapBnd"].strip(), 16) == 0
    assert status["NoNewPrivs"].strip() == "1"
    assert status["Seccomp"].strip() == "2"  # a system call filter is loaded
    assert status["Uid"].split()[0] == str(deployment.user_id("edged"))
    groups = {int(g) for g in status["Groups"].split()}
    assert {deployment.group_id("video"), deployment.group_id("audio")} <= groups

    def in_service_mounts(*cmd: str) -> Any:
        # Root of the container, inside the service's mount namespace: a
        # failure to write is the mount table's doing, not file permissions.
        return c.run(["nsenter", "-t", pid, "-m", *cmd], check=False)

    for path in (
        "/etc/edged/probe",
        "/opt/edged/venv/probe",
        "/usr/local/probe",
        "/srv/edged/probe",
        "/var/log/probe",
        "/root/probe",
    ):
        result = in_service_mounts("touch", path)
        assert result.returncode != 0, f"{path} is writable in the sandbox"
        assert "Read-only file system" in result.stderr, result.stderr
    ok = in_service_mounts("sh", "-c", "touch /var/lib/edged/probe && rm /var/lib/edged/probe")
    assert ok.returncode == 0, ok.stderr
    hidden = in_service_mounts("ls", "-A", "/etc/edged/credentials")
    assert hidden.stdout.strip() == "", "the credential files are visible to the service"


def test_security_exposure_inside_the_root(deployment: Deployment) -> None:
    """`systemd-analyze security` of the installed unit, with systemd running, is at most the threshold."""
    out = deployment.container.run(
        ["systemd-analyze", "security", "--no-pager", "edged.service"]
    ).stdout
    found = re.search(r"Overall exposure level for edged\.service: (\d+\.\d+) (\w+)", out)
    assert found, out
    REPORT["exposure (systemd-analyze security, in the root)"] = f"{found[1]} {found[2]}"
    assert float(found[1]) <= MAX_EXPOSURE, out


def test_watchdog_restarts_a_stalled_pipeline(deployment: Deployment) -> None:
    """With a 3 s watchdog a progressing daemon keeps running; a stalled pipeline gets restarted."""
    d = deployment
    try:
        d.set_dropin("[Service]\nWatchdogSec=3\nRestartSec=1\n")
        assert d.restart().returncode == 0, d.journal_tail()
        time.sleep(8)
        state = d.state()
        assert (state["ActiveState"], state["NRestarts"]) == ("active", "0"), d.journal_tail()

        # One frame every 5 s and a 1 s stall limit: after each frame the
        # pipeline stalls, the pings stop, and systemd's watchdog fires.
        sources = json.dumps(
            [{"name": "cam0", "kind": "file", "uri": CLIP, "loop": True, "fps": 0.2}]
        )
        d.set_dropin(
            "[Service]\nWatchdogSec=3\nRestartSec=1\n"
            "Environment=EDGED_WATCHDOG_STALL_S=1\n"
            f"Environment='EDGED_SOURCES={sources}'\n"
        )
        with timed("6 stalled pipeline until systemd restarted it"):
            d.restart()
            d.container.wait_for(
                "NRestarts >= 1", lambda: int(d.state()["NRestarts"]) >= 1, timeout=60
            )
        log = d.container.run(["journalctl", "-u", "edged.service", "-o", "cat"]).stdout
        assert "Watchdog timeout" in log, d.journal_tail()
    finally:
        d.restore()


def test_bad_config_fails_once_without_a_restart_loop(deployment: Deployment) -> None:
    """An invalid configuration exits 78 and the unit stays failed: no restarts."""
    d = deployment
    try:
        d.set_dropin("[Service]\nEnvironment=EDGED_MQTT__PORT=0\n")
        result = d.restart()
        assert result.returncode != 0
        time.sleep(8)  # longer than RestartSec=5: a restart would have happened
        state = d.state()
        assert state["ActiveState"] == "failed", state
        assert state["Result"] == "exit-code", state
        assert state["ExecMainStatus"] == str(EX_CONFIG), state
        assert state["NRestarts"] == "0", state
        assert "mqtt.port" in d.journal_tail(), d.journal_tail()
    finally:
        d.restore()


def test_a_crash_loop_stops_after_start_limit_burst_starts(deployment: Deployment) -> None:
    """A daemon that always exits 1 is started StartLimitBurst times, then stays failed.

    Before the start limit (StartLimitIntervalSec=0) it was restarted every
    RestartSec for ever. Exit 78 is never restarted at all:
    test_bad_config_fails_once_without_a_restart_loop.
    """
    d = deployment
    burst = int(d.container.show("edged.service", "StartLimitBurst")["StartLimitBurst"])

    # Each start of the crashing command logs this token: the count of
    # starts cannot include the previous test's starts of the real daemon.
    token = f"crash-loop-{secrets.token_hex(4)}"

    def journal() -> str:
        return d.container.run(
            ["journalctl", "-u", "edged.service", "-o", "cat", "--no-pager"]
        ).stdout

    try:
        d.set_dropin(f"[Service]\nExecStart=\nExecStart=/bin/sh -c 'echo {token}; exit 1'\n")
        t0 = time.monotonic()
        assert d.restart().returncode != 0

        def gave_up() -> bool:
            log = journal()
            return token in log and "Start request repeated too quickly." in log.split(token, 1)[1]

        with timed("7 crash loop until systemd gave up"):
            # systemd 252 keeps Result=exit-code of the last run and says why in the journal.
            d.container.wait_for(
                "Start request repeated too quickly", gave_up, timeout=burst * 10 + 30
            )
        REPORT["crash loop: exit 1 until systemd gave up"] = f"{time.monotonic() - t0:6.1f} s"
        state = d.state()
        assert state["ActiveState"] == "failed", state
        time.sleep(7)  # longer than RestartSec=5: no start follows
        assert d.state() == state
        log = journal()
        starts = sum(line == token for line in log.splitlines())
        REPORT["crash loop: starts before giving up"] = (
            f"{starts} (StartLimitBurst={burst}, NRestarts={state['NRestarts']})"
        )
        assert starts == burst, log[-3000:]
    finally:
        d.restore()


def test_restart_backoff_dropin_only_where_systemd_understands_it(deployment: Deployment) -> None:
    """Debian 12's systemd (252) gets no RestartSteps= drop-in; 254 or later would."""
    out = deployment.container.run(["systemctl", "--version"]).stdout
    version = int(out.split()[1])
    REPORT["systemd in the root"] = out.splitlines()[0]
    dropin = deployment.root / "etc/systemd/system/edged.service.d/40-restart-backoff.conf"
    assert dropin.exists() == (version >= 254)
    if version >= 254:
        props = deployment.container.show("edged.service", "RestartSteps", "RestartMaxDelayUSec")
        assert props["RestartSteps"] == "4", props


def test_role_broker_keeps_queued_messages_across_its_restart(deployment: Deployment) -> None:
    """The role's mosquitto runs with persistence: a queue survives `systemctl restart mosquitto`."""
    c, root = deployment.container, deployment.root
    state = c.show("mosquitto.service", "ActiveState", "SubState", "NRestarts")
    assert (state["ActiveState"], state["SubState"]) == ("active", "running"), state
    assert "persistence true" in (root / "etc/mosquitto/conf.d/edged.conf").read_text()
    passwd = root / "etc/mosquitto/edged.passwd"
    st = passwd.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o640, 0)
    assert st.st_gid == deployment.group_id("mosquitto")
    assert passwd.read_text().startswith(f"{BROKER_USER}:$7$")  # hashed, not the password
    assert BROKER_PASSWORD not in passwd.read_text()

    port = int(deployment.hostvars["edged_broker_listener_port"])
    topic = f"edged/{DEVICE}/door/detections"
    payloads = [f"result {i}".encode() for i in range(200)]
    auth: dict[str, Any] = {"username": BROKER_USER, "password": BROKER_PASSWORD}
    Subscriber("127.0.0.1", port, topic, client_id="dashboard-1", **auth).start().close()
    publish_acknowledged(port, topic, payloads, BROKER_USER, BROKER_PASSWORD)
    c.run(["systemctl", "restart", "mosquitto.service"])
    c.wait_for("mosquitto to accept connections", lambda: accepts(port), timeout=30)
    with Subscriber("127.0.0.1", port, topic, client_id="dashboard-1", **auth) as sub:
        c.wait_for("every queued message", lambda: len(sub.messages()) >= len(payloads), timeout=15)
        assert {m.payload for m in sub.messages()} == set(payloads)
