"""model_update end to end: real App, real mosquitto, real models copied from the mirror.

The pipeline ``door`` runs SSD-MobileNet (int8, LiteRT); the candidate is
YOLOX-nano (ONNX Runtime). Both detect people, so a bar on
``recall(person)`` is one both can meet on the golden set.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from edged.catalog.catalog import load_catalog
from tests.helpers.broker import Subscriber
from tests.rollout.conftest import (
    BASE,
    DETECTIONS,
    StartRollout,
    docs,
    phases,
    statuses,
)
from tests.rollout.doubles import SlowInPipelines

pytestmark = pytest.mark.broker

CATALOG = load_catalog()
SSD = CATALOG.get("ssd-mobilenet-v1-coco-int8").file.sha256
YOLOX = CATALOG.get("yolox-nano-coco").file.sha256


def wait_phase(sub: Subscriber, phase: str, timeout: float = 30.0) -> dict[str, Any]:
    """The first rollout status in ``phase``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for doc in statuses(sub):
            if doc["phase"] == phase:
                return doc
        time.sleep(0.05)
    raise AssertionError(f"no rollout status {phase!r} in {timeout} s; seen {phases(sub)}")


def wait_models(sub: Subscriber, name: str, count: int = 3, timeout: float = 30.0) -> None:
    """Wait until ``count`` results of model ``name`` arrived."""
    deadline = time.monotonic() + timeout
    while sum(d["model"]["name"] == name for d in docs(sub, DETECTIONS)) < count:
        assert time.monotonic() < deadline, f"fewer than {count} results of {name}"
        time.sleep(0.05)


def assert_no_gap(sub: Subscriber) -> list[tuple[str, str]]:
    """``seq`` of the results is gap-free; returns the models of the results in ``seq`` order."""
    results = sorted(docs(sub, DETECTIONS), key=lambda d: d["seq"])
    seqs = [d["seq"] for d in results]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    return [(d["model"]["name"], d["model"]["sha256"]) for d in results]


def runs_of(models: list[tuple[str, str]]) -> list[str]:
    """Consecutive model names collapsed: ``[a, a, b, b, a]`` → ``[a, b, a]``."""
    out: list[str] = []
    for name, _ in models:
        if not out or out[-1] != name:
            out.append(name)
    return out


def test_a_model_that_clears_the_bar_is_switched_in_without_a_gap(
    start_rollout_app: StartRollout, fresh_models: Path
) -> None:
    """(a) The candidate is fetched, clears the bar, is switched in; seq has no gap."""
    running = start_rollout_app(require=["recall(person)>=0.5"])
    sub = running.broker.subscriber(f"{BASE}/#")
    wait_models(sub, "ssd-mobilenet-v1-coco-int8")
    with running.client() as client:
        reply = client.request(
            "model_update", {"pipeline": "door", "model": "yolox-nano-coco"}, timeout=120
        )
    assert reply["ok"] is True, reply
    assert reply["phase"] == "probation"
    assert reply["from"] == {"name": "ssd-mobilenet-v1-coco-int8", "sha256": SSD}
    assert reply["to"] == {"name": "yolox-nano-coco", "sha256": YOLOX}
    assert reply["metrics"]["recall(person)"] >= 0.5
    # Copied from the mirror, verified, into the device's models dir.
    assert (fresh_models / "yolox_nano.onnx").is_file()
    done = wait_phase(sub, "done")
    assert done["pipeline"] == "door"
    wait_models(sub, "yolox-nano-coco")
    models = assert_no_gap(sub)
    assert runs_of(models) == ["ssd-mobilenet-v1-coco-int8", "yolox-nano-coco"]
    assert ("yolox-nano-coco", YOLOX) in models
    assert phases(sub) == ["downloading", "evaluating", "evaluating", "probation", "done"]
    state = running.app.state_payload()
    assert state.models["yolox-nano-coco"].sha256 == YOLOX
    assert "ssd-mobilenet-v1-coco-int8" not in state.models


def test_a_wrong_sha256_is_refused_and_nothing_changes(
    start_rollout_app: StartRollout, fresh_models: Path
) -> None:
    """(b) A pinned sha256 the download does not have: refused, no file installed, SSD runs on."""
    running = start_rollout_app()
    sub = running.broker.subscriber(f"{BASE}/#")
    wait_models(sub, "ssd-mobilenet-v1-coco-int8")
    with running.client() as client:
        reply = client.request(
            "model_update",
            {"pipeline": "door", "model": "yolox-nano-coco", "sha256": "0" * 64},
            timeout=60,
        )
    assert reply["ok"] is False
    assert reply["phase"] == "refused"
    assert "sha256 mismatch" in reply["error"], reply
    refused = wait_phase(sub, "refused")
    assert "sha256 mismatch" in refused["reason"]
    assert not (fresh_models / "yolox_nano.onnx").exists()
    seen = len(docs(sub, DETECTIONS))
    wait_models(sub, "ssd-mobilenet-v1-coco-int8", count=seen + 3)
    assert runs_of(assert_no_gap(sub)) == ["ssd-mobilenet-v1-coco-int8"]


