"""Result and state payloads: the JSON of README "MQTT topics and payloads", rounding, ids and seq."""

from __future__ import annotations

import json
import math
import os
import time
import uuid

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from edged.publish.mqtt import OFFLINE, ONLINE, STOPPED
from edged.publish.payloads import (
    CommandRefusal,
    CommandReply,
    DetectionItem,
    DetectionResult,
    Message,
    ModelId,
    ModelRef,
    OffloadResult,
    ResultEnvelope,
    RolloutStatus,
    State,
    Timing,
    audio_result,
    detections_result,
    encode,
    iso_utc,
    new_id,
    payload_json_schemas,
    pose_result,
)
from edged.publish.topics import Topics
from edged.types import AudioClass, Detection, Frame, Keypoint, Pose

TOPICS = Topics("edged", "pi-kitchen")
MODEL = ModelRef(name="ssd-mobilenet-v1-coco-int8", sha256="ab" * 32)
TIMING = Timing(pre=1.2, infer=35.1, post=0.4)
TS = 1763768273.123  # 2025-11-21T23:37:53.123Z


def frame() -> Frame:
    return Frame(5321, TS, 0.0, "cam0", np.zeros((480, 640, 3), np.uint8))


def detection(box: tuple[float, float, float, float] = (0.12, 0.2, 0.45, 0.95)) -> Detection:
    return Detection("person", 0, 0.91, box)


def det_result(*detections: Detection) -> DetectionResult:
    return detections_result(
        device="pi-kitchen",
        pipeline="front",
        model=MODEL,
        frame=frame(),
        timing=TIMING,
        detections=detections or [detection()],
    )


def published(result: DetectionResult, seq: int = 1234) -> dict[str, object]:
    return json.loads(ResultEnvelope.of(TOPICS, result).with_seq(seq).payload)  # type: ignore[no-any-return]


def test_detection_json_matches_design_example() -> None:
    """A detection payload has the keys, order and values of the README "MQTT topics and payloads" example."""
    body = published(det_result())
    assert list(body) == [
        "v", "id", "seq", "ts", "device", "pipeline", "source",
        "model", "frame", "timing_ms", "detections",
    ]  # fmt: skip
    assert body["v"] == 1
    assert body["seq"] == 1234
    assert body["ts"] == "2025-11-21T23:37:53.123Z"
    assert body["model"] == {"name": "ssd-mobilenet-v1-coco-int8", "sha256": "ab" * 32}
    assert body["frame"] == {"id": 5321, "w": 640, "h": 480}
    assert body["timing_ms"] == {"pre": 1.2, "infer": 35.1, "post": 0.4}
    assert body["detections"] == [
        {
            "label": "person",
            "class_id": 0,
            "score": 0.91,
            "box": [0.12, 0.2, 0.45, 0.95],
            "zones": [],
        }
    ]


def test_json_is_compact() -> None:
    """The payload has no whitespace between tokens."""
    payload = ResultEnvelope.of(TOPICS, det_result()).with_seq(1).payload
    assert b": " not in payload
    assert b", " not in payload


def test_scores_boxes_and_timings_are_rounded() -> None:
    """Scores and box coordinates keep 4 decimals, timings 2."""
    r = detections_result(
        device="d",
        pipeline="p",
        model=MODEL,
        frame=frame(),
        timing=Timing(pre=1.23456, infer=2.0, post=0.001),
        detections=[Detection("cat", 15, 0.123456789, (0.1234567, 0.2, 0.3333333, 0.9))],
    )
    body = published(r)
    det = body["detections"][0]  # type: ignore[index]
    assert det["score"] == 0.1235
    assert det["box"] == [0.1235, 0.2, 0.3333, 0.9]
    assert body["timing_ms"] == {"pre": 1.23, "infer": 2.0, "post": 0.0}


