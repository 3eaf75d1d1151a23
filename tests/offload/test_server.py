"""The reference server, ``edged cloud serve``, over TLS on loopback: auth, limits, answers."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from edged.errors import EX_CONFIG
from edged.offload.protocol import DetectRequest, DetectResponse, FrameSize
from edged.preprocess.jpeg import WHOLE, crop_region, prepare
from edged.types import Box, iou
from tests.helpers.broker import TlsMaterial
from tests.helpers.vision import read_rgb
from tests.offload.conftest import TOKEN
from tests.offload.servers import CloudServer


def call(
    server: CloudServer,
    ca: Path,
    path: str,
    body: bytes | None = None,
    *,
    token: str = TOKEN,
    content_type: str = "application/json",
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """Status, headers and JSON body of one request."""
    req = urllib.request.Request(server.url + path, data=body, method="POST" if body else "GET")
    req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Content-Type", content_type)
    ctx = ssl.create_default_context(cafile=str(ca))
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def detect_request(image_path: Path, region: Box = WHOLE) -> DetectRequest:
    rgb = read_rgb(image_path)
    p = prepare(rgb, region, max_side=640, quality=90)
    return DetectRequest(
        device="dev",
        pipeline="door",
        ref="ref-1",
        frame=FrameSize(w=rgb.shape[1], h=rgb.shape[0]),
        crop=p.crop,
        labels=["person"],
        threshold=0.5,
        image=base64.b64encode(p.jpeg).decode(),
    )


def detect(server: CloudServer, ca: Path, req: DetectRequest) -> DetectResponse:
    status, _, body = call(server, ca, "/v1/detect", req.model_dump_json().encode())
    assert status == 200, body
    return DetectResponse.model_validate(body)


class TestReferenceServer:
    """``edged cloud serve --model yolox-nano-coco`` with the test CA's certificate."""

    def test_health_names_the_model(
        self, cloud_server: CloudServer, tls_material: TlsMaterial
    ) -> None:
        status, _, body = call(cloud_server, tls_material.ca, "/health")
        assert status == 200
        assert body["model"]["name"] == "yolox-nano-coco"

    def test_a_wrong_token_gets_401_as_json(
        self, cloud_server: CloudServer, tls_material: TlsMaterial
    ) -> None:
        status, headers, body = call(cloud_server, tls_material.ca, "/health", token="nope")
        assert status == 401
        assert headers["WWW-Authenticate"] == "Bearer"
        assert body["error"]["code"] == "unauthorized"

    def test_a_crop_comes_back_in_original_frame_coordinates(
        self, cloud_server: CloudServer, tls_material: TlsMaterial, media_dir: Path
    ) -> None:
        photo = media_dir / "people_group.jpg"
        whole = detect(cloud_server, tls_material.ca, detect_request(photo))
        assert {d.label for d in whole.detections} == {"person"}  # labels of interest only
        target = whole.detections[0].box
        region = crop_region([target], 0.3)
        cropped = detect(cloud_server, tls_material.ca, detect_request(photo, region))
        assert cropped.ref == "ref-1"
        best = max(iou(target, d.box) for d in cropped.detections)
        assert best > 0.8, (target, cropped.detections)
        for d in cropped.detections:  # inside the crop, in whole-frame coordinates
            assert region[0] - 0.01 <= d.box[0] <= d.box[2] <= region[2] + 0.01

    def test_an_oversize_body_is_refused_before_it_is_sent(
        self, cloud_server: CloudServer, tls_material: TlsMaterial
    ) -> None:
        ctx = ssl.create_default_context(cafile=str(tls_material.ca))
        with (
            socket.create_connection(("127.0.0.1", cloud_server.port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
        ):
            t0 = time.monotonic()
            sock.sendall(
                b"POST /v1/detect HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                + f"Authorization: Bearer {TOKEN}\r\n".encode()
                + b"Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n{"
            )
            answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
        assert time.monotonic() - t0 < 3.0
        assert b'"too_large"' in answer

    def test_requests_that_are_not_v1_get_400_with_the_field(
        self, cloud_server: CloudServer, tls_material: TlsMaterial, media_dir: Path
    ) -> None:
        req = detect_request(media_dir / "grace_hopper.jpg")
        bad = req.model_dump() | {"threshold": 2}
        status, _, body = call(
            cloud_server, tls_material.ca, "/v1/detect", json.dumps(bad).encode()
        )
        assert status == 400
        assert body["error"]["message"].startswith("threshold")
        not_jpeg = req.model_dump() | {"image": base64.b64encode(b"not a jpeg").decode()}
        status, _, body = call(
            cloud_server, tls_material.ca, "/v1/detect", json.dumps(not_jpeg).encode()
        )
        assert status == 400
        assert "JPEG" in body["error"]["message"]

    def test_other_media_types_and_paths_are_json_errors(
        self, cloud_server: CloudServer, tls_material: TlsMaterial
    ) -> None:
        status, _, body = call(
            cloud_server, tls_material.ca, "/v1/detect", b"x", content_type="image/jpeg"
        )
        assert (status, body["error"]["code"]) == (415, "unsupported_media_type")
        status, _, body = call(cloud_server, tls_material.ca, "/v2/detect")
        assert (status, body["error"]["code"]) == (404, "not_found")

    def test_the_cli_refuses_to_serve_without_a_token(self, models_dir: Path) -> None:
        # A child process: main() configures logging, which must not leak into other tests.
        done = subprocess.run(
            [sys.executable, "-m", "edged", "cloud", "serve", "--models-dir", str(models_dir)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == EX_CONFIG
        assert "--token-file" in done.stderr

    def test_the_cli_refuses_limits_that_are_not_positive(self, models_dir: Path) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "edged", "cloud", "serve", "--models-dir", str(models_dir),
             "--max-pixels", "0", "--header-timeout-s", "nan"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == EX_CONFIG
        assert "--max-pixels" in done.stderr
        assert "--header-timeout-s" in done.stderr
