"""``edged demo``: the daemon on sample media, a broker of its own, and a printout.

The demo is the real daemon (same App, same pipelines, same MQTT session),
configured from embedded defaults: public-domain / CC0 photos, the reference
models from the catalog (local mirror when there is one, else their official
URLs, always sha256-verified), and a mosquitto it starts on a free loopback
port unless ``EDGED_MQTT__HOST`` names a broker. A subscriber prints every
message the daemon publishes.

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
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edged.app import App
from edged.broker import LocalBroker
from edged.catalog.catalog import Artifact, load_catalog
from edged.catalog.fetch import pull, verify
from edged.check import preflight
from edged.errors import EdgedError
from edged.log import configure_logging
from edged.settings import Settings, load_settings

#: Sample photos the demo may use: public domain or CC0 only (see the README's
#: "Demo media" section for their origin), checked by sha256 before use.
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


def _first_dir(*candidates: Path | None) -> Path | None:
    return next((c for c in candidates if c is not None and c.is_dir()), None)


def _shared(sub: str) -> list[Path]:
    """``shared/<sub>`` beside the working directory or beside the source tree."""
    here = Path(__file__).resolve().parents[2]
    return [Path.cwd().parent / "shared" / sub, here.parent / "shared" / sub]


def find_media(explicit: Path | None) -> Path:
    """The sample-media directory: ``--media``, ``EDGED_MEDIA_DIR``, or ``shared/media`` nearby."""
    env = os.environ.get("EDGED_MEDIA_DIR")
    found = _first_dir(explicit, Path(env) if env else None, *_shared("media"))
    if found is None:
        raise EdgedError("no sample media found: pass --media DIR or set EDGED_MEDIA_DIR")
    return found


def find_mirror() -> Path | None:
    """The model mirror: ``EDGED_MODEL_MIRROR`` or ``shared/models`` nearby; None → URLs."""
    env = os.environ.get("EDGED_MODEL_MIRROR")
    return _first_dir(Path(env) if env else None, *_shared("models"))


def stage_photos(media: Path, dest: Path) -> Path:
    """Link the verified demo photos into ``dest`` (an ``images`` source folder)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name, sha in DEMO_PHOTOS.items():
        problem = verify(Artifact(name=name, sha256=sha, size=1), media / name)
        if problem:
            raise EdgedError(f"demo photo: {problem}")
        link = dest / name
        if not link.exists():
            link.symlink_to((media / name).resolve())
    name, sha = DEMO_SOUND
    sound = dest / name
    problem = verify(Artifact(name=name, sha256=sha, size=1), media / name)
    if problem:
        raise EdgedError(f"demo sound: {problem}")
    if not sound.exists():
        sound.symlink_to((media / name).resolve())
    return dest


def demo_settings(workdir: Path, photos: Path, host: str, port: int) -> Settings:
    """The embedded demo configuration (the same keys as a config file)."""
    return load_settings(
        None,
        {
            "device_id": "demo",
            "state_dir": str(workdir / "state"),
            "stats_interval_s": 5,
            "mqtt": {"host": host, "port": port, "homeassistant": False},
            "outbox": {"path": str(workdir / "state" / "outbox.sqlite3")},
            "models": {"dir": str(workdir / "models")},
            "sources": [
                {"name": "photos", "kind": "images", "uri": str(photos), "fps": 1, "loop": True},
                {"name": "speech", "kind": "wav", "uri": str(photos / DEMO_SOUND[0]), "loop": True},
            ],
            "pipelines": [
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
            ],
        },
    )


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


def run_demo(*, duration_s: float, workdir: Path | None, media: Path | None) -> int:
    """Pull models, start a broker if needed, run the daemon, print what it publishes."""
    configure_logging("warning")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    workdir = workdir or cache / "edged-demo"
    photos = stage_photos(find_media(media), workdir / "media")
    catalog = load_catalog()
    mirror = find_mirror()
    for name in DEMO_MODELS:
        for item in pull(catalog.get(name), workdir / "models", mirror=mirror):
            print(f"model {name}: {item.name} ({item.origin})")
    broker: LocalBroker | None = None
    host = os.environ.get("EDGED_MQTT__HOST", "")
    port = int(os.environ.get("EDGED_MQTT__PORT", "1883"))
    if not host:
        broker = LocalBroker()
        broker.start()
        host, port = broker.host, broker.port
        print(f"started mosquitto on {host}:{port} (pid {broker.pid})")
    try:
        settings = demo_settings(workdir, photos, host, port)
        checked = preflight(settings, catalog, connect_broker=True)
        if checked.problems:
            checked.close()
            for key, msg in checked.problems:
                print(f"  {key}: {msg}", file=sys.stderr)
            return 78
        printer = _printer(host, port, sys.stdout)
        app = App(settings, checked)
        app.start()
        print(f"edged demo running for {duration_s:g} s (Ctrl-C stops it)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            app.wait(duration_s if duration_s > 0 else None)
        app.stop()
        time.sleep(0.3)  # let the printer show the final 'stopped'
        printer.loop_stop()
        printer.disconnect()
    finally:
        if broker is not None:
            broker.close()
    return 0
