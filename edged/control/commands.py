"""Command payloads (README "MQTT topics and payloads", ``<prefix>/<dev>/cmd/<command>``): one strict model per command.

The command set is closed: :data:`COMMANDS` is all a client can ask for, and
no command takes a path, code or a topic to publish to, so a client that
may publish commands can toggle and tune pipelines, take a snapshot, ask for
a reload of the file the operator wrote and roll out a model the device's
catalog names, and nothing more. The one URL (``model_update``'s, pinned to a
sha256) is fetched only where the operator turned ``[rollout] allow_urls`` on.

Payloads are validated *strictly*: a JSON object with exactly the documented
fields of exactly the documented types (``"0.5"`` is not a threshold, ``true``
is not a number), so a client bug is reported instead of being guessed at.
Every refusal is a :class:`~edged.errors.CommandError` whose message starts
with the field it is about. ``docs/commands.md`` documents the protocol.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from edged.errors import CommandError

#: Larger payloads are refused before they are decoded (no command needs more
#: than a few hundred bytes; the bound keeps a hostile client from making the
#: daemon parse megabytes).
MAX_PAYLOAD_BYTES: Final = 64 * 1024

# Names and strings quoted back in error messages are cut to this length, so
# a reply never echoes a large payload.
_SHOW_MAX: Final = 64

#: A pipeline or source name as given in a command.
Name = Annotated[str, Field(min_length=1, max_length=128)]


class Command(BaseModel):
    """Fields every command accepts."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    NAME: ClassVar[str]

    id: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(
        None,
        description="Client's request id, echoed in the reply (for clients without MQTT 5 "
        "correlation data).",
    )


class Enable(Command):
    """Resume a pipeline disabled by :class:`Disable`."""

    NAME: ClassVar[str] = "enable"

    pipeline: Name = Field(description="Name of the pipeline to enable.")


class Disable(Command):
    """Stop running a pipeline's model; its capture keeps feeding other pipelines."""

    NAME: ClassVar[str] = "disable"

    pipeline: Name = Field(description="Name of the pipeline to disable.")
    reason: Annotated[str, Field(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")] | None = Field(
        None,
        description="Shown in `state` as the pipeline's reason; default 'disabled by command'.",
    )


class SetEnabled(Command):
    """Enable or disable a pipeline with one command (Home Assistant's switch has one topic)."""

    NAME: ClassVar[str] = "set_enabled"

    pipeline: Name = Field(description="Name of the pipeline.")
    enabled: bool = Field(description="true: as `enable`; false: as `disable`.")


class SetThreshold(Command):
    """Change the minimum score a pipeline reports, until the next reload or restart."""

    NAME: ClassVar[str] = "set_threshold"

    pipeline: Name = Field(description="Name of the pipeline.")
    threshold: float = Field(ge=0.0, le=1.0, description="Minimum score to report, 0..1.")


class Reload(Command):
    """Re-read the configuration file, as SIGHUP does."""

    NAME: ClassVar[str] = "reload"


class Snapshot(Command):
    """Publish a JPEG of a video source's latest frame on ``<prefix>/<dev>/<source>/snapshot``."""

    NAME: ClassVar[str] = "snapshot"

    source: Name = Field(description="Name of a video source.")
    quality: int = Field(80, ge=10, le=100, description="JPEG quality, 10..100.")
    max_side: int | None = Field(
        None, ge=16, le=8192, description="Downscale so the longest side is at most this, px."
    )


class EventSnapshot(Command):
    """Publish an ended event's stored JPEG on ``…/<pipeline>/events/<event_id>/snapshot``."""

    NAME: ClassVar[str] = "event_snapshot"

    # The id names files in the event store: only the daemon's own id alphabet.
    event_id: Annotated[str, Field(pattern=r"^[0-9A-Za-z_-]{1,64}$")] = Field(
        description="The event's `event_id` (from its `end` message)."
    )
    crop: bool = Field(False, description="The JPEG cropped to the box instead of the full frame.")


class ModelUpdate(Command):
    """Roll a catalog model out to a pipeline: fetch, evaluate, switch, probation (docs/rollout.md).

    The model is named from the device's catalog, never by path; a ``url``
    fetches another build of that model, verified against the pinned
    ``sha256``, and only where the operator allowed it (``[rollout] allow_urls``).
    """

    NAME: ClassVar[str] = "model_update"

    pipeline: Name = Field(description="Name of a detection or single-person pose pipeline.")
    model: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._@+-]+$")] = (
        Field(description="Catalog name of the candidate model.")
    )
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = Field(
        None,
        description="Pin the exact file: the download must have this SHA-256 (lowercase hex), "
        "else the rollout is refused and nothing changes.",
    )
    url: Annotated[str, Field(max_length=2048, pattern=r"^https?://[^\s]+$")] | None = Field(
        None,
        description="Fetch another build of the catalog model (same inputs, outputs, labels) "
        "from here; needs sha256, and [rollout] allow_urls = true on the device.",
    )

    @model_validator(mode="after")
    def _url_pinned(self) -> ModelUpdate:
        if self.url is not None and self.sha256 is None:
            raise ValueError("url needs sha256: a file from a URL is verified against it")
        return self


