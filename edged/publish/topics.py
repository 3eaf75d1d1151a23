"""The MQTT topic tree of one device (DESIGN §2).

Every topic edged publishes or subscribes to is built here, so the contract
lives in one place and every variable segment (device, pipeline, source,
model, command) is validated once: a ``+``, ``#``, ``/`` or control character
in a name would silently publish to the wrong topic or turn a subscription
into a wildcard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, get_args

from edged.settings import check_segment

#: What a pipeline publishes; one topic per kind under ``<prefix>/<dev>/<pipeline>/``.
ResultKind = Literal["detections", "pose", "audio", "offload", "events"]
RESULT_KINDS: Final[frozenset[str]] = frozenset(get_args(ResultKind))

# Pipeline and source names share the fourth topic level with ``cmd`` and
# ``models``: a pipeline called "cmd" would publish ``…/cmd/detections``, which
# the daemon's own ``…/cmd/+`` subscription would receive as a command.
_RESERVED: Final[frozenset[str]] = frozenset({"cmd", "models"})


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

    def snapshot(self, source: str) -> str:
        """Latest JPEG of ``source``."""
        return f"{self.base}/{_name('source name', source)}/snapshot"

    def event_snapshot(self, pipeline: str, event_id: str) -> str:
        """JPEG of an ended event's best frame: ``<prefix>/<dev>/<pipeline>/events/<id>/snapshot``."""
        return f"{self.result(pipeline, 'events')}/{_segment('event id', event_id)}/snapshot"
