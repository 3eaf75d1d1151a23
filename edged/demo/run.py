"""``edged demo``: the daemon on sample media, a broker of its own, and a printout.

The demo is the real daemon (same App, same pipelines, same MQTT session),
configured from embedded defaults: public-domain / CC0 photos and speech
shipped with edged (``models/media``, or ``--media`` / ``EDGED_MEDIA_DIR``),
the reference models from the catalog (local mirror when there is one, else
their official URLs, always sha256-verified), and a mosquitto it starts on a
free loopback port unless ``EDGED_MQTT__HOST`` names a broker. A subscriber
prints every message the daemon publishes. A model that cannot be fetched
leaves its pipeline out (said on stderr, with what to do); the demo fails only
when no model at all could be installed.

Why mosquitto and no embedded Python broker: the pure-Python broker that runs
in-process (amqtt) rejects MQTT 5, which edged speaks by default, and pins
its own websockets version; mosquitto is one ``apt-get install`` away and is
what the tests and real deployments use.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any, TextIO

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edged.catalog.catalog import Artifact, Catalog, load_catalog
from edged.catalog.fetch import pull, verify
from edged.catalog.resolve import mirror_dir
from edged.config.settings import Settings, load_settings
from edged.daemon.app import App
from edged.daemon.check import preflight
from edged.demo.broker import LocalBroker
from edged.errors import EX_CONFIG, EX_OK, EX_UNAVAILABLE, EdgedError
from edged.label.golden import media_dir
from edged.log import configure_logging

#: Sample photos the demo uses, shipped with edged in ``models/media`` (public domain
#: or CC0; origin and licence in models/media/MEDIA.md), checked by sha256 before use.
DEMO_PHOTOS: dict[str, str] = {
    "grace_hopper.jpg": "e25eff3a01f40278ab93e74207892707fa5be871a2b16f23ba5e42a9738804f2",
    "astronaut.png": "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
    "chelsea.png": "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
    "coffee.png": "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
    "rocket.jpg": "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
}
#: Public-domain speech (J. F. Kennedy's 1961 inaugural address, a US-government work).
DEMO_SOUND = ("speech_jfk.wav", "59dfb9a4acb36fe2a2affc14bacbee2920ff435cb13cc314a08c13f66ba7860e")
DEMO_MODELS = ("ssd-mobilenet-v1-coco-int8", "yolox-nano-coco", "movenet-lightning-int8", "yamnet")

#: The demo's sources and pipelines (the same keys as a config file). A pipeline
#: whose model could not be installed is left out, and a source nobody reads with it.
_SOURCES: tuple[dict[str, Any], ...] = (
    {"name": "photos", "kind": "images", "fps": 1, "loop": True},
    {"name": "speech", "kind": "wav", "loop": True},
)
_PIPELINES: tuple[dict[str, Any], ...] = (
    {
        "name": "ssd",
        "source": "photos",
        "task": "detection",
        "model": DEMO_MODELS[0],
        "publish": "all",
        "max_fps": 1,
        "threshold": 0.5,
    },
    {
        "name": "yolox",
        "source": "photos",
        "task": "detection",
        "model": DEMO_MODELS[1],
        "publish": "all",
        "max_fps": 1,
        "threshold": 0.4,
    },
    {
        "name": "body",
        "source": "photos",
        "task": "pose",
        "model": DEMO_MODELS[2],
        "publish": "all",
        "max_fps": 1,
        "threshold": 0.3,
    },
    {
        "name": "sound",
        "source": "speech",
        "task": "audio",
        "model": DEMO_MODELS[3],
        "publish": "changes",
        "threshold": 0.3,
        "top_k": 3,
    },
)


def _link(target: Path, link: Path) -> None:
    # Replace whatever is there: a link left by an earlier run may dangle (its
    # venv or checkout was removed) or point at another media dir.
    link.unlink(missing_ok=True)
    link.symlink_to(target.resolve())


def stage_photos(media: Path, dest: Path) -> Path:
    """Link the verified demo photos and speech clip into ``dest`` (an ``images`` folder)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name, sha in (*DEMO_PHOTOS.items(), DEMO_SOUND):
        problem = verify(Artifact(name=name, sha256=sha, size=1), media / name)
        if problem:
            raise EdgedError(f"demo media: {problem}")
        _link(media / name, dest / name)
    return dest


