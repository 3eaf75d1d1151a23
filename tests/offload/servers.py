"""Real HTTPS servers on loopback for the offload tests.

- :class:`CloudServer`: the reference server, ``python -m edged cloud serve``,
  as a child process ended by its PID.
- :class:`HostileServer`: a small aiohttp server in a thread whose behaviour
  can be switched while a daemon talks to it (stall, 500s, a 50 MB answer,
  401, a certificate for another host). It counts every request it gets.
- :class:`TrickleServer`: answers one path a byte at a time, for deadlines.

The last two share :class:`_LoopbackServer`: TLS context, port, loop thread.
"""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Self

from aiohttp import web

from edged.demo.broker import free_port
from tests.helpers.broker import TlsMaterial
from tests.helpers.ports import PortHold

REPO = Path(__file__).resolve().parents[2]
SHA = "0" * 64


def make_host_cert(tls: TlsMaterial, directory: Path, host: str) -> tuple[Path, Path]:
    """A server certificate for ``host`` only, signed by the test CA (so only the name is wrong)."""
    key, csr, crt = directory / f"{host}.key", directory / f"{host}.csr", directory / f"{host}.crt"
    ext = directory / f"{host}.ext"
    ext.write_text(f"subjectAltName=DNS:{host}\nextendedKeyUsage=serverAuth\n")
    ca_key = tls.ca.with_suffix(".key")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-subj", f"/CN={host}", "-keyout", str(key), "-out", str(csr),
    )  # fmt: skip
    run(
        "x509", "-req", "-in", str(csr), "-CA", str(tls.ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(crt),
    )  # fmt: skip
    return crt, key


def https_get(url: str, ca: Path, token: str, timeout: float = 2.0) -> int:
    """Status of GET ``url`` (verified against ``ca``); 0 when it cannot connect."""
    ctx = ssl.create_default_context(cafile=str(ca))
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


class CloudServer:
    """``edged cloud serve`` with TLS on a fixed loopback port; restartable.

    The port is kept (:class:`~tests.helpers.ports.PortHold`) whenever the
    server is not running, from construction on: clients are refused, and no
    other test's ``free_port()`` takes it before a (re)start.
    """

    def __init__(
        self,
        models_dir: Path,
        tls: TlsMaterial,
        token_file: Path,
        workdir: Path,
        *,
        args: Sequence[str] = (),
        nofile: int | None = None,
    ) -> None:
        """``args`` are extra CLI flags; ``nofile`` the soft open-files limit of the process."""
        self.port = free_port()
        self._args, self._nofile = list(args), nofile
        self.url = f"https://127.0.0.1:{self.port}"
        self._tls, self._token_file = tls, token_file
        self._models_dir = models_dir
        self.log_path = workdir / f"cloud-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._hold = PortHold("127.0.0.1", self.port)
        self._hold.hold()

    def start(self, timeout: float = 30.0) -> CloudServer:
        self._hold.release()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "edged", "cloud", "serve",
                    "--models-dir", str(self._models_dir), "--model", "yolox-nano-coco",
                    "--host", "127.0.0.1", "--port", str(self.port),
                    "--cert", str(self._tls.cert), "--key", str(self._tls.key),
                    "--token-file", str(self._token_file), "--threads", "2", *self._args,
                ],
                cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        if self._nofile is not None:  # set while it still imports, long before it listens
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.prlimit(self.proc.pid, resource.RLIMIT_NOFILE, (self._nofile, hard))
        token = self._token_file.read_text().strip()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if https_get(self.url + "/health", self._tls.ca, token) == 200:
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"cloud server did not come up:\n{self.log_path.read_text()}")

    def status(self, field: str) -> int:
        """A ``kB`` field of the server process's /proc status (VmRSS, VmHWM…), in bytes."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(field)

    def reset_peak_rss(self) -> None:
        """Reset VmHWM to the current RSS (Linux clear_refs, needs root or the same user)."""
        assert self.proc is not None
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        self._hold.hold()


Mode = Literal["ok", "stall", "error500", "huge", "unauthorized", "wrong_host", "long_labels"]


class _LoopbackServer:
    """An HTTPS server on loopback, run by an event loop of its own in a daemon thread.

    Subclasses start listening in :meth:`_serve` and stop in :meth:`_shutdown`,
    both on that loop; :meth:`start` returns once the server listens.
    """

    def __init__(self, tls: TlsMaterial, name: str) -> None:
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(tls.cert, tls.key)
        self._name = name
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    async def _serve(self) -> None:
        raise NotImplementedError

    async def _shutdown(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._shutdown())
        self._loop.close()

    def start(self) -> Self:
        self._thread.start()
        assert self._ready.wait(10), f"{self._name} server did not start"
        return self

    def close(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


class HostileServer(_LoopbackServer):
    """An HTTPS server on loopback that misbehaves on request, counting what it receives.

    Every answer closes its connection, so a new mode (the certificate for
    another host included) applies from the very next request.
    """

    HUGE_BYTES = 50 * 1024 * 1024
    STALL_S = 10.0

    def __init__(self, tls: TlsMaterial, workdir: Path) -> None:
        super().__init__(tls, "hostile")
        self._tls = tls
        self._other = make_host_cert(tls, workdir, "other.example")
        self.mode: Mode = "ok"
        self.requests: Counter[tuple[str, str]] = Counter()  # (mode, path) → count
        self._lock = threading.Lock()

    def set_mode(self, mode: Mode) -> None:
        """Switch behaviour; new TLS handshakes present the other host's certificate if asked."""
        cert, key = self._other if mode == "wrong_host" else (self._tls.cert, self._tls.key)
        self.context.load_cert_chain(cert, key)
        self.mode = mode

    def count(self, mode: str, path: str) -> int:
        with self._lock:
            return self.requests[(mode, path)]

    # -- the server -------------------------------------------------------------
    async def _health(self, request: web.Request) -> web.StreamResponse:
        self._note(request)
        if self.mode == "unauthorized":
            return self._json({"error": {"code": "unauthorized", "message": "no"}}, 401)
        return self._json({"v": 1, "status": "ok", "model": {"name": "hostile", "sha256": SHA}})

    async def _detect(self, request: web.Request) -> web.StreamResponse:
        self._note(request)
        body = json.loads(await request.read())
        mode = self.mode
        if mode == "stall":
            await asyncio.sleep(self.STALL_S)
        if mode == "error500":
            return self._json({"error": {"code": "internal", "message": "boom"}}, 500)
        if mode == "unauthorized":
            return self._json({"error": {"code": "unauthorized", "message": "no"}}, 401)
        if mode == "huge":
            return await self._huge(request)
        if mode == "long_labels":  # 10 labels of 100 kB: under the 1 MiB answer cap
            label = "x" * 100_000
            return self._json(
                {
                    "v": 1,
                    "ref": body["ref"],
                    "model": {"name": "hostile", "sha256": SHA},
                    "timing_ms": {"pre": 0, "infer": 1, "post": 0},
                    "detections": [
                        {"label": label, "class_id": 0, "score": 0.9, "box": [0.1, 0.1, 0.5, 0.9]}
                    ]
                    * 10,
                }
            )
        return self._json(
            {
                "v": 1,
                "ref": body["ref"],
                "model": {"name": "hostile", "sha256": SHA},
                "timing_ms": {"pre": 0, "infer": 1, "post": 0},
                "detections": [
                    {"label": "person", "class_id": 0, "score": 0.9, "box": [0.1, 0.1, 0.5, 0.9]}
                ],
            }
        )

    async def _huge(self, request: web.Request) -> web.StreamResponse:
        # Chunked, without Content-Length: the client can only find out by reading.
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.force_close()
        await resp.prepare(request)
        block = b"[" * (1024 * 1024)
        try:
            for _ in range(self.HUGE_BYTES // len(block)):
                if request.transport is None or request.transport.is_closing():
                    return resp  # the client hung up: exactly what it should do
                await resp.write(block)
        except (ConnectionError, RuntimeError):
            return resp
        await resp.write_eof()
        return resp

    def _note(self, request: web.Request) -> None:
        with self._lock:
            self.requests[(self.mode, request.path)] += 1

    @staticmethod
    def _json(data: dict[str, Any], status: int = 200) -> web.Response:
        resp = web.json_response(data, status=status)
        resp.force_close()
        return resp

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_post("/v1/detect", self._detect)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.context)
        await site.start()

    async def _shutdown(self) -> None:
        await self._runner.cleanup()


