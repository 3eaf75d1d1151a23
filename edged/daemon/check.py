"""Pre-flight checks shared by ``edged check`` and ``edged run``.

``check`` and ``run`` must refuse the same configurations, so both call
:func:`preflight`. It collects every problem (key path, message) instead of
stopping at the first: an operator fixing a device over a slow link wants the
whole list at once.
"""

from __future__ import annotations

import glob
import importlib.util
import ipaddress
import os
import socket
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from edged.catalog.catalog import Catalog
from edged.catalog.labels import unknown_label
from edged.catalog.resolve import ResolvedModel, resolve
from edged.config.settings import PipelineSettings, Settings, read_secret
from edged.errors import EdgedError
from edged.infer.accel import AcceleratorError, cache_dir
from edged.infer.base import Model
from edged.infer.registry import load_model
from edged.publish.mqtt import use_tls
from edged.tasks import build_task

Problem = tuple[str, str]

#: How long `edged check` waits for the broker: TCP connect, TLS, and CONNACK each.
_PROBE_S = 3.0


@dataclass
class Preflight:
    """What the checks found, plus the models they loaded (reused by ``run``)."""

    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    models: dict[str, tuple[ResolvedModel, Model]] = field(default_factory=dict)
    #: Person detectors of pose pipelines (``detector``), by pipeline name.
    detectors: dict[str, tuple[ResolvedModel, Model]] = field(default_factory=dict)

    def close(self) -> None:
        for _, model in [*self.models.values(), *self.detectors.values()]:
            model.close()
        self.models.clear()
        self.detectors.clear()


def _check_labels(key: str, p: PipelineSettings, resolved: ResolvedModel, out: Preflight) -> None:
    # A name the model never reports filters out every result, silently
    # ("Person" for COCO's "person"); an audio one stopped `run` with exit 1.
    if p.labels and p.task == "pose":
        out.warnings.append(
            (f"{key}.labels", "has no effect: pose results carry keypoints, not labels")
        )
        return
    see = (
        f"; `edged models labels {resolved.name}` lists them" if resolved.entry is not None else ""
    )
    for j, name in enumerate(p.labels):
        problem = unknown_label(name, resolved.labels, p.task)
        if problem is not None:
            out.problems.append((f"{key}.labels[{j}]", problem + see))
    # Sound-event groups name labels the same way (a typo never fires).
    for group, names in p.sound_events.groups.items():
        for j, name in enumerate(names):
            problem = unknown_label(name, resolved.labels, p.task)
            if problem is not None:
                out.problems.append((f"{key}.sound_events.groups.{group}[{j}]", problem + see))


def _check_pipeline(
    index: int, p: PipelineSettings, settings: Settings, catalog: Catalog, out: Preflight
) -> None:
    key = f"pipelines[{index}]"
    try:
        resolved = resolve(p, settings, catalog)
    except EdgedError as exc:
        out.problems.append((f"{key}.model", str(exc)))
        return
    _check_labels(key, p, resolved, out)
    try:
        model = load_model(
            resolved.path,
            runtime=resolved.runtime,
            threads=p.threads,
            accelerator=p.accelerator,
            cache_dir=cache_dir(settings.models.dir),
        )
    except AcceleratorError as exc:  # absent or failing: the key to change, and what is here
        out.problems.append((f"{key}.accelerator", str(exc)))
        return
    except EdgedError as exc:
        out.problems.append((f"{key}.model", str(exc)))
        return
    if not _fits(f"{key}.model", p, resolved, model, out):
        return
    out.models[p.name] = (resolved, model)
    if p.detector:
        _check_detector(key, p, settings, catalog, out)


def _check_detector(
    key: str, p: PipelineSettings, settings: Settings, catalog: Catalog, out: Preflight
) -> None:
    """Resolve, load and verify a pose pipeline's person detector like a main model."""
    # The detector is resolved as the model of a detection pipeline, so a
    # catalog entry of another task is refused by name ("is a pose model…").
    as_detection = p.model_copy(
        update={"model": p.detector, "task": "detection", "decoder": "", "label_file": None}
    )
    try:
        resolved = resolve(as_detection, settings, catalog)
        if resolved.labels and "person" not in resolved.labels:
            out.problems.append(
                (f"{key}.detector", f"model {p.detector!r} has no 'person' label to detect people")
            )
            return
        model = load_model(resolved.path, runtime=resolved.runtime, threads=p.threads)
    except EdgedError as exc:
        out.problems.append((f"{key}.detector", str(exc)))
        return
    if not _fits(f"{key}.detector", as_detection, resolved, model, out):
        return
    out.detectors[p.name] = (resolved, model)


