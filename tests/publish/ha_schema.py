"""A schema of Home Assistant MQTT discovery configs, written from Home Assistant's documentation.

Sources (home-assistant.io integration pages, by name): "MQTT" (discovery
topic ``<discovery_prefix>/<component>/[<node_id>/]<object_id>/config``, the
``device`` and ``origin`` blocks, ``availability`` and ``availability_mode``,
``default_entity_id`` replacing the ``object_id`` deprecated in 2025.10),
"MQTT Sensor", "MQTT Binary sensor", "MQTT Switch", "MQTT Number", "MQTT
Button", "MQTT Image" and "MQTT Event" (each platform's configuration
variables and which of them are required).

edged publishes full key names only, so every key must be one of the
documented full names of its component: an abbreviation, a misspelling or a
deprecated key (``object_id``) is an error. :func:`render` evaluates the
configs' templates the way Home Assistant does (Jinja2, sandboxed,
``value`` and ``value_json``), but strictly: a field that does not exist
in the payload is an error instead of an empty string.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

#: Keys every MQTT entity may carry ("MQTT": entity and discovery options).
COMMON: Final = frozenset(
    {
        "name",
        "unique_id",
        "default_entity_id",
        "availability",
        "availability_mode",
        "availability_topic",
        "availability_template",
        "payload_available",
        "payload_not_available",
        "device",
        "origin",
        "entity_category",
        "entity_picture",
        "enabled_by_default",
        "encoding",
        "icon",
        "json_attributes_topic",
        "json_attributes_template",
        "qos",
        "platform",
    }
)

#: Per component: (required keys, further allowed keys).
COMPONENTS: Final[dict[str, tuple[frozenset[str], frozenset[str]]]] = {
    "sensor": (
        frozenset({"state_topic"}),
        frozenset(
            {
                "value_template",
                "device_class",
                "state_class",
                "unit_of_measurement",
                "expire_after",
                "force_update",
                "last_reset_value_template",
                "suggested_display_precision",
                "options",
            }
        ),
    ),
    "binary_sensor": (
        frozenset({"state_topic"}),
        frozenset(
            {
                "value_template",
                "device_class",
                "payload_on",
                "payload_off",
                "off_delay",
                "expire_after",
                "force_update",
            }
        ),
    ),
    "switch": (
        frozenset({"command_topic"}),
        frozenset(
            {
                "command_template",
                "state_topic",
                "value_template",
                "payload_on",
                "payload_off",
                "state_on",
                "state_off",
                "optimistic",
                "retain",
                "device_class",
            }
        ),
    ),
    "number": (
        frozenset({"command_topic"}),
        frozenset(
            {
                "command_template",
                "state_topic",
                "value_template",
                "min",
                "max",
                "step",
                "mode",
                "unit_of_measurement",
                "device_class",
                "optimistic",
                "retain",
                "payload_reset",
            }
        ),
    ),
    "button": (
        frozenset({"command_topic"}),
        frozenset({"command_template", "payload_press", "device_class", "retain"}),
    ),
    # One of image_topic / url_topic is required (checked below).
    "image": (
        frozenset(),
        frozenset({"image_topic", "url_topic", "url_template", "content_type", "image_encoding"}),
    ),
    "event": (
        frozenset({"state_topic", "event_types"}),
        frozenset({"value_template", "device_class"}),
    ),
}

#: Keys Home Assistant deprecated; a config must not use them.
DEPRECATED: Final = frozenset({"object_id"})

_TOPIC = re.compile(
    r"^[^/+#]+/(?P<component>[a-z_]+)/(?P<node>[A-Za-z0-9_-]+)/[A-Za-z0-9_-]+/config$"
)
_ENTITY_ID = re.compile(r"^(?P<domain>[a-z_]+)\.[a-z0-9_]+$")


def problems(topic: str, doc: dict[str, Any], *, prefix: str = "homeassistant") -> list[str]:
    """Everything in one discovery config that Home Assistant's documentation does not allow."""
    found: list[str] = []
    m = _TOPIC.match(topic)
    if m is None or not topic.startswith(prefix + "/"):
        return [f"topic {topic!r} is not {prefix}/<component>/<node_id>/<object_id>/config"]
    component = m["component"]
    if component not in COMPONENTS:
        return [f"component {component!r} is not one edged uses"]
    required, optional = COMPONENTS[component]
    keys = set(doc)
    found += [f"deprecated key {k!r}" for k in sorted(keys & DEPRECATED)]
    missing = (required | {"name", "unique_id", "default_entity_id", "device", "origin"}) - keys
    found += [f"missing {k!r}" for k in sorted(missing)]
    unknown = keys - COMMON - required - optional - DEPRECATED
    found += [f"unknown key {k!r} (abbreviation or misspelling?)" for k in sorted(unknown)]
    eid = _ENTITY_ID.match(str(doc.get("default_entity_id", "")))
    if eid is None or eid["domain"] != component:
        found.append(f"default_entity_id {doc.get('default_entity_id')!r} is not {component}.<id>")
    origin = doc.get("origin", {})
    if not isinstance(origin, dict) or not origin.get("name"):
        found.append("origin needs a name")
    device = doc.get("device", {})
    if not isinstance(device, dict) or not device.get("identifiers"):
        found.append("device needs identifiers")
    if "availability" in doc:
        if "availability_topic" in doc:
            found.append("availability and availability_topic are mutually exclusive")
        entries = doc["availability"]
        if not isinstance(entries, list) or not entries:
            found.append("availability must be a non-empty list")
        else:
            found += [
                f"availability entry {e!r} needs a topic"
                for e in entries
                if not isinstance(e, dict) or not e.get("topic")
            ]
    if doc.get("availability_mode", "latest") not in ("all", "any", "latest"):
        found.append(f"availability_mode {doc['availability_mode']!r}")
    if doc.get("entity_category", "config") not in ("config", "diagnostic"):
        found.append(f"entity_category {doc['entity_category']!r}")
    for key in ("expire_after", "off_delay"):
        if key in doc and not (isinstance(doc[key], int) and doc[key] > 0):
            found.append(f"{key} must be a positive integer, not {doc[key]!r}")
    if component == "image" and ("image_topic" in doc) == ("url_topic" in doc):
        found.append("image needs exactly one of image_topic, url_topic")
    if component == "event":
        types = doc.get("event_types")
        if not (isinstance(types, list) and types and all(isinstance(t, str) for t in types)):
            found.append("event_types must be a non-empty list of strings")
    if component == "number" and not doc.get("min", 1) < doc.get("max", 100):
        found.append("number: min must be below max")
    return found