def demo_settings(
    workdir: Path, photos: Path, host: str, port: int, models: Collection[str] = DEMO_MODELS
) -> Settings:
    """The embedded demo configuration, with the pipelines of ``models`` only."""
    pipelines = [dict(p) for p in _PIPELINES if p["model"] in models]
    uris = {"photos": str(photos), "speech": str(photos / DEMO_SOUND[0])}
    read = {p["source"] for p in pipelines}
    sources = [{**s, "uri": uris[s["name"]]} for s in _SOURCES if s["name"] in read]
    return load_settings(
        None,
        {
            "device_id": "demo",
            "state_dir": str(workdir / "state"),
            "stats_interval_s": 5,
            "mqtt": {"host": host, "port": port, "homeassistant": False},
            "outbox": {"path": str(workdir / "state" / "outbox.sqlite3")},
            "models": {"dir": str(workdir / "models")},
            "sources": sources,
            "pipelines": pipelines,
        },
    )


def install_models(
    catalog: Catalog, dest: Path, mirror: Path | None, out: TextIO, err: TextIO
) -> dict[str, str]:
    """Pull the demo models (sha256-verified); return ``{model: why}`` for those that failed.

    A model that cannot be fetched is reported with every place tried, and
    once what to do about it; the demo then runs without its pipeline.
    """
    where = f"mirror {mirror}, then " if mirror else ""
    print(f"models: from {where}the publishers' URLs, sha256-verified, into {dest}", file=out)
    failed: dict[str, str] = {}
    for name in DEMO_MODELS:
        try:
            for item in pull(catalog.get(name), dest, mirror=mirror):
                print(f"model {name}: {item.name} ({item.origin})", file=out, flush=True)
        except EdgedError as exc:
            failed[name] = str(exc)
            pipeline = next(p["name"] for p in _PIPELINES if p["model"] == name)
            print(
                f"edged demo: model {name} could not be installed, so pipeline '{pipeline}' "
                f"is left out: {exc}",
                file=err,
                flush=True,
            )
    if failed:
        print(
            "  to get them: set EDGED_MODEL_MIRROR=DIR (a folder holding the catalog's model "
            f"files) and run the demo again, or first run 'edged models pull {' '.join(failed)} "
            f"--mirror DIR --models-dir {dest}'; without a mirror, run the demo again once the "
            "URLs above are reachable",
            file=err,
            flush=True,
        )
    return failed


def _left_out(failed: dict[str, str]) -> str:
    names = ", ".join(p["name"] for p in _PIPELINES if p["model"] in failed)
    return f"left out (model not installed, see above): {names}"


def _detections(doc: dict[str, Any]) -> str:
    found = ", ".join(f"{d['label']} {d['score']:.2f}" for d in doc["detections"]) or "nothing"
    return (
        f"seq={doc['seq']} frame={doc['frame']['id']} {found} ({doc['timing_ms']['infer']:.1f} ms)"
    )


def _poses(doc: dict[str, Any]) -> str:
    people = [
        f"person {p['score']:.2f} ({sum(k['score'] > 0.3 for k in p['keypoints'])}/17 keypoints)"
        for p in doc["poses"]
    ]
    return f"seq={doc['seq']} frame={doc['frame']['id']} {', '.join(people) or 'nobody'}"


def _classes(doc: dict[str, Any]) -> str:
    heard = ", ".join(f"{c['label']} {c['score']:.2f}" for c in doc["classes"]) or "silence"
    return f"seq={doc['seq']} window {doc['window']['start'][11:23]} {heard}"