def _fits(
    key: str, p: PipelineSettings, resolved: ResolvedModel, model: Model, out: Preflight
) -> bool:
    """Whether ``p``'s task builds on ``model`` (shapes, dtypes, decoder); if not, the model
    is closed and the problem recorded at ``key``."""
    try:
        build_task(p, resolved, model)
    except EdgedError as exc:
        model.close()
        out.problems.append((key, str(exc)))
        return False
    return True


def _check_sources(settings: Settings, out: Preflight) -> None:
    for i, s in enumerate(settings.sources):
        if s.kind in ("file", "wav") and not Path(s.uri).is_file():
            out.problems.append((f"sources[{i}].uri", f"file {s.uri} not found"))
        elif s.kind == "images" and not Path(s.uri).exists() and not glob.glob(s.uri):
            out.problems.append((f"sources[{i}].uri", f"no image files at {s.uri}"))


def _is_loopback(infos: list[tuple[Any, ...]]) -> bool:
    """True when every address the broker host resolves to is on this machine."""
    try:
        return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)
    except ValueError:  # not an IP address (e.g. a scoped IPv6 literal)
        return False


def _check_plaintext(
    settings: Settings, password: str | None, out: Preflight, loopback: bool
) -> None:
    # A password sent without TLS can be read by anyone on the path to the
    # broker. Traffic to a loopback address never leaves the device, so a
    # local broker (the common setup) is not warned about.
    m = settings.mqtt
    if password and m.username and not m.tls and not loopback:
        out.warnings.append(
            (
                "mqtt.tls",
                f"the MQTT password of {m.username!r} is sent in clear text to "
                f"{m.host}:{m.port}: set tls = true (with a TLS listener on the broker)",
            )
        )


#: CONNACK reasons that mean "these credentials are not accepted" (MQTT 5 names;
#: paho maps the MQTT 3.1.1 return codes 4 and 5 onto the same two).
_CREDENTIAL_REASONS = frozenset({"Not authorized", "Bad user name or password"})


def _login_refused(settings: Settings, password: str | None, reason: str) -> Problem:
    m = settings.mqtt
    if reason == "Unsupported protocol version":
        return (
            "mqtt.protocol",
            f"broker {m.host}:{m.port} does not speak MQTT {m.protocol}: set protocol = '3.1.1'",
        )
    if reason not in _CREDENTIAL_REASONS:
        return ("mqtt.host", f"broker {m.host}:{m.port} refused the connection ({reason})")
    if not m.username:
        return (
            "mqtt.username",
            f"broker {m.host}:{m.port} refused an anonymous login ({reason}): set "
            "mqtt.username and mqtt.password_file (or the credential mqtt_password)",
        )
    how = "with the password of mqtt.password_file" if password else "without a password"
    return (
        "mqtt.password_file" if password else "mqtt.username",
        f"broker {m.host}:{m.port} refused the login of user {m.username!r} {how} "
        f"({reason}): check mqtt.username and mqtt.password_file (or the credential "
        "mqtt_password) against the broker's password file",
    )


def _probe_login(settings: Settings, password: str | None) -> Problem | None:
    """Connect and log in as the daemon would; the problem, or None when the broker accepts.

    A client id of its own, a clean session and no will: checking must not
    take over the session of a daemon that is running with this config.
    """
    m = settings.mqtt
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"edged-check-{os.getpid()}",
        protocol=MQTTProtocolVersion.MQTTv5 if m.protocol == "5" else MQTTProtocolVersion.MQTTv311,
    )
    client.connect_timeout = _PROBE_S
    if m.username:
        client.username_pw_set(m.username, password)
    answer: list[ReasonCode] = []
    client.on_connect = lambda _c, _u, _f, reason, _p: answer.append(reason)
    if m.tls:
        try:
            use_tls(client, m.ca_file)
        except (OSError, ssl.SSLError) as exc:
            return ("mqtt.ca_file", f"cannot load CA certificates from {m.ca_file}: {exc}")
    try:
        client.connect(m.host, m.port, keepalive=m.keepalive_s)
    except ssl.SSLError as exc:
        why = getattr(exc, "verify_message", None) or exc.reason or str(exc)
        return (
            "mqtt.ca_file" if m.ca_file else "mqtt.tls",
            f"TLS with broker {m.host}:{m.port} failed: {why}",
        )
    except OSError as exc:
        return ("mqtt.host", f"broker {m.host}:{m.port} is not reachable: {exc.strerror or exc}")
    deadline = time.monotonic() + _PROBE_S
    while not answer and time.monotonic() < deadline:
        if client.loop(timeout=0.1) != MQTTErrorCode.MQTT_ERR_SUCCESS:
            break  # the broker closed the connection without a CONNACK
    if answer and not answer[0].is_failure:
        client.disconnect()
        client.loop(timeout=0.1)  # writes the DISCONNECT, then closes the socket
    sock = client.socket()
    if sock is not None:
        sock.close()
    if not answer:
        hint = "" if m.tls else " (is it a TLS port? then set tls = true)"
        return (
            "mqtt.port",
            f"broker {m.host}:{m.port} accepted TCP but gave no MQTT answer within "
            f"{_PROBE_S:g} s{hint}",
        )
    if answer[0].is_failure:
        return _login_refused(settings, password, str(answer[0]))
    return None


