"""model_update with a url: another build of a catalog model, pinned, only where allowed.

A real HTTP server on loopback (the ``http_root`` fixture) serves the files;
the models are the real ones.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from edged.catalog.catalog import load_catalog
from edged.catalog.fetch import pull, sha256_file
from edged.control.commands import parse
from edged.errors import CommandError
from tests.rollout.conftest import BASE, StartRollout, phases
from tests.rollout.test_rollout_e2e import assert_no_gap, runs_of, wait_models, wait_phase

pytestmark = pytest.mark.broker

YOLOX = "yolox-nano-coco"
SSD = "ssd-mobilenet-v1-coco-int8"
YOLOX_SHA = load_catalog().get(YOLOX).file.sha256


def test_a_url_needs_a_sha256() -> None:
    """A file from a URL is verified against a pinned hash, or not fetched at all."""
    with pytest.raises(CommandError, match="url needs sha256"):
        parse("model_update", b'{"pipeline":"door","model":"m","url":"https://x/m.onnx"}')


def test_a_url_is_refused_unless_the_operator_allows_urls(
    start_rollout_app: StartRollout,
) -> None:
    """Default [rollout] allow_urls = false: refused naming the key; nothing published."""
    running = start_rollout_app()
    with running.client() as client:
        reply = client.request(
            "model_update",
            {"pipeline": "door", "model": YOLOX, "url": "http://127.0.0.1:9/y.onnx",
             "sha256": YOLOX_SHA},
        )  # fmt: skip
    assert reply["ok"] is False
    assert reply["error"].startswith("url: this device fetches no URL"), reply
    assert "allow_urls" in reply["error"]


def test_a_build_from_a_url_is_fetched_verified_and_switched_in(
    start_rollout_app: StartRollout,
    http_root: tuple[str, Path],
    model_mirror: Path,
) -> None:
    """allow_urls: the file comes from the URL (sha256-checked), results name it, no seq gap."""
    base, root = http_root
    shutil.copy(model_mirror / "yolox_nano.onnx", root / "build.onnx")
    running = start_rollout_app(rollout={"allow_urls": True})
    sub = running.broker.subscriber(f"{BASE}/#")
    wait_models(sub, SSD)
    with running.client() as client:
        reply = client.request(
            "model_update",
            {"pipeline": "door", "model": YOLOX, "url": f"{base}/build.onnx", "sha256": YOLOX_SHA},
            timeout=120,
        )
    assert reply["ok"] is True, reply
    wait_phase(sub, "done")
    wait_models(sub, YOLOX)
    assert runs_of(assert_no_gap(sub)) == [SSD, YOLOX]


def test_a_pinned_variant_never_replaces_the_catalog_file_and_a_bad_one_is_refused(
    start_rollout_app: StartRollout,
    http_root: tuple[str, Path],
    model_mirror: Path,
    fresh_models: Path,
) -> None:
    """A different build (here: a truncated file) lands under its own name; it fails to load:
    refused, SSD runs on, and the catalog's yolox_nano.onnx is untouched."""
    pull(load_catalog().get(YOLOX), fresh_models, mirror=model_mirror)
    base, root = http_root
    broken = (model_mirror / "yolox_nano.onnx").read_bytes()[:100_000]
    (root / "broken.onnx").write_bytes(broken)
    sha = hashlib.sha256(broken).hexdigest()
    running = start_rollout_app(rollout={"allow_urls": True})
    sub = running.broker.subscriber(f"{BASE}/#")
    wait_models(sub, SSD)
    with running.client() as client:
        reply = client.request(
            "model_update",
            {"pipeline": "door", "model": YOLOX, "url": f"{base}/broken.onnx", "sha256": sha},
            timeout=60,
        )
    assert reply["ok"] is False
    assert "load:" in reply["error"], reply
    assert phases(sub)[-1] == "refused"
    assert (fresh_models / f"yolox_nano-{sha[:12]}.onnx").is_file()
    assert sha256_file(fresh_models / "yolox_nano.onnx") == YOLOX_SHA
    seen = len(sub.messages(f"{BASE}/door/detections"))
    wait_models(sub, SSD, count=seen + 3)
    assert runs_of(assert_no_gap(sub)) == [SSD]
