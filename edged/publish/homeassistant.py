"""Home Assistant MQTT discovery: one HA device per edged device, entities per pipeline.

Configs are retained under ``<discovery_prefix>/<component>/<node>/<object>/config``
(``[mqtt] discovery_prefix``, default ``homeassistant``) so Home Assistant finds
them whenever it (re)starts. They follow the current conventions of Home
Assistant's "MQTT" integration page (discovery, ``origin``, ``availability``)
and its per-platform pages ("MQTT Sensor", "MQTT Binary sensor", "MQTT
Switch", "MQTT Number", "MQTT Button", "MQTT Image", "MQTT Event"): full key
names (no abbreviations), ``default_entity_id`` (``<domain>.<object>``) instead
of the ``object_id`` that Home Assistant 2025.10 deprecated, and an
``origin`` block naming edged.

Availability. Every entity is available only while the daemon is (its
``availability`` topic: ``online``; ``stopped`` and the Last Will ``offline``
are not). Entities fed by one pipeline's results also need that pipeline to
be running: a second availability entry reads the pipeline's status from the
retained ``state`` document (``running`` or ``degraded`` → available;
``disabled``, ``down`` or absent → unavailable), with ``availability_mode:
all``. The pipeline's controls (switch, number) have the device's
availability only, or a disabled pipeline could not be switched back on.

Staleness. Sensors fed by results carry ``expire_after``: three times the
longest expected gap between two results of their pipeline
(:func:`result_period_s`), so a sensor whose source went quiet says
"unavailable" rather than a stale value. Occupancy uses ``off_delay`` with the
same window instead: with ``publish = "nonempty"`` no empty result is ever
sent, so without it an occupancy sensor would stay ON after the object left.

Controls. Commands over MQTT are allow-listed (``[commands] allow``); a
control is announced only while its command is allowed, so Home Assistant
never shows a switch that always fails: ``set_enabled`` → a switch per
pipeline, ``set_threshold`` → a number per pipeline, ``snapshot`` → a button
and an image per video source.

When a pipeline is removed from the configuration (at a start or a reload)
its retained configs must be cleared (an empty retained payload), or HA
keeps showing dead entities forever: the topics published last time are
remembered in a small JSON file under the state directory for that.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import structlog

from edged import __version__
from edged.config.settings import TASK_SOURCE_KINDS, PipelineSettings, Settings
from edged.publish.payloads import Message
from edged.publish.topics import Topics

log = structlog.get_logger(__name__)

#: Labels watched when a detection pipeline does not filter labels.
DEFAULT_WATCH: Final = ("person",)
#: Result-driven sensors expire after this many result periods without a result.
EXPIRE_PERIODS: Final = 3
#: … and never sooner than this (a fast pipeline still gets a few seconds of slack).
MIN_EXPIRE_S: Final = 10
#: Event phases that fire a Home Assistant event (``update`` would fire on every frame).
EVENT_PHASES: Final = ("start", "end")
#: Event types (``EventResult.type``) each task can produce.
EVENT_TYPES_BY_TASK: Final[dict[str, tuple[str, ...]]] = {
    "detection": ("object", "line"),
    "pose": ("object", "fall"),
    "audio": ("sound",),
}
_ON, _OFF = "ON", "OFF"
_AVAILABLE = {"payload_available": "online", "payload_not_available": "offline"}


def _object_id(text: str) -> str:
    """HA object ids allow ``[a-zA-Z0-9_-]`` only; entity ids are lower case."""
    return re.sub(r"[^a-zA-Z0-9_-]", "_", text)


def _entity_id(text: str) -> str:
    """The object part of an entity id: lower-case ``[a-z0-9_]``."""
    return re.sub(r"[^a-z0-9_]", "_", text.lower())


def _lit(text: str) -> str:
    """``text`` as a Jinja string literal (a JSON string is one), for names in templates."""
    return json.dumps(text)


def _support_url() -> str | None:
    """The project's home page from the installed package's metadata, when it names one."""
    try:
        urls = metadata.metadata("edged").get_all("Project-URL") or []
    except metadata.PackageNotFoundError:
        return None
    for entry in urls:
        url = str(entry).partition(",")[2].strip()
        if url.startswith("https://"):
            return url
    return None


def result_period_s(p: PipelineSettings) -> float:
    """The longest expected gap between two results of ``p`` while nothing changes.

    One inference period (``1/max_fps``, or ``hop_s`` for audio), stretched
    to ``keepalive_s`` by the motion gate and to ``heartbeat_s`` by
    ``publish = "changes"``, which republishes an unchanged result only that
    often.
    """
    period = p.hop_s if p.task == "audio" else 1.0 / p.max_fps
    if p.motion_gate and p.task != "audio":
        period = max(period, p.keepalive_s)
    if p.publish == "changes":
        period = max(period, p.heartbeat_s)
    return period


def expire_after_s(p: PipelineSettings) -> int:
    """``expire_after`` (and occupancy ``off_delay``) for sensors fed by ``p``'s results."""
    return max(MIN_EXPIRE_S, math.ceil(EXPIRE_PERIODS * result_period_s(p)))


