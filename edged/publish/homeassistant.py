"""Home Assistant MQTT discovery: one HA device per edged device, entities per pipeline.

Configs are retained under ``homeassistant/<component>/<node>/<object>/config``
so Home Assistant finds them whenever it (re)starts. Availability is wired to
edged's own availability topic (LWT), so entities go unavailable when the
daemon dies. When a pipeline is removed from the configuration its retained
configs must be cleared (an empty retained payload), or HA keeps showing dead
entities forever: the topics published last time are remembered in a small
JSON file under the state directory for that.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import structlog

from edged import __version__
from edged.publish.payloads import Message
from edged.publish.topics import Topics
from edged.settings import PipelineSettings, Settings

log = structlog.get_logger(__name__)

DISCOVERY_PREFIX = "homeassistant"
#: Labels watched when a detection pipeline does not filter labels.
DEFAULT_WATCH = ("person",)


def _object_id(text: str) -> str:
    """HA object ids allow ``[a-zA-Z0-9_-]`` only."""
    return re.sub(r"[^a-zA-Z0-9_-]", "_", text)


class Discovery:
    """Builds discovery configs for the configured pipelines."""

    def __init__(self, settings: Settings, topics: Topics) -> None:
        self._settings = settings
        self._topics = topics
        self.node = _object_id(f"edged_{settings.device_id}")
        self._device = {
            "identifiers": [self.node],
            "name": f"edged {settings.device_id}",
            "manufacturer": "edged",
            "model": "edged inference daemon",
            "sw_version": __version__,
        }

    def _config(self, component: str, object_id: str, name: str, **extra: Any) -> Message:
        uid = f"{self.node}_{_object_id(object_id)}"
        doc: dict[str, Any] = {
            "name": name,
            "unique_id": uid,
            "object_id": uid,
            "availability_topic": self._topics.availability,
            # 'stopped' (clean exit) and 'offline' (LWT) both mean unavailable.
            "availability_template": "{{ 'online' if value == 'online' else 'offline' }}",
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": self._device,
            **extra,
        }
        topic = f"{DISCOVERY_PREFIX}/{component}/{self.node}/{_object_id(object_id)}/config"
        return Message(topic, json.dumps(doc, separators=(",", ":")).encode(), qos=1, retain=True)

    def _pipeline(self, p: PipelineSettings) -> list[Message]:
        out: list[Message] = []
        stats = self._topics.stats
        if p.task == "detection":
            state = self._topics.result(p.name, "detections")
            for label in p.labels or DEFAULT_WATCH:
                match = (
                    f"value_json.detections | selectattr('label', 'eq', '{label}') | list | length"
                )
                out.append(
                    self._config(
                        "binary_sensor",
                        f"{p.name}_{label}_occupancy",
                        f"{p.name} {label}",
                        state_topic=state,
                        device_class="occupancy",
                        value_template=f"{{{{ 'ON' if ({match}) > 0 else 'OFF' }}}}",
                        payload_on="ON",
                        payload_off="OFF",
                    )
                )
                out.append(
                    self._config(
                        "sensor",
                        f"{p.name}_{label}_count",
                        f"{p.name} {label} count",
                        state_topic=state,
                        value_template=f"{{{{ {match} }}}}",
                        state_class="measurement",
                        unit_of_measurement=label,
                    )
                )
        elif p.task == "pose":
            state = self._topics.result(p.name, "pose")
            out.append(
                self._config(
                    "sensor",
                    f"{p.name}_poses",
                    f"{p.name} people",
                    state_topic=state,
                    value_template="{{ value_json.poses | length }}",
                    state_class="measurement",
                )
            )
        else:
            state = self._topics.result(p.name, "audio")
            out.append(
                self._config(
                    "sensor",
                    f"{p.name}_top_class",
                    f"{p.name} sound",
                    state_topic=state,
                    value_template="{{ value_json.classes[0].label if value_json.classes else 'none' }}",
                    icon="mdi:waveform",
                )
            )
        out.append(
            self._config(
                "sensor",
                f"{p.name}_fps",
                f"{p.name} fps",
                state_topic=stats,
                value_template=f"{{{{ value_json.pipelines['{p.name}'].fps }}}}",
                state_class="measurement",
                unit_of_measurement="fps",
                entity_category="diagnostic",
            )
        )
        out.append(
            self._config(
                "sensor",
                f"{p.name}_inference_ms",
                f"{p.name} inference",
                state_topic=stats,
                value_template=f"{{{{ value_json.pipelines['{p.name}'].infer_p50_ms }}}}",
                state_class="measurement",
                unit_of_measurement="ms",
                device_class="duration",
                entity_category="diagnostic",
            )
        )
        return out

    def _device_problems(self) -> list[Message]:
        """A problem sensor: ON while the outbox is degraded (low disk, storage fault)."""
        return [
            self._config(
                "binary_sensor",
                "outbox_problem",
                "outbox problem",
                state_topic=self._topics.state,
                device_class="problem",
                value_template="{{ 'ON' if value_json.outbox is defined "
                "and value_json.outbox.status != 'durable' else 'OFF' }}",
                json_attributes_topic=self._topics.state,
                json_attributes_template="{{ (value_json.outbox | default({})) | tojson }}",
                payload_on="ON",
                payload_off="OFF",
                entity_category="diagnostic",
            )
        ]

    def messages(self) -> list[Message]:
        """Retained configs for every configured pipeline, and the device's problem sensor."""
        pipelines = [m for p in self._settings.pipelines for m in self._pipeline(p)]
        return pipelines + self._device_problems()


def _memory_file(settings: Settings) -> Path:
    return settings.state_dir / "homeassistant.json"


def discovery_with_removals(settings: Settings, topics: Topics) -> list[Message]:
    """Configs to publish now, plus empty retained payloads for configs no longer wanted.

    Records the published topics so that the next start can remove what this
    one publishes, should its pipeline disappear from the configuration.
    """
    current = Discovery(settings, topics).messages() if settings.mqtt.homeassistant else []
    wanted = {m.topic for m in current}
    memory = _memory_file(settings)
    try:
        previous = set(json.loads(memory.read_text()))
    except (OSError, ValueError):
        previous = set()
    removals = [Message(t, b"", qos=1, retain=True) for t in sorted(previous - wanted)]
    if removals:
        log.info("homeassistant_configs_removed", count=len(removals))
    try:
        memory.parent.mkdir(parents=True, exist_ok=True)
        memory.write_text(json.dumps(sorted(wanted)))
    except OSError as exc:
        log.warning("homeassistant_memory_not_saved", path=str(memory), error=exc.strerror)
    return removals + current
