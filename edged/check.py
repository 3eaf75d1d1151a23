"""Pre-flight checks shared by ``edged check`` and ``edged run``.

``check`` and ``run`` must refuse the same configurations, so both call
:func:`preflight`. It collects every problem (key path, message) instead of
stopping at the first: an operator fixing a device over a slow link wants the
whole list at once.
"""

from __future__ import annotations

import glob
import importlib.util
import socket
from dataclasses import dataclass, field
from pathlib import Path

from edged.catalog.catalog import Catalog
from edged.catalog.resolve import ResolvedModel, resolve
from edged.errors import EdgedError
from edged.infer.base import Model
from edged.infer.registry import load_model
from edged.settings import PipelineSettings, Settings, read_secret
from edged.tasks import build_task

Problem = tuple[str, str]


@dataclass
class Preflight:
    """What the checks found, plus the models they loaded (reused by ``run``)."""

    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    models: dict[str, tuple[ResolvedModel, Model]] = field(default_factory=dict)

    def close(self) -> None:
        for _, model in self.models.values():
            model.close()
        self.models.clear()


def _check_pipeline(
    index: int, p: PipelineSettings, settings: Settings, catalog: Catalog, out: Preflight
) -> None:
    key = f"pipelines[{index}]"
    try:
        resolved = resolve(p, settings, catalog)
    except EdgedError as exc:
        out.problems.append((f"{key}.model", str(exc)))
        return
    try:
        model = load_model(resolved.path, runtime=resolved.runtime, threads=p.threads)
    except EdgedError as exc:
        out.problems.append((f"{key}.model", str(exc)))
        return
    try:
        build_task(p, resolved, model)
    except EdgedError as exc:
        model.close()
        out.problems.append((f"{key}.model", str(exc)))
        return
    out.models[p.name] = (resolved, model)


def _check_sources(settings: Settings, out: Preflight) -> None:
    for i, s in enumerate(settings.sources):
        if s.kind in ("file", "wav") and not Path(s.uri).is_file():
            out.problems.append((f"sources[{i}].uri", f"file {s.uri} not found"))
        elif s.kind == "images" and not Path(s.uri).exists() and not glob.glob(s.uri):
            out.problems.append((f"sources[{i}].uri", f"no image files at {s.uri}"))


def _check_broker(settings: Settings, out: Preflight, *, connect: bool) -> None:
    m = settings.mqtt
    bucket = out.problems if connect else out.warnings
    try:
        infos = socket.getaddrinfo(m.host, m.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        bucket.append(
            ("mqtt.host", f"cannot resolve broker host {m.host!r}: {exc.strerror or exc}")
        )
        return
    if not connect:
        return
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.settimeout(3.0)
        try:
            sock.connect(addr)
        except OSError as exc:
            bucket.append(
                ("mqtt.host", f"broker {m.host}:{m.port} is not reachable: {exc.strerror or exc}")
            )


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
    """Check sources, secrets, models (files, sha256, tensors vs decoder) and the broker.

    With ``connect_broker`` false (``edged run``) broker problems are warnings:
    the daemon must start and keep retrying when the broker is down, e.g. at
    boot before the network is up. Models that load are kept in the result.
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