def _stats(doc: dict[str, Any]) -> str:
    rates = ", ".join(
        f"{k} {v.get('fps', v.get('windows_per_s', 0))}/s" for k, v in doc["pipelines"].items()
    )
    return f"{rates}; cpu {doc['cpu_percent']}%, rss {doc['rss_mb']} MB"


def _state(doc: dict[str, Any]) -> str:
    return "pipelines: " + ", ".join(f"{k}={v.get('status')}" for k, v in doc["pipelines"].items())


#: A payload key that identifies the message kind → how to print it (first match wins).
_FORMATS = (
    ("detections", _detections),
    ("poses", _poses),
    ("classes", _classes),
    ("cpu_percent", _stats),
    ("pipelines", _state),
)


def _summary(payload: bytes) -> str:
    try:
        doc: Any = json.loads(payload)
    except ValueError:
        return payload.decode(errors="replace")
    if isinstance(doc, dict):
        for key, fmt in _FORMATS:
            if key in doc:
                return fmt(doc)
    return json.dumps(doc)[:160]


def _printer(host: str, port: int, out: Any) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    lock = threading.Lock()

    def on_connect(c: mqtt.Client, _u: object, _f: object, _rc: object, _p: object = None) -> None:
        c.subscribe("edged/#", qos=1)

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with lock:
            print(f"{msg.topic:38} {_summary(bytes(msg.payload))}", file=out, flush=True)

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect(host, port)
    client.loop_start()
    return client


def run_demo(
    *,
    duration_s: float,
    workdir: Path | None,
    media: Path | None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Pull models, start a broker if needed, run the daemon, print what it publishes.

    Runs every pipeline whose model could be installed and names those left
    out; returns 69 (unavailable) only when no demo model could be installed.
    """
    configure_logging("warning")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    workdir = workdir or cache / "edged-demo"
    photos = stage_photos(media_dir(media), workdir / "media")
    catalog = load_catalog()
    # The mirror as every command finds it: [models] mirror (EDGED_MODELS__MIRROR),
    # else EDGED_MODEL_MIRROR.
    mirror = mirror_dir(demo_settings(workdir, photos, "localhost", 1883))
    failed = install_models(catalog, workdir / "models", mirror, out, err)
    runnable = [m for m in DEMO_MODELS if m not in failed]
    if not runnable:
        print("edged demo: no demo model could be installed, so nothing can run", file=err)
        return EX_UNAVAILABLE
    broker: LocalBroker | None = None
    host = os.environ.get("EDGED_MQTT__HOST", "")
    port = int(os.environ.get("EDGED_MQTT__PORT", "1883"))
    if not host:
        broker = LocalBroker()
        broker.start()
        host, port = broker.host, broker.port
        print(f"started mosquitto on {host}:{port} (pid {broker.pid})", file=out)
    try:
        settings = demo_settings(workdir, photos, host, port, runnable)
        checked = preflight(settings, catalog, connect_broker=True)
        if checked.problems:
            checked.close()
            for key, msg in checked.problems:
                print(f"  {key}: {msg}", file=err)
            return EX_CONFIG
        printer = _printer(host, port, out)
        app = App(settings, checked)
        app.start()
        running = ", ".join(p.name for p in settings.pipelines)
        print(f"edged demo running for {duration_s:g} s (Ctrl-C stops it)", file=out, flush=True)
        print(f"pipelines: {running}", file=out, flush=True)
        if failed:
            print(_left_out(failed), file=out, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            app.wait(duration_s if duration_s > 0 else None)
        app.stop()
        time.sleep(0.3)  # let the printer show the final 'stopped'
        printer.loop_stop()
        printer.disconnect()
        if failed:  # repeated at the end: the start has scrolled away by now
            print(_left_out(failed), file=out, flush=True)
    finally:
        if broker is not None:
            broker.close()
    return EX_OK