def zone_names(p: PipelineSettings) -> list[str]:
    """Names of ``p``'s zones (``[[pipelines.zones]]``); [] for a pipeline without zones."""
    return [zone.name for zone in p.zones]


def sound_labels(p: PipelineSettings) -> list[str]:
    """Label groups an audio pipeline raises sound events for (``[pipelines.sound_events]``)."""
    return list(p.sound_events.groups) if p.task == "audio" else []


class Discovery:
    """Builds discovery configs for the configured pipelines."""

    def __init__(self, settings: Settings, topics: Topics) -> None:
        self._settings = settings
        self._topics = topics
        self.prefix = settings.mqtt.discovery_prefix
        self.node = _object_id(f"edged_{settings.device_id}")
        self._allowed = frozenset(settings.commands.allow)
        self._device = {
            "identifiers": [self.node],
            "name": f"edged {settings.device_id}",
            "manufacturer": "edged",
            "model": "edged inference daemon",
            "sw_version": __version__,
        }
        origin: dict[str, str] = {"name": "edged", "sw_version": __version__}
        if url := _support_url():
            origin["support_url"] = url
        self._origin = origin
        self._device_available = {
            "topic": topics.availability,
            # 'stopped' (clean exit) and 'offline' (LWT) both mean unavailable.
            "value_template": "{{ 'online' if value == 'online' else 'offline' }}",
            **_AVAILABLE,
        }

    # -- building blocks -------------------------------------------------
    def _pipeline_available(self, name: str) -> dict[str, str]:
        """Availability entry: ``name`` runs (or runs degraded) according to ``state``."""
        return {
            "topic": self._topics.state,
            "value_template": "{% set p = (value_json.pipelines | default({})).get("
            + _lit(name)
            + ") %}{{ 'online' if p and p.status in ('running', 'degraded') else 'offline' }}",
            **_AVAILABLE,
        }

    def _config(
        self,
        component: str,
        object_id: str,
        name: str,
        *,
        pipeline: str | None = None,
        **extra: Any,
    ) -> Message:
        oid = _object_id(object_id)
        uid = f"{self.node}_{oid}"
        availability = [self._device_available]
        if pipeline is not None:
            availability.append(self._pipeline_available(pipeline))
        doc: dict[str, Any] = {
            "name": name,
            "unique_id": uid,
            "default_entity_id": f"{component}.{_entity_id(uid)}",
            "availability": availability,
            "availability_mode": "all",
            "device": self._device,
            "origin": self._origin,
            **extra,
        }
        topic = f"{self.prefix}/{component}/{self.node}/{oid}/config"
        return Message(topic, json.dumps(doc, separators=(",", ":")).encode(), qos=1, retain=True)

    def _occupancy(
        self, p: PipelineSettings, object_id: str, name: str, state_topic: str,
        template: str | None = None, **extra: Any,
    ) -> Message:  # fmt: skip
        """An ``occupancy`` binary sensor of pipeline ``p``: ``ON``/``OFF`` (or ``template``)."""
        fields: dict[str, Any] = {"state_topic": state_topic, "device_class": "occupancy"}
        if template is not None:
            fields["value_template"] = template
        return self._config(
            "binary_sensor", object_id, name, pipeline=p.name,
            **fields, payload_on=_ON, payload_off=_OFF, **extra,
        )  # fmt: skip

    def _count(
        self, p: PipelineSettings, object_id: str, name: str, state_topic: str,
        template: str | None = None, **extra: Any,
    ) -> Message:  # fmt: skip
        """A count sensor of pipeline ``p``: an integer (or ``template``), a measurement."""
        fields: dict[str, Any] = {"state_topic": state_topic}
        if template is not None:
            fields["value_template"] = template
        return self._config(
            "sensor", object_id, name, pipeline=p.name,
            **fields, state_class="measurement", **extra,
        )  # fmt: skip

    def _pipeline_state(self, name: str, expression: str) -> str:
        """Template over ``state``: ``expression`` with ``p`` bound to pipeline ``name``'s entry."""
        return (
            "{% set p = (value_json.pipelines | default({})).get(" + _lit(name) + ") %}"
            "{{ " + expression + " }}"
        )

    # -- per pipeline ----------------------------------------------------
    def _results(self, p: PipelineSettings) -> list[Message]:
        """Sensors fed by the pipeline's results."""
        out: list[Message] = []
        expire = expire_after_s(p)
        if p.task == "detection":
            state = self._topics.result(p.name, "detections")
            for label in p.labels or DEFAULT_WATCH:
                match = (
                    "value_json.detections | selectattr('label', 'eq', "
                    + _lit(label)
                    + ") | list | length"
                )
                out.append(
                    self._occupancy(
                        p,
                        f"{p.name}_{label}_occupancy",
                        f"{p.name} {label}",
                        state,
                        f"{{{{ 'ON' if ({match}) > 0 else 'OFF' }}}}",
                        # OFF once results stop saying ON: publish = "nonempty" sends no empty one.
                        off_delay=expire,
                    )
                )
                out.append(
                    self._count(
                        p,
                        f"{p.name}_{label}_count",
                        f"{p.name} {label} count",
                        state,
                        f"{{{{ {match} }}}}",
                        expire_after=expire,
                    )
                )
        elif p.task == "pose":
            out.append(
                self._count(
                    p,
                    f"{p.name}_poses",
                    f"{p.name} people",
                    self._topics.result(p.name, "pose"),
                    "{{ value_json.poses | length }}",
                    expire_after=expire,
                )
            )
        else:
            out.append(
                self._config(
                    "sensor",
                    f"{p.name}_top_class",
                    f"{p.name} sound",
                    pipeline=p.name,
                    state_topic=self._topics.result(p.name, "audio"),
                    value_template="{{ value_json.classes[0].label "
                    "if value_json.classes else 'none' }}",
                    icon="mdi:waveform",
                    expire_after=expire,
                )
            )
        return out

    def _events(self, p: PipelineSettings) -> list[Message]:
        """An ``event`` entity for the pipeline's events, and the latest event snapshot."""
        types = [f"{t}_{phase}" for t in EVENT_TYPES_BY_TASK[p.task] for phase in EVENT_PHASES]
        # Renders to '' for 'update' messages, which Home Assistant ignores
        # (MQTT Event: an empty rendered payload fires nothing).
        template = (
            "{% if value_json.event in " + json.dumps(list(EVENT_PHASES)) + " %}"
            "{{ {'event_type': value_json.type ~ '_' ~ value_json.event, "
            "'label': value_json.label, 'event_id': value_json.event_id, "
            "'zones': value_json.zones | default([]), "
            "'top_score': value_json.top_score} | tojson }}{% endif %}"
        )
        out = [
            self._config(
                "event",
                f"{p.name}_events",
                f"{p.name} events",
                pipeline=p.name,
                state_topic=self._topics.result(p.name, "events"),
                event_types=types,
                value_template=template,
            )
        ]
        # The latest event snapshot is published only with [events] publish_snapshots
        # (nothing leaves the device otherwise): no entity that could never show one.
        if p.task != "audio" and self._settings.events.publish_snapshots:
            out.append(
                self._config(
                    "image",
                    f"{p.name}_event_snapshot",
                    f"{p.name} event snapshot",
                    pipeline=p.name,
                    image_topic=self._topics.event_snapshot_latest(p.name),
                    content_type="image/jpeg",
                )
            )
        return out

    def _zones(self, p: PipelineSettings, zones: Sequence[str]) -> list[Message]:
        """Occupancy, total count and per-label count per zone, from the retained zone
        topics (README "Zones"): ``…/zones/<zone>/occupancy`` (``ON``/``OFF``),
        ``…/zones/<zone>/count`` and ``…/zones/<zone>/count/<label>`` (integers).
        Nothing for a pipeline without zones.
        """
        out: list[Message] = []
        by_name = {zone.name: zone for zone in p.zones}
        for zone in zones:
            out.append(
                self._occupancy(
                    p,
                    f"{p.name}_zone_{zone}_occupancy",
                    f"{p.name} {zone} occupancy",
                    self._topics.zone_occupancy(p.name, zone),
                )
            )
            out.append(
                self._count(
                    p,
                    f"{p.name}_zone_{zone}_count",
                    f"{p.name} {zone} count",
                    self._topics.zone_count(p.name, zone),
                )
            )
            labels = (by_name[zone].labels if zone in by_name else []) or p.labels or DEFAULT_WATCH
            out.extend(
                self._count(
                    p,
                    f"{p.name}_zone_{zone}_{label}_count",
                    f"{p.name} {zone} {label} count",
                    self._topics.zone_count(p.name, zone, label),
                )
                for label in labels
            )
        return out

    def sounds(self, p: PipelineSettings, labels: Sequence[str]) -> list[Message]:
        """A ``sound`` binary sensor per watched label (or label group) of an audio pipeline.

        Driven by the pipeline's sound events: ON at ``start``, OFF at
        ``end``; other events render empty, which Home Assistant ignores
        (MQTT Binary sensor). The audio event settings pass their label
        names here; nothing for an empty list.
        """
        return [
            self._config(
                "binary_sensor",
                f"{p.name}_{label}_sound",
                f"{p.name} {label}",
                pipeline=p.name,
                state_topic=self._topics.result(p.name, "events"),
                device_class="sound",
                value_template="{% if value_json.type == 'sound' and value_json.label == "
                + _lit(label)
                + " %}{{ 'OFF' if value_json.event == 'end' else 'ON' }}{% endif %}",
                payload_on=_ON,
                payload_off=_OFF,
            )
            for label in labels
        ]

    def _diagnostics(self, p: PipelineSettings) -> list[Message]:
        """Rate and inference time from ``stats`` (audio pipelines count windows, not frames)."""
        key = f"value_json.pipelines[{_lit(p.name)}]"
        stale = max(MIN_EXPIRE_S, math.ceil(EXPIRE_PERIODS * self._settings.stats_interval_s))
        rate = (
            ("windows_per_s", "windows/s", f"{p.name} windows")
            if p.task == "audio"
            else ("fps", "fps", f"{p.name} fps")
        )
        field, unit, name = rate
        return [
            self._config(
                "sensor",
                f"{p.name}_fps",
                name,
                pipeline=p.name,
                state_topic=self._topics.stats,
                value_template=f"{{{{ {key}.{field} }}}}",
                state_class="measurement",
                unit_of_measurement=unit,
                entity_category="diagnostic",
                expire_after=stale,
            ),
            self._config(
                "sensor",
                f"{p.name}_inference_ms",
                f"{p.name} inference",
                pipeline=p.name,
                state_topic=self._topics.stats,
                value_template=f"{{{{ {key}.infer_p50_ms }}}}",
                state_class="measurement",
                unit_of_measurement="ms",
                device_class="duration",
                entity_category="diagnostic",
                expire_after=stale,
            ),
        ]

    def _controls(self, p: PipelineSettings) -> list[Message]:
        """Switch (``set_enabled``) and number (``set_threshold``), when those commands are allowed."""
        out: list[Message] = []
        lit = _lit(p.name)
        if "set_enabled" in self._allowed:
            out.append(
                self._config(
                    "switch",
                    f"{p.name}_enabled",
                    f"{p.name} enabled",
                    command_topic=self._topics.cmd("set_enabled"),
                    payload_on=json.dumps({"pipeline": p.name, "enabled": True}),
                    payload_off=json.dumps({"pipeline": p.name, "enabled": False}),
                    state_topic=self._topics.state,
                    value_template=self._pipeline_state(
                        p.name, "'OFF' if p and p.status == 'disabled' else 'ON'"
                    ),
                    state_on=_ON,
                    state_off=_OFF,
                    entity_category="config",
                    icon="mdi:eye",
                )
            )
        if "set_threshold" in self._allowed:
            out.append(
                self._config(
                    "number",
                    f"{p.name}_threshold",
                    f"{p.name} threshold",
                    command_topic=self._topics.cmd("set_threshold"),
                    command_template='{"pipeline": ' + lit + ', "threshold": {{ value }}}',
                    state_topic=self._topics.state,
                    value_template=self._pipeline_state(
                        p.name, "p.threshold if p and p.threshold is defined else 'None'"
                    ),
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    mode="slider",
                    entity_category="config",
                )
            )
        return out

    def _pipeline(self, p: PipelineSettings) -> list[Message]:
        return [
            *self._results(p),
            *self._events(p),
            *self._zones(p, zone_names(p)),
            *self.sounds(p, sound_labels(p)),
            *self._diagnostics(p),
            *self._controls(p),
        ]

    # -- per device ------------------------------------------------------
    def _sources(self) -> list[Message]:
        """A snapshot button and its image per video source, when ``snapshot`` is allowed."""
        if "snapshot" not in self._allowed:
            return []
        out: list[Message] = []
        for s in self._settings.sources:
            if s.kind not in TASK_SOURCE_KINDS["detection"]:  # snapshots need frames
                continue
            out.append(
                self._config(
                    "button",
                    f"{s.name}_snapshot",
                    f"{s.name} snapshot",
                    command_topic=self._topics.cmd("snapshot"),
                    payload_press=json.dumps({"source": s.name}),
                    icon="mdi:camera",
                )
            )
            out.append(
                self._config(
                    "image",
                    f"{s.name}_snapshot_image",
                    f"{s.name} snapshot",
                    image_topic=self._topics.snapshot(s.name),
                    content_type="image/jpeg",
                )
            )
        return out

    def _device_diagnostics(self) -> list[Message]:
        """Process and outbox health: the problem sensor (``state``) and ``stats`` readings."""
        stats = self._topics.stats
        stale = max(MIN_EXPIRE_S, math.ceil(EXPIRE_PERIODS * self._settings.stats_interval_s))
        readings: Iterable[tuple[str, str, str, dict[str, str]]] = (
            ("cpu", "CPU", "value_json.cpu_percent", {"unit_of_measurement": "%"}),
            (
                "rss",
                "memory",
                "value_json.rss_mb",
                {"unit_of_measurement": "MiB", "device_class": "data_size"},
            ),
            (
                "temperature",
                "temperature",
                # null where the kernel exposes none: 'None' is "unknown" to Home Assistant.
                "value_json.temperature_c",
                {"unit_of_measurement": "°C", "device_class": "temperature"},
            ),
            (
                "outbox_depth",
                "outbox depth",
                "(value_json.outbox | default({})).depth | default('None')",
                {"icon": "mdi:tray-full"},
            ),
        )
        out = [
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
                payload_on=_ON,
                payload_off=_OFF,
                entity_category="diagnostic",
            )
        ]
        for oid, name, expression, extra in readings:
            out.append(
                self._config(
                    "sensor",
                    oid,
                    name,
                    state_topic=stats,
                    value_template=f"{{{{ {expression} }}}}",
                    state_class="measurement",
                    entity_category="diagnostic",
                    expire_after=stale,
                    **extra,
                )
            )
        return out

    def messages(self) -> list[Message]:
        """Retained configs for every configured pipeline and source, and the device's own."""
        pipelines = [m for p in self._settings.pipelines for m in self._pipeline(p)]
        return pipelines + self._sources() + self._device_diagnostics()


def _memory_file(settings: Settings) -> Path:
    return settings.state_dir / "homeassistant.json"


def discovery_wanted(settings: Settings) -> bool:
    """Whether to publish discovery (or clear what an earlier run published)."""
    return settings.mqtt.homeassistant or _memory_file(settings).exists()


def discovery_with_removals(settings: Settings, topics: Topics) -> list[Message]:
    """Configs to publish now, plus empty retained payloads for configs no longer wanted.

    Records the published topics so that the next start or reload can remove
    what this one publishes, should its pipeline disappear from the configuration.
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
        log.info("homeassistant.configs_removed", count=len(removals))
    try:
        memory.parent.mkdir(parents=True, exist_ok=True)
        memory.write_text(json.dumps(sorted(wanted)))
    except OSError as exc:
        log.warning("homeassistant.memory_not_saved", path=str(memory), error=exc.strerror)
    return removals + current
