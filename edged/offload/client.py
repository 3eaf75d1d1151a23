"""HTTPS to the cloud model: certificate verification always on, bounded in time and size.

Built on urllib3: the most used Python HTTP client, actively released, and
synchronous, which is what a worker thread wants (no event loop to own). Its
pool keeps the TLS connection alive between requests, so a frame does not pay
a handshake on a slow uplink, and it can be thread-shared by the link probe
and the worker. Everything that could let a hostile or broken server hold the
device is bounded here: connect and read timeouts, one absolute deadline
over the whole exchange — connect, TLS, request, headers and body — enforced
by shutting the socket down when it passes (:mod:`~edged.offload.deadline`:
per-read timeouts alone let a server trickling its headers hold a request
indefinitely), a response size cap (checked against Content-Length
before reading, then while reading), no compressed responses (a 1 MiB gzip
body can inflate to gigabytes), no redirects (they could carry the token
elsewhere), and urllib3's own retries off (the worker decides when to retry).
The bearer token goes into a header and nowhere else: never into a log line
or an exception message.
"""

from __future__ import annotations

import contextlib
import email.utils
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import urllib3
from pydantic import ValidationError
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.response import BaseHTTPResponse

from edged import __version__
from edged.config.settings import OffloadSettings
from edged.errors import EdgedError
from edged.offload.deadline import Deadline, DeadlinePool
from edged.offload.protocol import DETECT_PATH, HEALTH_PATH, JSON, DetectResponse, ErrorBody

_CHUNK = 64 * 1024
_HEALTH_CAP = 64 * 1024
#: Statuses worth another try while the frame is still fresh.
_RETRYABLE = frozenset({429, 500, 502, 503, 504})


