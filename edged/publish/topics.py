"""The MQTT topic tree of one device (README "MQTT topics and payloads").

Every topic edged publishes or subscribes to is built here, so the contract
lives in one place and every variable segment (device, pipeline, source,
model, command) is validated once: a ``+``, ``#``, ``/`` or control character
in a name would silently publish to the wrong topic or turn a subscription
into a wildcard.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal, get_args

from edged.config.settings import check_segment

#: What a pipeline publishes; one topic per kind under ``<prefix>/<dev>/<pipeline>/``.
ResultKind = Literal["detections", "pose", "audio", "offload", "events"]
RESULT_KINDS: Final[frozenset[str]] = frozenset(get_args(ResultKind))

# Pipeline and source names share the fourth topic level with ``cmd`` and
# ``models``: a pipeline called "cmd" would publish ``…/cmd/detections``, which
# the daemon's own ``…/cmd/+`` subscription would receive as a command.
_RESERVED: Final[frozenset[str]] = frozenset({"cmd", "models"})

#: The MQTT limit on a topic name: a length-prefixed UTF-8 string (MQTT 5 §1.5.4).
MAX_TOPIC_BYTES: Final = 65535
#: Defaults of ``mqtt.max_topic_levels`` / ``mqtt.max_topic_bytes``: far above any
#: topic edged builds (at most 5 levels, a few hundred bytes) and below what
#: common brokers accept (mosquitto: 201 levels; EMQX: 128 levels by default).
DEFAULT_MAX_LEVELS: Final = 32
DEFAULT_MAX_BYTES: Final = 1024

# What brokers refuse inside a topic name by dropping the connection (mosquitto
# checks every UTF-8 string this way): NUL and other C0/C1 control characters,
# lone surrogates (not encodable as UTF-8) and the Unicode non-characters.
_NONCHARACTERS = "".join(chr(plane << 16 | low) for plane in range(17) for low in (0xFFFE, 0xFFFF))
_BAD_CHAR = re.compile(f"[\\x00-\\x1f\\x7f-\\x9f\\ud800-\\udfff\\ufdd0-\\ufdef{_NONCHARACTERS}]")
_WILDCARD = re.compile("[+#]")


def check_topic(
    topic: str, *, max_levels: int = DEFAULT_MAX_LEVELS, max_bytes: int = DEFAULT_MAX_BYTES
) -> str:
    """Return ``topic`` if a broker will accept a PUBLISH to it, else raise ValueError naming why.

    One rule for every topic edged publishes to (its own, the ones built from
    configuration and the response topics that clients ask for): a topic a
    broker refuses makes it drop the connection, and paho would re-send that
    QoS 1 message after every reconnect, so it must never be handed over.
    Refused: empty topics and empty levels, ``+`` and ``#`` (wildcards are
    for subscriptions), a leading ``$`` (broker topics such as ``$SYS``), NUL,
    control characters, surrogates and Unicode non-characters, more than
    ``max_levels`` levels, more than ``max_bytes`` bytes of UTF-8 (never more
    than the protocol's 65,535).
    """
    if not topic:
        raise ValueError("is empty")
    bad = _BAD_CHAR.search(topic)
    if bad is not None:
        raise ValueError(
            f"contains the character U+{ord(bad.group()):04X} at offset {bad.start()} "
            "(NUL, control characters, surrogates and non-characters are refused)"
        )
    wildcard = _WILDCARD.search(topic)
    if wildcard is not None:
        raise ValueError(
            f"contains the wildcard {wildcard.group()!r} at offset {wildcard.start()} "
            "(wildcards are for subscriptions, never for a topic published to)"
        )
    if topic.startswith("$"):
        raise ValueError("starts with '$' (reserved for the broker's own topics, e.g. $SYS)")
    size = len(topic.encode())
    limit = min(max_bytes, MAX_TOPIC_BYTES)
    if size > limit:
        raise ValueError(f"is {size} bytes long; at most {limit} are allowed")
    levels = topic.count("/") + 1
    if levels > max_levels:
        raise ValueError(f"has {levels} levels; at most {max_levels} are allowed")
    if "//" in topic or topic.startswith("/") or topic.endswith("/"):
        raise ValueError("has an empty level")
    return topic


def _segment(what: str, value: str) -> str:
    """Validate one topic segment, naming it in the error."""
    try:
        return check_segment(value)
    except ValueError as exc:
        raise ValueError(f"{what} {value!r} cannot be an MQTT topic segment: it {exc}") from None


def _name(what: str, value: str) -> str:
    """Validate a pipeline or source name, which must also avoid reserved segments."""
    _segment(what, value)
    if value in _RESERVED:
        raise ValueError(
            f"{what} {value!r} clashes with the reserved topic segment {value!r} "
            f"(reserved: {', '.join(sorted(_RESERVED))}); rename it"
        )
    return value


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names for one device: ``<prefix>/<device>/…``.

    Raises ValueError on construction when ``prefix`` or ``device`` is not a
    valid segment, and from each method when its argument is not.
    """

    prefix: str
    device: str

    def __post_init__(self) -> None:
        _segment("topic prefix", self.prefix)
        _segment("device id", self.device)

    @property
    def base(self) -> str:
        """``<prefix>/<device>``, the root of everything this device publishes."""
        return f"{self.prefix}/{self.device}"

    @property
    def availability(self) -> str:
        """Retained ``online`` / ``stopped`` / ``offline`` (the Last Will)."""
        return f"{self.base}/availability"

    @property
    def state(self) -> str:
        """Retained JSON state: pipelines, sources, models, link."""
        return f"{self.base}/state"

    @property
    def stats(self) -> str:
        """Periodic counters (QoS 0, not retained)."""
        return f"{self.base}/stats"

    @property
    def cmd_filter(self) -> str:
        """Subscription filter for every command: ``<prefix>/<device>/cmd/+``."""
        return f"{self.base}/cmd/+"

    def result(self, pipeline: str, kind: ResultKind) -> str:
        """Where ``pipeline`` publishes results of ``kind``."""
        if kind not in RESULT_KINDS:
            raise ValueError(
                f"result kind {kind!r} is not one of {', '.join(sorted(RESULT_KINDS))}"
            )
        return f"{self.base}/{_name('pipeline name', pipeline)}/{kind}"

    def cmd(self, command: str) -> str:
        """Topic on which ``command`` is received."""
        return f"{self.base}/cmd/{_segment('command name', command)}"

    def cmd_reply(self, command: str) -> str:
        """Default reply topic of ``command`` (when the request names no response topic)."""
        return f"{self.cmd(command)}/reply"

    def label(self, model: str) -> str:
        """Retained nutrition label of ``model`` (a catalog name or a model file's stem)."""
        return f"{self.base}/models/{_segment('model name', model)}/label"

    @property
    def rollout(self) -> str:
        """Retained JSON status of the latest model rollout on this device (docs/rollout.md)."""
        return f"{self.base}/models/rollout"

    @property
    def rollout_desired(self) -> str:
        """Retained JSON, written by the fleet: pipeline → model it should run (docs/rollout.md)."""
        return f"{self.base}/models/desired"

    def zone(self, pipeline: str, zone: str) -> str:
        """Retained JSON state of ``zone`` (``ZoneState``): occupancy, counts, frame."""
        return f"{self.base}/{_name('pipeline name', pipeline)}/zones/{_segment('zone name', zone)}"

    def zone_occupancy(self, pipeline: str, zone: str) -> str:
        """Retained ``ON`` / ``OFF``: whether any object is in ``zone``."""
        return f"{self.zone(pipeline, zone)}/occupancy"

    def zone_count(self, pipeline: str, zone: str, label: str | None = None) -> str:
        """Retained plain integer: objects in ``zone``, all labels or of ``label``."""
        total = f"{self.zone(pipeline, zone)}/count"
        return total if label is None else f"{total}/{_segment('label', label)}"

    def event_snapshot_latest(self, pipeline: str) -> str:
        """Retained JPEG of ``pipeline``'s latest event snapshot, at a fixed topic.

        Per-event snapshots go to ``…/<pipeline>/events/<event_id>/snapshot``,
        which no Home Assistant image entity can follow; this one mirrors the
        latest of them (its ``image`` entity reads it).
        """
        return f"{self.base}/{_name('pipeline name', pipeline)}/events/snapshot/latest"

    def snapshot(self, source: str) -> str:
        """Latest JPEG of ``source``."""
        return f"{self.base}/{_name('source name', source)}/snapshot"

    def event_snapshot(self, pipeline: str, event_id: str) -> str:
        """JPEG of an ended event's best frame: ``<prefix>/<dev>/<pipeline>/events/<id>/snapshot``."""
        return f"{self.result(pipeline, 'events')}/{_segment('event id', event_id)}/snapshot"
