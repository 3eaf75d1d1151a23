"""``edged cloud serve``: the reference cloud model server (docs/cloud-protocol.md).

It runs a larger model with edged's own catalog, runtimes and decoders (the
same :class:`~edged.tasks.detection.DetectionTask` a device runs), so a user
can self-host "the cloud" and the tests run it on loopback.

Built on aiohttp: a mature, actively released asyncio HTTP server in one
package (no separate ASGI server to pick and configure), with a request body
limit built in. Inference runs in one worker thread so the event loop keeps
answering ``/health`` and refusing bad requests while a frame is processed.

Guards, in the order a request meets them: a connection cap and a deadline
to send an authenticated request (:mod:`~edged.offload.guard`, which accepts
the connections itself), JSON errors for everything (middleware), the bearer
token compared in constant time before any of the body is read, a body over
the limit refused with 413 from its Content-Length before a byte of it is
read (and aiohttp's ``client_max_size`` for bodies without one), a deadline
to receive the body, validation, and the image's pixel count read from its
header (:mod:`~edged.offload.imagehead`) before it is decoded. Refusals are
logged once per burst with counts, never once per request.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import math
import signal
import socket
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
from edged.config.settings import PipelineSettings, Settings, read_secret
from edged.errors import ConfigError, EdgedError
from edged.infer.registry import load_model
from edged.log import BurstLog
from edged.offload.guard import ConnectionGuard, Limits, connection_cap
from edged.offload.imagehead import ImageHeaderError, image_size
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
from edged.tasks.detection import DetectionTask
from edged.types import Detection, Frame

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


#: How long an authenticated connection may stay idle between requests (aiohttp's run_app default).
KEEPALIVE_S = 75.0


class BadRequestError(EdgedError):
    """The request was well-formed HTTP but not a usable detect request."""


class TooManyPixelsError(BadRequestError):
    """The image's header announces more pixels than the server decodes."""


def decode_image(req: DetectRequest, max_pixels: int) -> bytes:
    """The image bytes of ``req``, refused before decoding if not JPEG/PNG or over ``max_pixels``."""
    try:
        data = base64.b64decode(req.image, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequestError("image is not valid base64") from None
    try:
        fmt, w, h = image_size(data)
    except ImageHeaderError as exc:
        raise BadRequestError(f"image is not a decodable JPEG: {exc}") from None
    if w * h > max_pixels:
        raise TooManyPixelsError(
            f"image: {fmt.upper()} of {w}x{h} = {w * h / 1e6:.1f} MP, over the server's "
            f"limit of {max_pixels / 1e6:g} MP (--max-pixels)"
        )
    return data


def error(status: int, code: str, message: str) -> web.Response:
    """A JSON error answer (the protocol's ErrorBody)."""
    body = ErrorBody(error=ErrorDetail(code=code, message=message))
    return web.json_response(text=body.model_dump_json(), status=status)


class Detector:
    """One loaded model answering detect requests, one at a time."""

    def __init__(self, task: DetectionTask, model: ModelRef) -> None:
        self._task = task
        self.model = model

    def __call__(self, req: DetectRequest, image: bytes) -> DetectResponse:
        """Detect in ``image`` (checked by :func:`decode_image`), boxes in the original frame."""
        bgr = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR)
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


@dataclass(frozen=True)
class RequestLimits:
    """What one request may cost the server."""

    max_body: int
    max_pixels: int = 40_000_000
    body_timeout_s: float = 30.0


class _Refused(Exception):  # noqa: N818 - control flow inside the handler, never escapes it
    """Ends a request early with ``response``."""

    def __init__(self, response: web.Response) -> None:
        self.response = response


class _Handlers:
    """The two endpoints and the token check, with their limits."""

    def __init__(
        self,
        detector: Detector,
        token: str,
        limits: RequestLimits,
        guard: ConnectionGuard | None,
        bursts: BurstLog,
    ) -> None:
        self._detector = detector
        self._expected = token.encode()
        self._limits = limits
        self._guard = guard
        self._bursts = bursts
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cloud-infer")

    @web.middleware
    async def json_errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:  # 404, 405, aiohttp's own 413…
            code = exc.reason.lower().replace(" ", "_")
            return error(exc.status, code, exc.reason)
        except Exception:  # a failed inference is the server's fault, and still JSON
            log.exception("cloud.request_failed", path=request.path)
            return error(500, "internal", "the server failed to process the request")

    @web.middleware
    async def bearer(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # Runs once the headers are in, before the handler reads a byte of the body.
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # Constant-time comparison: the answer's timing must not reveal a prefix.
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), self._expected
        ):
            self._bursts.note("cloud.unauthorized", path=request.path)
            resp = error(401, "unauthorized", "missing or wrong bearer token")
            resp.headers["WWW-Authenticate"] = "Bearer"
            resp.force_close()  # no keep-alive slot, and the body is never read
            return resp
        if self._guard is not None and request.transport is not None:
            self._guard.authenticated(request.transport.get_extra_info("peername"))
        return await handler(request)

    async def health(self, _request: web.Request) -> web.Response:
        return web.json_response(text=Health(model=self._detector.model).model_dump_json())

    async def detect(self, request: web.Request) -> web.Response:
        try:
            req = DetectRequest.model_validate_json(await self._body(request))
        except _Refused as refused:
            return refused.response
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            return error(400, "bad_request", f"{where}: {first['msg']}")
        try:
            image = decode_image(req, self._limits.max_pixels)
            loop = asyncio.get_running_loop()
            answer = await loop.run_in_executor(self.pool, self._detector, req, image)
        except TooManyPixelsError as exc:
            self._bursts.note("cloud.image_refused", reason="too_many_pixels", device=req.device)
            return error(413, "too_many_pixels", str(exc))
        except BadRequestError as exc:
            return error(400, "bad_request", str(exc))
        log.debug(
            "cloud.detected", device=req.device, pipeline=req.pipeline, n=len(answer.detections)
        )
        return web.json_response(text=answer.model_dump_json())

    async def _body(self, request: web.Request) -> bytes:
        """The request body, within the size and time limits; _Refused otherwise."""
        max_body, timeout_s = self._limits.max_body, self._limits.body_timeout_s
        if request.content_length is not None and request.content_length > max_body:
            raise _Refused(
                error(413, "too_large", f"body of {request.content_length} bytes (max {max_body})")
            )
        if request.content_type != "application/json":
            raise _Refused(error(415, "unsupported_media_type", "send application/json"))
        try:
            return await asyncio.wait_for(request.read(), timeout_s)
        except web.HTTPRequestEntityTooLarge:
            raise _Refused(error(413, "too_large", f"body over {max_body} bytes")) from None
        except TimeoutError:
            self._bursts.note("cloud.body_timeout", timeout_s=timeout_s)
            resp = error(408, "timeout", f"body not received within {timeout_s:g} s")
            resp.force_close()
            raise _Refused(resp) from None