_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined)


def render(template: str, payload: bytes | str, **variables: Any) -> str:
    """``template`` rendered as Home Assistant renders a value template for ``payload``."""
    text = payload.decode() if isinstance(payload, bytes) else payload
    try:
        value_json: Any = json.loads(text)
    except ValueError:
        value_json = None
    return _ENV.from_string(template).render({"value": text, "value_json": value_json, **variables})


def render_command(template: str, value: Any) -> str:
    """A ``command_template`` rendered for ``value`` (Home Assistant binds only ``value``)."""
    return _ENV.from_string(template).render(value=value)


def available(doc: dict[str, Any], retained: dict[str, bytes]) -> bool:
    """The entity's availability (mode ``all``) given the last payload of each topic."""
    results = []
    for entry in doc["availability"]:
        payload = retained.get(entry["topic"])
        if payload is None:
            return False
        value = render(entry["value_template"], payload) if "value_template" in entry else payload
        results.append(value == entry.get("payload_available", "online"))
    return all(results)


def binary_state(doc: dict[str, Any], messages: list[tuple[float, bytes]], at: float) -> str:
    """A binary_sensor's state at time ``at``, given its state messages (receive time, payload).

    As Home Assistant does it: each message sets the rendered state; with
    ``off_delay`` the state returns to ``payload_off`` that long after the
    last ``payload_on``.
    """
    on, off = doc.get("payload_on", "ON"), doc.get("payload_off", "OFF")
    state, last_on = "unknown", None
    for t, payload in messages:
        if t > at:
            break
        value = render(doc["value_template"], payload) if "value_template" in doc else payload
        if value == on:
            state, last_on = on, t
        elif value == off:
            state = off
    if (
        state == on
        and "off_delay" in doc
        and last_on is not None
        and at - last_on >= doc["off_delay"]
    ):
        state = off
    return state