class CloudError(EdgedError):
    """A request to the cloud model failed.

    ``kind`` is short and stable (``timeout``, ``connect``, ``tls``,
    ``http_500``, ``too_large``, ``bad_response``…): it names the failure in
    logs and decides whether a burst of failures is a new burst.
    """

    def __init__(
        self, kind: str, message: str, *, retryable: bool, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Reply:
    """Status and body of one completed request, plus how long it took."""

    status: int
    body: bytes
    retry_after: float | None
    elapsed_ms: float


def _short(exc: BaseException) -> str:
    # urllib3 nests the cause (e.g. SSLCertVerificationError) in its message;
    # the innermost text is the useful part, and it never contains headers.
    inner: BaseException = exc
    while inner.__context__ is not None and inner.__context__ is not inner:
        inner = inner.__context__
    return (str(inner) or type(inner).__name__)[:300]


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class CloudClient:
    """Requests to one cloud endpoint; thread-safe (the probe and the worker share it)."""

    def __init__(self, settings: OffloadSettings, token: str | None) -> None:
        self.url = settings.url
        self._connect_s = settings.connect_timeout_s
        self._read_s = settings.read_timeout_s
        self._cap = settings.max_response_kib * 1024
        # create_default_context: CERT_REQUIRED and hostname checking. There is
        # deliberately no setting to turn either off.
        context = ssl.create_default_context(
            cafile=str(settings.ca_file) if settings.ca_file is not None else None
        )
        headers = {
            "User-Agent": f"edged/{__version__}",
            "Accept": JSON,
            "Accept-Encoding": "identity",
        }
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._pool = urllib3.PoolManager(
            num_pools=1, maxsize=2, headers=headers, ssl_context=context
        )
        self._pool.pool_classes_by_scheme = {"https": DeadlinePool}  # https only (settings)

    def close(self) -> None:
        """Close idle connections."""
        self._pool.clear()

    # -- the two requests ------------------------------------------------
    @property
    def probe_budget_s(self) -> float:
        """The deadline of one health probe, whole exchange: connect + one read timeout."""
        return self._connect_s + self._read_s

    def health(self) -> float:
        """Probe ``GET /health``; the round trip in ms, or CloudError (never past its deadline)."""
        reply = self._request(
            "GET", HEALTH_PATH, None, time.monotonic() + self.probe_budget_s, _HEALTH_CAP
        )
        self._check_status(reply)
        return reply.elapsed_ms

    def detect(self, body: bytes, ref: str, deadline: float) -> DetectResponse:
        """``POST /v1/detect``; the validated answer, or CloudError. Never runs past ``deadline``."""
        reply = self._request("POST", DETECT_PATH, body, deadline, self._cap)
        self._check_status(reply)
        try:
            answer = DetectResponse.model_validate_json(reply.body)
        except ValidationError as exc:
            raise CloudError(
                "bad_response",
                f"not a v1 detect response: {exc.errors()[0]['msg']}",
                retryable=False,
            ) from None
        if answer.ref != ref:
            raise CloudError("bad_response", "the answer is for another ref", retryable=False)
        return answer

    # -- plumbing ----------------------------------------------------------
    @staticmethod
    def _check_status(reply: Reply) -> None:
        if reply.status == 200:
            return
        detail = f"HTTP {reply.status}"
        with contextlib.suppress(ValidationError):  # not every server sends an ErrorBody
            detail += f": {ErrorBody.model_validate_json(reply.body).error.message[:200]}"
        kind = f"http_{reply.status}"
        if reply.status in (401, 403):
            detail += " (check offload.token_file)"
        raise CloudError(
            kind, detail, retryable=reply.status in _RETRYABLE, retry_after=reply.retry_after
        )

    def _request(
        self, method: str, path: str, body: bytes | None, deadline: float, cap: int
    ) -> Reply:
        started = time.monotonic()
        left = deadline - started
        if left <= 0:
            raise CloudError("timeout", "no time left for the request", retryable=False)
        expired = CloudError(
            "timeout",
            f"{method} {path} not completed within its deadline of {left:.1f} s",
            retryable=False,
        )
        with Deadline(deadline) as watchdog:
            try:
                reply = self._exchange(
                    method, path, body, watchdog=watchdog, cap=cap, started=started
                )
            except (CloudError, OSError) as exc:
                if watchdog.fired:  # whatever the interrupted call raised, the deadline caused it
                    raise expired from None
                if isinstance(exc, CloudError):
                    raise
                raise CloudError("connection", _short(exc), retryable=True) from None
            if watchdog.fired:  # a shut socket reads as a clean end: the body may be cut short
                raise expired
            return reply

    def _exchange(
        self,
        method: str,
        path: str,
        body: bytes | None,
        *,
        watchdog: Deadline,
        cap: int,
        started: float,
    ) -> Reply:
        headers = {"Content-Type": JSON} if body is not None else None
        left = watchdog.left()
        try:
            resp = self._pool.request(
                method,
                self.url + path,
                body=body,
                headers={**self._pool.headers, **(headers or {})},
                timeout=urllib3.Timeout(
                    connect=min(self._connect_s, left), read=min(self._read_s, left)
                ),
                retries=False,
                redirect=False,
                preload_content=False,
            )
        except SSLError as exc:
            raise CloudError("tls", _short(exc), retryable=False) from None
        except NewConnectionError as exc:  # before its base class ConnectTimeoutError
            raise CloudError("connect", _short(exc), retryable=True) from None
        except (ConnectTimeoutError, ReadTimeoutError) as exc:
            raise CloudError("timeout", _short(exc), retryable=True) from None
        except HTTPError as exc:
            raise CloudError("connection", _short(exc), retryable=True) from None
        try:
            data = self._read_capped(resp, watchdog.at, cap)
        finally:
            resp.release_conn()
        return Reply(
            resp.status,
            data,
            _retry_after(resp.headers.get("Retry-After")),
            (time.monotonic() - started) * 1e3,
        )

    @staticmethod
    def _read_capped(resp: BaseHTTPResponse, deadline: float, cap: int) -> bytes:
        def abort(kind: str, message: str, *, retryable: bool) -> CloudError:
            resp.close()  # drops the connection: the rest of the body is never read
            return CloudError(kind, message, retryable=retryable)

        length = resp.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > cap:
            raise abort("too_large", f"response of {length} bytes (cap {cap})", retryable=False)
        encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise abort("bad_response", f"compressed response ({encoding})", retryable=False)
        buf = bytearray()
        try:
            while chunk := resp.read1(_CHUNK, decode_content=False):
                buf += chunk
                if len(buf) > cap:
                    raise abort("too_large", f"response over {cap} bytes", retryable=False)
                if time.monotonic() > deadline:
                    raise abort(
                        "timeout", "response still arriving at the deadline", retryable=False
                    )
        except ReadTimeoutError as exc:
            raise abort("timeout", _short(exc), retryable=True) from None
        except HTTPError as exc:
            raise abort("connection", _short(exc), retryable=True) from None
        return bytes(buf)
