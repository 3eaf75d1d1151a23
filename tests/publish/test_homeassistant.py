"""Home Assistant MQTT discovery from the real daemon on a real mosquitto.

Live discovery messages are checked against the schema written from Home
Assistant's documentation (tests/publish/ha_schema.py), and their templates
are rendered, as Home Assistant renders them, against the live ``state``,
``stats`` and result messages of the same daemon. Controls are used the way
Home Assistant uses them: a plain publish on the entity's ``command_topic``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import paho.mqtt.publish as publish
import pytest

from edged.config.settings import load_settings
from edged.publish.homeassistant import Discovery
from edged.publish.topics import Topics
from tests.helpers.broker import RunningBroker, Subscriber, matching
from tests.helpers.daemon import Daemon, base_config, ssd_pipeline, walking_source, write_config
from tests.publish.ha_schema import available, binary_state, problems, render, render_command

pytestmark = pytest.mark.broker

DEV = "edged/testdev"
CONTROLS = ["ping", "set_enabled", "set_threshold", "snapshot"]

DETECT = ssd_pipeline(labels=["person", "dog"], max_fps=2)
YARD = {**DETECT, "name": "yard", "labels": ["person"]}
AUDIO = {"name": "ears", "source": "mic0", "task": "audio", "model": "yamnet"}


def config(
    tmp_path: Path,
    models_dir: Path,
    media_dir: Path,
    broker: RunningBroker,
    pipelines: list[dict[str, Any]],
    *,
    allow: list[str] | None = None,
) -> Path:
    cfg = base_config(tmp_path, models_dir, broker, homeassistant=True)
    cfg["sources"] = [
        walking_source(media_dir, loop=True),
        {"name": "mic0", "kind": "wav", "uri": media_dir / "speech_jfk.wav", "loop": True},
    ]
    cfg["pipelines"] = pipelines
    cfg["commands"] = {"allow": allow or ["ping"]}
    return write_config(tmp_path / "edged.toml", cfg)


def expected_topics(cfg: Path) -> set[str]:
    """The discovery topics the daemon must publish for ``cfg``."""
    settings = load_settings(cfg)
    return {m.topic for m in Discovery(settings, Topics("edged", "testdev")).messages()}


def discovery(sub: Subscriber) -> dict[str, dict[str, Any]]:
    """Latest discovery config per topic ({} once cleared)."""
    return {
        m.topic: (json.loads(m.payload) if m.payload else {})
        for m in sub.messages("homeassistant/#")
    }


def last(sub: Subscriber, topic: str) -> bytes:
    [*_, message] = sub.messages(topic)
    return message.payload


def wait_state(sub: Subscriber, name: str, after: int = 0, **want: Any) -> bytes:
    """The first ``state`` message after the ``after``-th one whose pipeline ``name`` has ``want``."""

    def match() -> bytes | None:
        for m in sub.messages(f"{DEV}/state")[after:]:
            entry = json.loads(m.payload)["pipelines"].get(name, {})
            if all(entry.get(k) == v for k, v in want.items()):
                return m.payload
        return None

    sub.wait_for(lambda _m: match() is not None, timeout=15)
    found = match()
    assert found is not None
    return found


def wait_running(daemon: Daemon, timeout: float = 30) -> None:
    """Until the daemon logged ``running``: its SIGHUP handler is installed from then on."""
    deadline = time.monotonic() + timeout
    while '"event": "app.running"' not in daemon.output:
        assert time.monotonic() < deadline, daemon.output[-2000:]
        time.sleep(0.1)


def states(sub: Subscriber) -> int:
    """How many ``state`` messages the subscriber has seen (a mark for :func:`wait_state`)."""
    return len(sub.messages(f"{DEV}/state"))


def test_live_discovery_matches_the_documented_schema_and_its_templates_render(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker: RunningBroker
) -> None:
    """Every live config is valid; every template renders on the live state, stats and results.

    Strict rendering: a template that reads a field the payload lacks fails
    (the audio rate once read ``fps``, which audio stats do not carry).
    """
    cfg = config(tmp_path, models_dir, media_dir, broker, [DETECT, AUDIO], allow=CONTROLS)
    want = expected_topics(cfg)
    sub = broker.subscriber("#")
    with Daemon(cfg) as daemon:
        sub.wait_for(lambda _m: want <= set(discovery(sub)), timeout=30)
        sub.wait_for(matching(f"{DEV}/door/detections"), timeout=30)
        sub.wait_for(matching(f"{DEV}/ears/audio"), timeout=30)
        # The woman walks in at about 7 s: her track's start event.
        sub.wait_for(
            lambda m: m.topic == f"{DEV}/door/events" and json.loads(m.payload)["event"] == "start",
            timeout=30,
        )
        sub.wait_for(
            lambda m: (
                m.topic == f"{DEV}/stats"
                and {"door", "ears"} <= set(json.loads(m.payload)["pipelines"])
            ),
            timeout=15,
        )
        running_state = last(sub, f"{DEV}/state")
        rc, _ = daemon.stop()
        assert rc == 0
    configs = discovery(sub)
    assert set(configs) == want
    assert {t: problems(t, d) for t, d in configs.items() if problems(t, d)} == {}
    assert len({json.dumps(c["device"]["identifiers"]) for c in configs.values()}) == 1
    rendered = {}
    for topic, doc in configs.items():
        # Events are checked below (sound events come from the audio event detector).
        if "value_template" in doc and doc.get("state_topic") and "/event/" not in topic:
            rendered[doc["name"]] = render(doc["value_template"], last(sub, doc["state_topic"]))
    # Diagnostics read the stats payload's real fields; temperature may be None (no thermal zone).
    for name in ("door fps", "ears windows", "door inference", "CPU", "memory", "outbox depth"):
        assert float(rendered[name]) >= 0, (name, rendered[name])
    assert rendered["door enabled"] == "ON"
    assert float(rendered["door threshold"]) == pytest.approx(0.5)
    assert rendered["outbox problem"] == "OFF"
    assert rendered["door person"] in ("ON", "OFF")
    # The event entity fires on start and end (attributes from the payload), never on update.
    door_events = next(d for d in configs.values() if d["name"] == "door events")
    fired = [
        json.loads(out)
        for m in sub.messages(f"{DEV}/door/events")
        if (out := render(door_events["value_template"], m.payload))
    ]
    assert fired
    assert {f["event_type"] for f in fired} <= set(door_events["event_types"])
    assert {f["label"] for f in fired} == {"person"}
    updates = [m for m in sub.messages(f"{DEV}/door/events") if b'"event":"update"' in m.payload]
    assert all(render(door_events["value_template"], m.payload) == "" for m in updates)
    retained = {f"{DEV}/availability": b"online", f"{DEV}/state": running_state}
    by_name = {d["name"]: d for d in configs.values()}
    assert available(by_name["door person count"], retained)
    assert not available(
        by_name["door person count"], {**retained, f"{DEV}/availability": b"stopped"}
    )


def test_switch_number_and_button_work_as_home_assistant_sends_them(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker: RunningBroker
) -> None:
    """Switch off/on, number 0.7, button press: the pipeline changes and state shows it."""
    cfg = config(tmp_path, models_dir, media_dir, broker, [DETECT], allow=CONTROLS)
    want = expected_topics(cfg)
    sub = broker.subscriber("#")

    def send(topic: str, payload: str) -> None:
        publish.single(topic, payload, hostname=broker.host, port=broker.port)

    with Daemon(cfg) as daemon:
        sub.wait_for(lambda _m: want <= set(discovery(sub)), timeout=30)
        by_name = {d["name"]: d for d in discovery(sub).values()}
        switch, number = by_name["door enabled"], by_name["door threshold"]
        count = by_name["door person count"]
        wait_state(sub, "door", status="running")

        mark = states(sub)
        send(switch["command_topic"], switch["payload_off"])
        state = wait_state(sub, "door", mark, status="disabled")
        assert render(switch["value_template"], state) == switch["state_off"]
        # The pipeline's sensors go unavailable; its switch stays usable.
        retained = {f"{DEV}/availability": b"online", f"{DEV}/state": state}
        assert not available(count, retained)
        assert available(switch, retained)

        mark = states(sub)
        send(switch["command_topic"], switch["payload_on"])
        state = wait_state(sub, "door", mark, status="running")
        assert render(switch["value_template"], state) == switch["state_on"]

        mark = states(sub)
        send(number["command_topic"], render_command(number["command_template"], 0.7))
        state = wait_state(sub, "door", mark, threshold=0.7)
        assert float(render(number["value_template"], state)) == 0.7

        [button] = [d for d in discovery(sub).values() if d.get("payload_press")]
        [image] = [
            d
            for d in discovery(sub).values()
            if d.get("image_topic", "").endswith("/cam0/snapshot")
        ]
        send(button["command_topic"], button["payload_press"])
        jpeg = sub.wait_for(matching(image["image_topic"]), timeout=15)
        assert jpeg.payload[:2] == b"\xff\xd8"  # JPEG SOI
        rc, _ = daemon.stop()
        assert rc == 0


def test_reload_clears_removed_pipelines_and_announces_added_ones(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker: RunningBroker
) -> None:
    """SIGHUP without 'ears': its configs are emptied (retained); with 'yard': announced."""
    cfg = config(tmp_path, models_dir, media_dir, broker, [DETECT, AUDIO])
    first = expected_topics(cfg)
    sub = broker.subscriber("homeassistant/#")
    with Daemon(cfg) as daemon:
        sub.wait_for(lambda _m: first <= set(discovery(sub)), timeout=30)
        ears = {t for t, d in discovery(sub).items() if d.get("name", "").startswith("ears")}
        assert ears
        wait_running(daemon)

        config(tmp_path, models_dir, media_dir, broker, [DETECT])
        daemon.signal(signal.SIGHUP)
        sub.wait_for(lambda _m: all(discovery(sub)[t] == {} for t in ears), timeout=30)

        config(tmp_path, models_dir, media_dir, broker, [DETECT, YARD])
        added = expected_topics(cfg) - first
        assert added
        assert all("/edged_testdev/yard_" in t for t in added)
        daemon.signal(signal.SIGHUP)
        sub.wait_for(lambda _m: added <= {t for t, d in discovery(sub).items() if d}, timeout=30)
        assert not [t for t in added if problems(t, discovery(sub)[t])]
        rc, _ = daemon.stop()
        assert rc == 0
    with broker.subscriber("homeassistant/#") as late:  # what a Home Assistant starting now sees
        late.wait_for(lambda _m: added <= {m.topic for m in late.messages()}, timeout=5)
        assert not ears & {m.topic for m in late.messages() if m.payload}


def test_removed_pipeline_configs_are_cleared_at_the_next_start(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker: RunningBroker
) -> None:
    """When a pipeline leaves the config while stopped, its configs are emptied at the next start."""
    first = broker.subscriber("homeassistant/#")
    cfg = config(tmp_path, models_dir, media_dir, broker, [DETECT, AUDIO])
    want = expected_topics(cfg)
    with Daemon(cfg) as daemon:
        first.wait_for(lambda _m: want <= set(discovery(first)), timeout=30)
        daemon.stop()
    audio_topics = {t for t, d in discovery(first).items() if d.get("name", "").startswith("ears")}
    assert audio_topics
    config(tmp_path, models_dir, media_dir, broker, [DETECT])
    second = broker.subscriber("homeassistant/#")
    with Daemon(cfg) as daemon:
        second.wait_for(lambda m: m.topic in audio_topics and m.payload == b"", timeout=30)
        daemon.stop()
    with broker.subscriber("homeassistant/#") as late:
        late.wait_for(matching("homeassistant/+/+/+/config", retain=True), timeout=5)
        assert not (audio_topics & {m.topic for m in late.messages() if m.payload})


# -- occupancy returns to OFF -----------------------------------------------------------------

#: person_walking_0-30s.mp4 from 14 s: the woman stands at the table and leaves by 19 s
#: (MEDIA.md); the last frame (empty room) is then held for 14 s.
CLIP_FROM_S, CLIP_S, HOLD_S = 14, 8, 14
#: Seconds into the cut clip: the person is seen before PRESENT_UNTIL_S and gone after GONE_S.
PRESENT_UNTIL_S, GONE_S = 4.0, 6.0


@pytest.mark.slow
def test_occupancy_returns_to_off_for_every_publish_policy(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker: RunningBroker
) -> None:
    """all, changes and nonempty: ON while the person is there, OFF after they leave.

    With ``publish = "nonempty"`` no empty result is ever sent: only the
    sensor's ``off_delay`` can bring it back to OFF.
    """
    clip = tmp_path / "leaves.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-loglevel",
            "error",
            "-ss",
            str(CLIP_FROM_S),
            "-t",
            str(CLIP_S),
            "-i",
            str(media_dir / "person_walking_0-30s.mp4"),
            "-an",
            "-vf",
            f"tpad=stop_mode=clone:stop_duration={HOLD_S}",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            str(clip),
        ],
        check=True,
    )
    policies = ("all", "changes", "nonempty")
    cfg = base_config(tmp_path, models_dir, broker, homeassistant=True)
    cfg["sources"] = [{"name": "cam0", "kind": "file", "uri": clip}]
    cfg["pipelines"] = [
        {**DETECT, "name": f"p_{policy}", "labels": ["person"], "publish": policy}
        for policy in policies
    ]
    path = write_config(tmp_path / "edged.toml", cfg)
    sub = broker.subscriber("#")
    seen: list[tuple[float, str, bytes]] = []  # receive time, topic, payload
    with Daemon(path) as daemon:
        deadline = time.monotonic() + 60
        t0: float | None = None
        while time.monotonic() < deadline:
            now = time.monotonic()
            seen.extend(
                (now, m.topic, m.payload) for m in sub.messages(f"{DEV}/+/detections")[len(seen) :]
            )
            if t0 is None and seen:
                t0 = seen[0][0]
            if t0 is not None and time.monotonic() - t0 > CLIP_S + HOLD_S - 2:
                break
            time.sleep(0.2)
        configs = discovery(sub)
        daemon.stop()
    assert t0 is not None, "no detections published"
    end = seen[0][0] + CLIP_S + HOLD_S - 2
    for policy in policies:
        [doc] = [
            d for t, d in configs.items() if t.endswith(f"/p_{policy}_person_occupancy/config")
        ]
        mine = [(t, p) for t, topic, p in seen if topic == doc["state_topic"]]
        assert binary_state(doc, mine, t0 + PRESENT_UNTIL_S - 1) == "ON", policy
        assert binary_state(doc, mine, end) == "OFF", (policy, doc.get("off_delay"))
        if policy == "nonempty":  # no result says OFF: the off_delay must do it
            assert all(render(doc["value_template"], p) == "ON" for _t, p in mine)
