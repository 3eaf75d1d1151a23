"""``edged cloud serve``: the reference cloud model server (docs/cloud-protocol.md).

It runs a larger model with edged's own catalog, runtimes and decoders (the
same :class:`~edged.tasks.detection.DetectionTask` a device runs), so a user
can self-host "the cloud" and the tests run it on loopback.

Built on aiohttp: a mature, actively released asyncio HTTP server in one
package (no separate ASGI server to pick and configure), with a request body
limit built in. Inference runs in one worker thread so the event loop keeps
answering ``/health`` and refusing bad requests while a frame is processed.

Guards, in the order a request meets them: JSON errors for everything
(middleware), the bearer token compared in constant time, a body over the
limit refused with 413 from its Content-Length before a byte of it is read
(and aiohttp's ``client_max_size`` for bodies without one), then validation.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import ssl
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import structlog
from aiohttp import web
from pydantic import ValidationError

from edged.catalog.catalog import Catalog
from edged.catalog.resolve import resolve
from edged.errors import ConfigError, EdgedError
from edged.infer.registry import load_model
from edged.offload.protocol import (
    DETECT_PATH,
    HEALTH_PATH,
    DetectRequest,
    DetectResponse,
    ErrorBody,
    ErrorDetail,
    Health,
    crop_to_frame,
)
from edged.publish.payloads import DetectionItem, ModelRef, Timing
from edged.settings import PipelineSettings, Settings, read_secret
from edged.tasks.detection import DetectionTask
from edged.types import Detection, Frame

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadRequestError(EdgedError):
    """The request was well-formed HTTP but not a usable detect request."""


def error(status: int, code: str, message: str) -> web.Response:
    """A JSON error answer (the protocol's ErrorBody)."""
    body = ErrorBody(error=ErrorDetail(code=code, message=message))
    return web.json_response(text=body.model_dump_json(), status=status)


class Detector:
    """One loaded model answering detect requests, one at a time."""

    def __init__(self, task: DetectionTask, model: ModelRef) -> None:
        self._task = task
        self.model = model

    def __call__(self, req: DetectRequest) -> DetectResponse:
        try:
            jpeg = base64.b64decode(req.image, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequestError("image is not valid base64") from None
        bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise BadRequestError("image is not a decodable JPEG")
        rgb = np.ascontiguousarray(bgr[:, :, ::-1], dtype=np.uint8)
        frame = Frame(id=0, ts=time.time(), mono=time.monotonic(), source="cloud", image=rgb)
        result = self._task(frame, req.threshold)
        wanted = set(req.labels)
        # The image is the crop; boxes are mapped back onto the original frame.
        items = [
            DetectionItem(
                label=d.label,
                class_id=d.class_id,
                score=d.score,
                box=crop_to_frame(d.box, req.crop),
            )
            for d in result.items
            if isinstance(d, Detection) and (not wanted or d.label in wanted)
        ]
        t = result.timing
        return DetectResponse(
            ref=req.ref,
            model=self.model,
            timing_ms=Timing(pre=t.pre, infer=t.infer, post=t.post),
            detections=items,
        )


def build_app(detector: Detector, token: str, *, max_body: int) -> web.Application:
    """The aiohttp application: ``GET /health`` and ``POST /v1/detect``, both behind the token."""
    expected = token.encode()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cloud-infer")

    @web.middleware
    async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:  # 404, 405, aiohttp's own 413…
            code = exc.reason.lower().replace(" ", "_")
            return error(exc.status, code, exc.reason)
        except Exception:  # a failed inference is the server's fault, and still JSON
            log.exception("cloud_request_failed", path=request.path)
            return error(500, "internal", "the server failed to process the request")

    @web.middleware
    async def bearer(request: web.Request, handler: Handler) -> web.StreamResponse:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # Constant-time comparison: the answer's timing must not reveal a prefix.
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            resp = error(401, "unauthorized", "missing or wrong bearer token")
            resp.headers["WWW-Authenticate"] = "Bearer"
            return resp
        return await handler(request)

    async def health(_request: web.Request) -> web.Response:
        return web.json_response(text=Health(model=detector.model).model_dump_json())

    async def detect(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > max_body:
            return error(
                413, "too_large", f"body of {request.content_length} bytes (max {max_body})"
            )
        if request.content_type != "application/json":
            return error(415, "unsupported_media_type", "send application/json")
        try:
            req = DetectRequest.model_validate_json(await request.read())
        except web.HTTPRequestEntityTooLarge:
            return error(413, "too_large", f"body over {max_body} bytes")
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            return error(400, "bad_request", f"{where}: {first['msg']}")
        try:
            answer = await asyncio.get_running_loop().run_in_executor(pool, detector, req)
        except BadRequestError as exc:
            return error(400, "bad_request", str(exc))
        log.debug(
            "cloud_detect", device=req.device, pipeline=req.pipeline, n=len(answer.detections)
        )
        return web.json_response(text=answer.model_dump_json())

    async def close_pool(_app: web.Application) -> None:
        pool.shutdown(wait=False, cancel_futures=True)

    app = web.Application(middlewares=[json_errors, bearer], client_max_size=max_body)
    app.router.add_get(HEALTH_PATH, health)
    app.router.add_post(DETECT_PATH, detect)
    app.on_cleanup.append(close_pool)
    return app


@dataclass(frozen=True)
class ServeOptions:
    """What ``edged cloud serve`` was asked to do."""

    model: str
    host: str
    port: int
    token_file: Path | None
    cert: Path | None
    key: Path | None
    threads: int
    max_body_mb: float
    decoder: str = ""


def load_detector(options: ServeOptions, settings: Settings, catalog: Catalog) -> Detector:
    """Resolve, verify, load and warm up the model, as a device pipeline would."""
    spec = PipelineSettings(
        name="cloud",
        source="cloud",
        task="detection",
        model=options.model,
        decoder=options.decoder,
        threads=options.threads,
    )
    resolved = resolve(spec, settings, catalog)
    model = load_model(resolved.path, runtime=resolved.runtime, threads=options.threads)
    task = DetectionTask(resolved, model)
    return Detector(task, ModelRef(name=resolved.name, sha256=resolved.sha256))


def tls_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """A server TLS context from ``cert`` + ``key``, or None for plain HTTP."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigError([("--cert/--key", "give both the certificate and its key, or neither")])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError([("--cert/--key", f"cannot load {cert} / {key}: {exc}")]) from None
    return context


def serve(options: ServeOptions, settings: Settings, catalog: Catalog) -> None:
    """Run the server until SIGINT/SIGTERM."""
    token = read_secret(options.token_file, "cloud_token")
    if not token:
        raise ConfigError([("--token-file", "a bearer token is required (file or credential)")])
    context = tls_context(options.cert, options.key)
    detector = load_detector(options, settings, catalog)
    app = build_app(detector, token, max_body=int(options.max_body_mb * 1_000_000))
    scheme = "https" if context is not None else "http"
    if context is None:
        log.warning("cloud_plain_http", problem="no --cert/--key: devices only speak https")
    log.info(
        "cloud_serving",
        url=f"{scheme}://{options.host}:{options.port}",
        model=detector.model.name,
    )
    web.run_app(
        app,
        host=options.host,
        port=options.port,
        ssl_context=context,
        print=None,
        access_log=None,
        shutdown_timeout=2.0,
    )