class Ping(Command):
    """Ask for the daemon's version and uptime."""

    NAME: ClassVar[str] = "ping"


#: Every command there is, by name.
COMMANDS: Final[dict[str, type[Command]]] = {
    c.NAME: c
    for c in (
        Enable,
        Disable,
        SetEnabled,
        SetThreshold,
        Reload,
        Snapshot,
        EventSnapshot,
        Ping,
        ModelUpdate,
    )
}


def show(value: object) -> str:
    """``repr`` of a client-supplied value, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= _SHOW_MAX else text[: _SHOW_MAX - 1] + "…"


def parse(command: str, payload: bytes) -> Command:
    """Validate ``payload`` as the command ``command``; raise :class:`CommandError` if it is not.

    An empty payload means ``{}`` (``mosquitto_pub -n`` sends one), which is
    a complete ``ping`` or ``reload``.
    """
    model = COMMANDS.get(command)
    if model is None:
        raise CommandError(
            "command", f"unknown command {show(command)}; commands: {', '.join(sorted(COMMANDS))}"
        )
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise CommandError(
            "payload", f"{len(payload)} bytes is more than the limit of {MAX_PAYLOAD_BYTES} bytes"
        )
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CommandError("payload", f"not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    try:
        return model.model_validate_json(text if text.strip() else "{}")
    except ValidationError as exc:
        first, *rest = (_describe(model, e) for e in exc.errors())
        more = "".join(f"; {f}: {p}" for f, p in rest[:3])
        raise CommandError(first[0], first[1] + more) from None


def _describe(model: type[Command], error: ErrorDetails) -> tuple[str, str]:
    """(field, problem) of one validation error, in the words of the protocol."""
    loc = error["loc"]
    field = ".".join(str(p) if str(p).isidentifier() else show(p) for p in loc) or "payload"
    kind = error["type"]
    if kind == "json_invalid":
        return field, f"not valid JSON ({error['msg'].removeprefix('Invalid JSON: ')})"
    if kind == "model_type":
        return field, f"must be a JSON object, not {_json_type(error['input'])}"
    if kind == "extra_forbidden":
        return field, f"unknown field; {model.NAME!r} takes {', '.join(model.model_fields)}"
    if kind == "missing":
        return field, "required"
    return field, f"{error['msg']}, got {show(error.get('input'))}"


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def encode_reply(doc: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON of a reply.

    Every string in a reply came from valid UTF-8 or from the daemon itself;
    ``backslashreplace`` only guards against a future path that lets a lone
    surrogate through, which would otherwise raise instead of replying.
    """
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode(
        "utf-8", "backslashreplace"
    )