def test_box_slight_overshoot_is_clamped() -> None:
    """A box reaching a little outside the frame is clamped to [0, 1]."""
    item = DetectionItem.of(detection((-0.02, 0.1, 1.003, 1.2)))
    assert item.box == (0.0, 0.1, 1.0, 1.0)


@pytest.mark.parametrize(
    "box",
    [(12.0, 30.0, 200.0, 310.0), (0.5, 0.1, 0.2, 0.9), (0.1, 0.9, 0.2, 0.3)],
    ids=["pixels", "x-reversed", "y-reversed"],
)
def test_box_not_normalized_refused(box: tuple[float, float, float, float]) -> None:
    """Pixel coordinates and reversed corners are refused, not published."""
    with pytest.raises(ValidationError, match="box"):
        DetectionItem.of(detection(box))


@given(
    st.lists(st.floats(0.0, 1.0), min_size=2, max_size=2).map(sorted),
    st.lists(st.floats(0.0, 1.0), min_size=2, max_size=2).map(sorted),
)
def test_normalized_box_survives_in_range(xs: list[float], ys: list[float]) -> None:
    """Any normalized box stays in [0, 1], ordered, within 5e-5 of the input."""
    box = DetectionItem.of(detection((xs[0], ys[0], xs[1], ys[1]))).box
    assert all(0.0 <= c <= 1.0 for c in box)
    assert box[0] <= box[2]
    assert box[1] <= box[3]
    assert all(abs(a - b) <= 5e-5 for a, b in zip(box, (xs[0], ys[0], xs[1], ys[1]), strict=True))


@pytest.mark.parametrize("score", [math.nan, math.inf, -0.1, 1.5])
def test_bad_score_refused(score: float) -> None:
    """NaN, infinite and out-of-range scores are refused (JSON cannot carry NaN)."""
    with pytest.raises(ValidationError):
        DetectionItem.of(Detection("person", 0, score, (0.1, 0.1, 0.2, 0.2)))


def test_id_is_uuid7_and_stable_across_retries() -> None:
    """The id is a time-ordered UUIDv7, fixed at build time and identical in every serialization."""
    env = ResultEnvelope.of(TOPICS, det_result())
    first, retry = env.with_seq(7), env.with_seq(7)
    assert first == retry
    assert first.id == env.id == json.loads(first.payload)["id"]
    assert uuid.UUID(env.id).version == 7
    assert new_id() != new_id()


def test_ids_are_time_ordered() -> None:
    """Ids made in later milliseconds sort after earlier ones."""
    ids = []
    for _ in range(3):
        ids.append(new_id())
        time.sleep(0.002)
    assert ids == sorted(ids)


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    """After fork the child draws other random bits than the parent (ids stay unique)."""
    random_bits = (1 << 74) - 1  # below the 48-bit ms timestamp and the version
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report one id and leave without running pytest's atexit
        os.write(write, new_id().encode())
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    assert os.waitstatus_to_exitcode(status) == 0
    parent = new_id()
    assert uuid.UUID(child).int & random_bits != uuid.UUID(parent).int & random_bits


def test_result_cannot_be_encoded_without_seq() -> None:
    """A result without seq cannot be serialized: seq is assigned on acceptance."""
    with pytest.raises(ValueError, match="seq"):
        encode(det_result())


def test_seq_is_assigned_once() -> None:
    """An envelope refuses a result that already carries a seq, and a negative seq."""
    sequenced = det_result().model_copy(update={"seq": 3})
    with pytest.raises(ValueError, match="already has a seq"):
        ResultEnvelope.of(TOPICS, sequenced)
    with pytest.raises(ValueError, match="non-negative"):
        ResultEnvelope.of(TOPICS, det_result()).with_seq(-1)


