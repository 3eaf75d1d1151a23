"""What the control plane works on: the runtime and a few collaborators the app hands over.

The control plane never sees the App: it gets the :class:`~edged.runtime.runtime.Runtime`
(the running graph, its lock and the emit gate) and, explicitly, the few
other things commands and metrics touch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edged.config.settings import Settings
    from edged.events.recorder import EventRecorder
    from edged.publish.mqtt import MqttClient
    from edged.publish.outbox import Outbox
    from edged.runtime.runtime import RequestReload, Runtime

#: ``model_update``: (pipeline, model, sha256, url) → the fields of its reply (docs/rollout.md).
ModelUpdate = Callable[[str, str, "str | None", "str | None"], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Wiring:
    """The control plane's collaborators."""

    runtime: Runtime
    mqtt: MqttClient
    outbox: Outbox
    #: The settings in force now (a reload replaces them).
    settings: Callable[[], Settings]
    #: When the daemon started (monotonic clock), for uptimes.
    started_mono: float
    #: Publish ``state`` when it changed (after a command changed a pipeline).
    publish_state: Callable[[], None]
    #: Reload the configuration through the main loop, as SIGHUP does.
    request_reload: RequestReload
    model_update: ModelUpdate
    #: Event media, None when ``[events]`` keeps none.
    recorder: EventRecorder | None
