"""Results out: topic names, payload models, the MQTT session (and, next, the outbox).

Pipelines build payloads (:mod:`edged.publish.payloads`) addressed by
:class:`~edged.publish.topics.Topics`; :class:`~edged.publish.mqtt.MqttClient`
puts them on the wire and reports PUBACKs.
"""

from edged.publish.mqtt import MqttClient
from edged.publish.payloads import (
    AnyResult,
    AudioResult,
    DetectionResult,
    EventResult,
    Message,
    ModelRef,
    OffloadResult,
    PoseResult,
    ResultEnvelope,
    State,
    Stats,
    Timing,
    payload_json_schemas,
)
from edged.publish.topics import ResultKind, Topics

__all__ = [
    "AnyResult",
    "AudioResult",
    "DetectionResult",
    "EventResult",
    "Message",
    "ModelRef",
    "MqttClient",
    "OffloadResult",
    "PoseResult",
    "ResultEnvelope",
    "ResultKind",
    "State",
    "Stats",
    "Timing",
    "Topics",
    "payload_json_schemas",
]