def build_app(
    detector: Detector,
    token: str,
    limits: RequestLimits,
    *,
    guard: ConnectionGuard | None = None,
    bursts: BurstLog | None = None,
) -> web.Application:
    """The aiohttp application: ``GET /health`` and ``POST /v1/detect``, both behind the token."""
    h = _Handlers(detector, token, limits, guard, bursts or BurstLog())

    async def close_pool(_app: web.Application) -> None:
        h.pool.shutdown(wait=False, cancel_futures=True)

    app = web.Application(middlewares=[h.json_errors, h.bearer], client_max_size=limits.max_body)
    app.router.add_get(HEALTH_PATH, h.health)
    app.router.add_post(DETECT_PATH, h.detect)
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
    max_pixels: int = 40_000_000
    max_connections: int = 256
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0

    def check(self) -> None:
        """ConfigError naming every limit flag that is not a finite number above zero."""
        flags = {
            "--max-body-mb": self.max_body_mb,
            "--max-pixels": self.max_pixels,
            "--max-connections": self.max_connections,
            "--header-timeout-s": self.header_timeout_s,
            "--body-timeout-s": self.body_timeout_s,
        }
        bad = [
            (flag, f"must be a finite number above 0, not {value!r}")
            for flag, value in flags.items()
            if not math.isfinite(value) or value <= 0
        ]
        if bad:
            raise ConfigError(bad)


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
    options.check()
    token = read_secret(options.token_file, "cloud_token")
    if not token:
        raise ConfigError([("--token-file", "a bearer token is required (file or credential)")])
    context = tls_context(options.cert, options.key)
    detector = load_detector(options, settings, catalog)
    asyncio.run(_serve(options, detector, token, context))


async def _serve(
    options: ServeOptions, detector: Detector, token: str, context: ssl.SSLContext | None
) -> None:
    loop = asyncio.get_running_loop()
    bursts = BurstLog()
    # Whatever asyncio still reports (a transport error, a callback that
    # raised) is logged once per burst too: such reports come per connection.
    loop.set_exception_handler(
        lambda _loop, ctx: bursts.note(
            "cloud.loop_error",
            message=str(ctx.get("message", ""))[:200],
            error=repr(ctx.get("exception"))[:200],
        )
    )
    cap = connection_cap(options.max_connections)
    if cap < options.max_connections:
        log.warning(
            "cloud.connection_cap_lowered",
            wanted=options.max_connections,
            cap=cap,
            problem="the open-files limit (ulimit -n) is too low for --max-connections",
        )
    limits = Limits(max_connections=cap, auth_timeout_s=options.header_timeout_s)

    def factory() -> asyncio.Protocol:
        # aiohttp's per-connection protocol, handed out by the guard once it admitted one.
        assert runner.server is not None
        return runner.server()

    guard = ConnectionGuard(factory, context, limits, bursts)
    app = build_app(
        detector,
        token,
        RequestLimits(
            max_body=int(options.max_body_mb * 1_000_000),
            max_pixels=options.max_pixels,
            body_timeout_s=options.body_timeout_s,
        ),
        guard=guard,
        bursts=bursts,
    )
    runner = web.AppRunner(
        app,
        access_log=None,
        # A device keeps its TLS connection between frames (no handshake per
        # frame on a slow uplink). Only authenticated connections live this
        # long: the guard closes the others after --header-timeout-s.
        keepalive_timeout=KEEPALIVE_S,
        shutdown_timeout=2.0,
    )
    await runner.setup()
    try:
        family = socket.getaddrinfo(
            options.host, options.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0][0]
        listener = socket.create_server((options.host, options.port), family=family, backlog=1024)
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError([("--host/--port", f"cannot listen: {exc}")]) from None
    scheme = "https" if context is not None else "http"
    if context is None:
        log.warning("cloud.plain_http", problem="no --cert/--key: devices only speak https")
    log.info(
        "cloud.serving",
        url=f"{scheme}://{options.host}:{options.port}",
        model=detector.model.name,
        max_connections=cap,
        max_pixels=options.max_pixels,
    )
    accepting = loop.create_task(guard.serve(listener))
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        accepting.cancel()
        listener.close()
        await runner.cleanup()
        bursts.end_all()