def test_envelope_message_is_qos1_not_retained_on_the_pipeline_topic() -> None:
    """The accepted message goes to <prefix>/<dev>/<pipeline>/detections, QoS 1, not retained."""
    msg = ResultEnvelope.of(TOPICS, det_result(), expiry_s=3600).with_seq(1)
    assert msg.topic == "edged/pi-kitchen/front/detections"
    assert (msg.qos, msg.retain, msg.expiry_s) == (1, False, 3600)


def test_published_payload_parses_back() -> None:
    """Consumers can validate a published payload with the same model."""
    msg = ResultEnvelope.of(TOPICS, det_result()).with_seq(42)
    parsed = DetectionResult.model_validate_json(msg.payload)
    assert parsed.seq == 42
    assert parsed.id == msg.id


def test_pose_payload_shape() -> None:
    """A pose payload carries poses with score, box and named keypoints clamped to the frame."""
    pose = Pose(0.8, (0.1, 0.1, 0.5, 0.9), (Keypoint("nose", 0.3, -0.2, 0.95),))
    r = pose_result(
        device="d", pipeline="p", model=MODEL, frame=frame(), timing=TIMING, poses=[pose]
    )
    body = json.loads(ResultEnvelope.of(TOPICS, r).with_seq(1).payload)
    assert body["poses"] == [
        {
            "score": 0.8,
            "box": [0.1, 0.1, 0.5, 0.9],
            "keypoints": [{"name": "nose", "x": 0.3, "y": 0.0, "score": 0.95}],
        }
    ]


def test_audio_payload_shape() -> None:
    """An audio payload has a window and top-k classes, and no frame."""
    r = audio_result(
        device="d",
        pipeline="yard",
        source="mic0",
        model=MODEL,
        window_start=TS,
        window_s=0.975,
        timing=TIMING,
        classes=[AudioClass("Speech", 0, 0.83), AudioClass("Dog", 69, 0.1)],
    )
    body = json.loads(ResultEnvelope.of(TOPICS, r).with_seq(1).payload)
    assert body["window"] == {"start": "2025-11-21T23:37:53.123Z", "duration_s": 0.975}
    assert body["classes"][0] == {"label": "Speech", "class_id": 0, "score": 0.83}
    assert "frame" not in body
    assert ResultEnvelope.of(TOPICS, r).topic == "edged/pi-kitchen/yard/audio"


def test_offload_verdict_refers_to_local_result() -> None:
    """An offload verdict has ref = the local id, its own id, and exactly one verdict list."""
    local = det_result()

    def verdict_on(local: DetectionResult, detections: list[DetectionItem] | None) -> OffloadResult:
        # As the offload service builds it: the local result's identity, ref = its id.
        return OffloadResult(
            ts=local.ts,
            device=local.device,
            pipeline=local.pipeline,
            source=local.source,
            ref=local.id,
            model=MODEL,
            frame=local.frame,
            detections=detections,
        )

    verdict = verdict_on(local, detections=[DetectionItem.of(detection())])
    body = json.loads(ResultEnvelope.of(TOPICS, verdict).with_seq(2).payload)
    assert body["ref"] == local.id
    assert body["id"] != local.id
    assert body["frame"] == {"id": 5321, "w": 640, "h": 480}
    assert "poses" not in body
    assert ResultEnvelope.of(TOPICS, verdict).topic == "edged/pi-kitchen/front/offload"
    with pytest.raises(ValidationError, match="exactly one"):
        verdict_on(local, None)


def test_state_payload() -> None:
    """The state payload lists pipelines with status and reason, compactly."""
    state = State(
        ts=iso_utc(TS),
        device="pi-kitchen",
        version="0.1.0",
        uptime_s=12.345,
        pipelines={"door": {"status": "disabled", "reason": "model missing"}},  # type: ignore[dict-item]
    )
    body = json.loads(encode(state))
    assert body["uptime_s"] == 12.3
    assert body["pipelines"] == {"door": {"status": "disabled", "reason": "model missing"}}
    assert body["link"] == {"status": "disabled"}
    with pytest.raises(ValidationError):
        State.model_validate({**body, "pipelines": {"door": {"status": "sleeping"}}})