def test_a_model_that_misses_the_bar_is_refused_with_the_reason(
    start_rollout_app: StartRollout,
) -> None:
    """(c) The candidate loads but cannot meet the pipeline's require: refused, reason published."""
    running = start_rollout_app(require=["recall(person)>=0.5", "p95_ms<=0.01"])
    sub = running.broker.subscriber(f"{BASE}/#")
    wait_models(sub, "ssd-mobilenet-v1-coco-int8")
    with running.client() as client:
        reply = client.request(
            "model_update", {"pipeline": "door", "model": "yolox-nano-coco"}, timeout=120
        )
    assert reply["ok"] is False
    assert "fails the bar" in reply["error"], reply
    assert "needs <=0.01" in reply["error"], reply
    refused = wait_phase(sub, "refused")
    assert refused["to"]["sha256"] == YOLOX
    assert refused["metrics"]["p95_ms"] > 0.01
    assert "p95_ms=" in refused["reason"]
    seen = len(docs(sub, DETECTIONS))
    wait_models(sub, "ssd-mobilenet-v1-coco-int8", count=seen + 3)
    assert runs_of(assert_no_gap(sub)) == ["ssd-mobilenet-v1-coco-int8"]


def test_a_model_over_its_latency_budget_in_probation_is_rolled_back(
    start_rollout_app: StartRollout,
) -> None:
    """(d) Clears the bar, then runs over max_latency_ms live: rolled back to SSD, seq no gap."""
    running = start_rollout_app(
        rollout={"probation_s": 20}, require=["recall(person)>=0.5"], max_latency_ms=400
    )
    # The documented test hook (edged.rollout.manager.ModelWrapper).
    running.app.rollout.wrap_model = lambda m: SlowInPipelines(m, 0.6)
    sub = running.broker.subscriber(f"{BASE}/#")
    wait_models(sub, "ssd-mobilenet-v1-coco-int8")
    with running.client() as client:
        reply = client.request(
            "model_update", {"pipeline": "door", "model": "yolox-nano-coco"}, timeout=120
        )
    assert reply["ok"] is True, reply
    assert reply["phase"] == "probation", reply
    assert reply["metrics"]["p95_ms"] <= 400
    back = wait_phase(sub, "rolled_back", timeout=20)
    assert "latency p95" in back["reason"], back
    assert "max_latency_ms=400" in back["reason"], back
    assert back["probation"]["latency_p95_ms"] > 400
    seen = len(docs(sub, DETECTIONS))
    wait_models(sub, "ssd-mobilenet-v1-coco-int8", count=seen + 3)
    models = assert_no_gap(sub)
    assert runs_of(models) == [
        "ssd-mobilenet-v1-coco-int8",
        "yolox-nano-coco",
        "ssd-mobilenet-v1-coco-int8",
    ]
    assert "yolox-nano-coco" not in running.app.state_payload().models


def test_a_reload_during_probation_ends_the_rollout_with_the_configured_model(
    start_rollout_app: StartRollout,
) -> None:
    """A reload rebuilds the pipeline from the file: the rollout says so; results go on."""
    running = start_rollout_app(rollout={"probation_s": 30})
    sub = running.broker.subscriber(f"{BASE}/#")
    wait_models(sub, "ssd-mobilenet-v1-coco-int8")
    with running.client() as client:
        reply = client.request(
            "model_update", {"pipeline": "door", "model": "yolox-nano-coco"}, timeout=120
        )
        assert reply["phase"] == "probation", reply
        wait_models(sub, "yolox-nano-coco")
        assert client.request("reload", timeout=60)["applied"] is True
    ended = wait_phase(sub, "rolled_back", timeout=10)
    assert "reload" in ended["reason"]
    seen = len(docs(sub, DETECTIONS))
    wait_models(sub, "ssd-mobilenet-v1-coco-int8", count=seen + 3)
    # The next rollout is not blocked by the one the reload ended.
    with running.client() as client:
        again = client.request(
            "model_update", {"pipeline": "door", "model": "yolox-nano-coco"}, timeout=120
        )
    assert again["ok"] is True, again
