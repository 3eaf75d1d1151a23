"""The retained …/models/desired document: parsed strictly; applied at start like model_update."""

from __future__ import annotations

import json

import paho.mqtt.publish as publish
import pytest

from edged.catalog.catalog import load_catalog
from edged.rollout.desired import Want, parse
from tests.helpers.broker import RunningBroker
from tests.rollout.conftest import BASE, StartRollout
from tests.rollout.test_rollout_e2e import assert_no_gap, runs_of, wait_models, wait_phase

YOLOX = "yolox-nano-coco"
SSD = "ssd-mobilenet-v1-coco-int8"


def test_a_name_or_an_object_names_the_desired_model() -> None:
    """Both spellings parse; an empty payload (a cleared retained message) is no wish."""
    sha = "a" * 64
    assert parse(b'{"door": "yolox-nano-coco", "porch": {"model": "m", "sha256": "' + sha.encode()
                 + b'"}}') == {"door": Want(model=YOLOX), "porch": Want(model="m", sha256=sha)}  # fmt: skip
    assert parse(b"") == {}


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"[1]", "must be a JSON object"),
        (b"{", "not JSON"),
        (b'{"door": {"model": "../etc/passwd"}}', "door.model"),
        (b'{"door": {"model": "m", "sha256": "XYZ"}}', "door.sha256"),
        (b'{"door": {"model": "m", "url": "http://x"}}', "door"),
        (b'{"door": {"model": "m", "path": "/tmp/m.onnx"}}', "door.path"),
        (b'{"door": 5}', "door"),
    ],
)
def test_a_bad_document_is_refused_naming_where(payload: bytes, problem: str) -> None:
    """No path, no unpinned URL, no unknown field: the error names the pipeline and field."""
    with pytest.raises(ValueError, match="^" + problem.replace(".", r"\.")):
        parse(payload)


@pytest.mark.broker
def test_a_retained_desired_model_is_rolled_out_at_start(
    start_rollout_app: StartRollout, broker: RunningBroker
) -> None:
    """Retained before the daemon starts (a restart, say): the daemon converges to it."""
    host, port = broker.host, broker.port
    publish.single(
        f"{BASE}/models/desired",
        json.dumps({"door": YOLOX}),
        qos=1,
        retain=True,
        hostname=host,
        port=port,
    )
    running = start_rollout_app(require=["recall(person)>=0.5"])
    sub = running.broker.subscriber(f"{BASE}/#")
    done = wait_phase(sub, "done", timeout=60)
    assert done["to"] == {"name": YOLOX, "sha256": load_catalog().get(YOLOX).file.sha256}
    wait_models(sub, YOLOX)
    assert runs_of(assert_no_gap(sub))[-1] == YOLOX