def test_json_schemas_for_docs() -> None:
    """Schemas exist for every published JSON payload, with seq a required integer."""
    schemas = payload_json_schemas()
    assert set(schemas) == {
        "detections",
        "pose",
        "audio",
        "offload",
        "events",
        "state",
        "stats",
        "zone",
        "rollout",
        "reply",
    }
    det = schemas["detections"]
    assert det["required"][:3] == ["v", "id", "seq"]
    assert det["properties"]["seq"]["type"] == "integer"
    assert "from" in schemas["rollout"]["properties"]  # by its alias, as published
    json.dumps(schemas)  # serializable as-is


def test_availability_payloads_are_the_bare_words() -> None:
    """The availability constants the client publishes are the plain words of ``Availability``."""
    assert (ONLINE, STOPPED, OFFLINE) == (b"online", b"stopped", b"offline")


PING = {"ok": True, "command": "ping", "id": "r1", "device": "pi", "version": "1", "uptime_s": 2.5}


def test_command_reply_refuses_a_field_its_command_does_not_name() -> None:
    """A reply field added in a command without adding it to its model is refused."""
    CommandReply.model_validate(PING)
    with pytest.raises(ValidationError, match="extra"):
        CommandReply.model_validate({**PING, "extra": 1})
    with pytest.raises(ValidationError, match="pipeline"):  # a ping reply is no toggle reply
        CommandReply.model_validate({**PING, "pipeline": "door"})


def test_command_reply_success_needs_a_known_command_and_a_refusal_an_error() -> None:
    """ok=true without a command (or an unknown one) is refused; ok=false needs '<field>: …'."""
    for doc in ({"ok": True}, {"ok": True, "command": "reboot"}):
        with pytest.raises(ValidationError):
            CommandReply.model_validate(doc)
    refusal = CommandReply.model_validate({"ok": False, "error": "command: unknown command 'x'"})
    assert isinstance(refusal.root, CommandRefusal)
    assert refusal.root.command is None
    for error in ("", "no field named"):
        with pytest.raises(ValidationError, match="error"):
            CommandReply.model_validate({"ok": False, "command": "ping", "error": error})


def _status() -> RolloutStatus:
    return RolloutStatus(
        ts=iso_utc(TS),
        device="pi-kitchen",
        pipeline="door",
        from_=ModelId(name="ssd-mobilenet-v1-coco-int8", sha256="ab" * 32),
        to=ModelId(name="yolox-nano-coco"),
        phase="downloading",
    )


def test_rollout_status_is_v_first_with_from_by_its_alias() -> None:
    """The retained rollout document leads with v and names the previous model ``from``."""
    body = json.loads(_status().encode())
    assert next(iter(body)) == "v"
    assert body["from"]["name"] == "ssd-mobilenet-v1-coco-int8"
    assert body["to"] == {"name": "yolox-nano-coco", "sha256": ""}
    assert RolloutStatus.model_validate(body) == _status()


def test_rollout_status_refuses_unknown_keys_and_bad_values() -> None:
    """An unknown key, an invalid timestamp or sha256, or an unknown phase is refused."""
    body = json.loads(_status().encode())
    for key, value in [
        ("extra", 1),
        ("ts", ""),
        ("phase", "paused"),
        ("to", {"name": "x", "sha256": "abc"}),
        ("probation", {"frames": 1.0, "seconds": 2.0}),
    ]:
        with pytest.raises(ValidationError, match=key):
            RolloutStatus.model_validate({**body, key: value})


def test_message_validates_qos_and_expiry() -> None:
    """A Message refuses an invalid QoS or a non-positive expiry."""
    with pytest.raises(ValueError, match="qos"):
        Message("t", b"", qos=3)
    with pytest.raises(ValueError, match="expiry_s"):
        Message("t", b"", expiry_s=0)