class TrickleServer(_LoopbackServer):
    """An HTTPS server on loopback that answers one path a byte at a time.

    The answer is valid and complete in the end — status line, headers, body —
    but every byte comes ``interval_s`` after the previous one, so no single
    read ever waits long enough to time out: only a deadline over the whole
    exchange ends it. Other paths answer at once. Each answer closes its
    connection. ``held_s`` lists, per trickled answer the client abandoned,
    how long the client held on after its request arrived.
    """

    def __init__(self, tls: TlsMaterial, slow_path: str, interval_s: float = 0.5) -> None:
        super().__init__(tls, "trickle")
        self.slow_path = slow_path
        self.interval_s = interval_s
        self.requests: Counter[str] = Counter()
        self.held_s: list[float] = []

    @staticmethod
    def _answer(path: str, body: bytes) -> bytes:
        model = {"name": "trickle", "sha256": SHA}
        if path == "/health":
            doc: dict[str, Any] = {"v": 1, "status": "ok", "model": model}
        else:
            doc = {
                "v": 1,
                "ref": json.loads(body)["ref"],
                "model": model,
                "timing_ms": {"pre": 0, "infer": 1, "post": 0},
                "detections": [],
            }
        data = json.dumps(doc).encode()
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        )
        return head.encode() + data

    @property
    def hung_up(self) -> int:
        """Trickled answers the client abandoned."""
        return len(self.held_s)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        started, path = time.monotonic(), ""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            body = await reader.readexactly(length)
            self.requests[path] += 1
            started = time.monotonic()
            answer = self._answer(path, body)
            if path != self.slow_path:
                writer.write(answer)
                await writer.drain()
                return
            for i in range(len(answer)):
                if writer.transport.is_closing() or reader.at_eof():
                    self.held_s.append(time.monotonic() - started)
                    return
                writer.write(answer[i : i + 1])
                await writer.drain()
                await asyncio.sleep(self.interval_s)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            if path == self.slow_path:
                self.held_s.append(time.monotonic() - started)
        finally:
            writer.close()

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, ssl=self.context
        )

    async def _shutdown(self) -> None:
        self._server.close()
        # The handlers still trickling: cancelled, and waited for.
        tasks = asyncio.all_tasks() - {asyncio.current_task()}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