def _check_broker(settings: Settings, out: Preflight, *, connect: bool) -> None:
    m = settings.mqtt
    bucket = out.problems if connect else out.warnings
    try:
        password = read_secret(m.password_file, "mqtt_password")
    except EdgedError:
        password = None  # unreadable: reported by _check_secrets
    try:
        infos = socket.getaddrinfo(m.host, m.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        bucket.append(
            ("mqtt.host", f"cannot resolve broker host {m.host!r}: {exc.strerror or exc}")
        )
        _check_plaintext(settings, password, out, loopback=False)
        return
    _check_plaintext(settings, password, out, loopback=_is_loopback(infos))
    if not connect:
        return
    if m.tls and m.ca_file is not None and not m.ca_file.is_file():
        return  # reported by _check_secrets; no TLS login can be tried
    # `run` does not log in here: a refused login is retried (and logged) by
    # the MQTT client, since credentials may be fixed on the broker's side.
    problem = _probe_login(settings, password)
    if problem is not None:
        out.problems.append(problem)


def _check_secrets(settings: Settings, out: Preflight) -> None:
    for key, path, credential in (
        ("mqtt.password_file", settings.mqtt.password_file, "mqtt_password"),
        ("offload.token_file", settings.offload.token_file, "offload_token"),
    ):
        try:
            read_secret(path, credential)
        except EdgedError as exc:
            out.problems.append((key, str(exc).split("\n", 1)[-1].strip()))
            continue
        # A secret any local user can read is one compromised service away
        # from leaking; it still works, so this is a warning, not a refusal.
        if path is not None and path.is_file() and path.stat().st_mode & 0o004:
            out.warnings.append(
                (key, f"{path} is readable by every user: chmod 600 it (or use LoadCredential)")
            )
    if (
        settings.mqtt.tls
        and settings.mqtt.ca_file is not None
        and not settings.mqtt.ca_file.is_file()
    ):
        out.problems.append(("mqtt.ca_file", f"CA file {settings.mqtt.ca_file} not found"))


def _check_metrics(settings: Settings, out: Preflight) -> None:
    # Found here rather than when the endpoint starts: `edged check` should
    # say so, and `edged run` should refuse with exit 78, not run unobserved.
    if settings.metrics.enabled and importlib.util.find_spec("prometheus_client") is None:
        out.problems.append(
            (
                "metrics.enabled",
                "prometheus-client is not installed: pip install 'edged[metrics]', "
                "or set enabled = false",
            )
        )


def _check_offload(settings: Settings, out: Preflight) -> None:
    off = settings.offload
    if off.url and off.ca_file is not None and not off.ca_file.is_file():
        out.problems.append(("offload.ca_file", f"CA file {off.ca_file} not found"))
    if not off.url:
        out.warnings += [
            (f"pipelines[{i}].offload.enabled", "has no effect while [offload] url is empty")
            for i, p in enumerate(settings.pipelines)
            if p.offload.enabled
        ]


def preflight(settings: Settings, catalog: Catalog, *, connect_broker: bool) -> Preflight:
    """Check sources, secrets, models (files, sha256, tensors vs decoder, label names) and the broker.

    With ``connect_broker`` (``edged check``) the broker is connected to and
    logged in to with the configured credentials, so a refused login is a
    problem. Without it (``edged run``) broker problems are warnings and no
    login is tried: the daemon must start and keep retrying when the broker is
    down, e.g. at boot before the network is up, and logs a refused login
    itself. A password sent without TLS to a non-loopback broker is a warning
    in both. Models that load are kept in the result.
    """
    out = Preflight()
    _check_sources(settings, out)
    _check_secrets(settings, out)
    _check_metrics(settings, out)
    _check_offload(settings, out)
    for i, p in enumerate(settings.pipelines):
        _check_pipeline(i, p, settings, catalog, out)
    _check_broker(settings, out, connect=connect_broker)
    return out
