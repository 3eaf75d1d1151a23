"""The retained ``<prefix>/<dev>/models/desired`` document: the models a fleet wants a device to run.

The fleet publishes, retained, per device::

    {"door": "yolox-nano-coco", "porch": {"model": "ssd-mobilenet-v1-coco-int8", "sha256": "e4b1…"}}

The daemon receives it at every (re)connect and whenever it changes, and
rolls each pipeline whose model differs through exactly the steps of
``model_update`` (fetch, bar, switch, probation), one pipeline after the
other. Because the document is retained, a restart or a reload (which start
from the configured models) converges to it again. It takes the same
permission as the command: ``model_update`` in ``[commands] allow``; without
it the document is logged and ignored. A model that was refused or rolled
back is not retried until the document changes, or the next reload or restart.
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Annotated

import structlog
from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError, model_validator

from edged.errors import CommandError, EdgedError
from edged.publish.mqtt import RequestProperties

if TYPE_CHECKING:
    from edged.rollout.manager import RolloutManager

log = structlog.get_logger(__name__)

#: Larger documents are refused unread (a device has a handful of pipelines).
MAX_BYTES = 16 * 1024


class Want(BaseModel):
    """One pipeline's desired model."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    model: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._@+-]+$")]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    #: Another build of the catalog model, as model_update's url ([rollout] allow_urls).
    url: Annotated[str, Field(max_length=2048, pattern=r"^https?://[^\s]+$")] | None = None

    @model_validator(mode="after")
    def _url_pinned(self) -> Want:
        if self.url is not None and self.sha256 is None:
            raise ValueError("url needs sha256")
        return self


class Desired(RootModel[dict[str, Want]]):
    """Pipeline name → its desired model."""


def parse(payload: bytes) -> dict[str, Want]:
    """The document as ``{pipeline: Want}``; ValueError naming what is wrong. Empty = none."""
    if not payload.strip():
        return {}
    if len(payload) > MAX_BYTES:
        raise ValueError(f"{len(payload)} bytes is more than {MAX_BYTES}")
    try:
        raw = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError("must be a JSON object: pipeline name → model")
    spelled = {k: {"model": v} if isinstance(v, str) else v for k, v in raw.items()}
    try:
        return Desired.model_validate(spelled).root
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{where}: {first['msg']}") from None


class DesiredWatch:
    """Receives the document (on paho's thread) and applies it (on its own thread)."""

    def __init__(self, manager: RolloutManager) -> None:
        self._m = manager
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._doc: dict[str, Want] = {}
        self._tried: set[tuple[str, str, str | None, str | None]] = set()
        self._thread = threading.Thread(target=self._loop, name="rollout-desired", daemon=True)

    def start(self) -> None:
        app = self._m._app
        self._thread.start()
        app.mqtt.subscribe(app.mqtt.topics.rollout_desired, self._on_message, qos=1)

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def reapply(self) -> None:
        """After a reload: the configured models run again; converge to the document anew."""
        with self._lock:
            self._tried.clear()
        self._wake.set()

    def _on_message(self, _topic: str, payload: bytes, _props: RequestProperties) -> None:
        try:
            doc = parse(payload)
        except ValueError as exc:
            log.warning("rollout.desired_invalid", error=str(exc))
            return
        with self._lock:
            self._doc = doc
            self._tried.clear()
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            try:
                self._apply()
            except Exception:
                log.exception("rollout.desired_failed")

    def _apply(self) -> None:
        app = self._m._app
        with self._lock:
            doc = dict(self._doc)
        if not doc:
            return
        if "model_update" not in app.settings.commands.allow:
            log.warning("rollout.desired_not_allowed", pipelines=sorted(doc),
                        fix='add "model_update" to [commands] allow')  # fmt: skip
            return
        for name, want in sorted(doc.items()):
            key = (name, want.model, want.sha256, want.url)
            with app.runtime.lock:
                running = app.graph.models.get(name)
            if running is None:
                log.warning("rollout.desired_unknown_pipeline", pipeline=name)
                continue
            resolved = running[0]
            if resolved.name == want.model and want.sha256 in (None, resolved.sha256):
                continue
            with self._lock:
                if key in self._tried:
                    continue
                self._tried.add(key)
            # One rollout at a time: wait for one in progress (e.g. a probation).
            while not self._stop.is_set() and self._m.busy():
                self._stop.wait(0.5)
            if self._stop.is_set():
                return
            try:
                self._m.update(name, want.model, want.sha256, want.url)
            except (CommandError, EdgedError) as exc:
                log.warning("rollout.desired_refused", pipeline=name, model=want.model,
                            error=str(exc))  # fmt: skip
