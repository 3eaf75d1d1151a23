"""A private mosquitto broker on 127.0.0.1, for ``edged demo`` and the tests.

:class:`LocalBroker` writes its own configuration into a work directory and
runs ``mosquitto -c`` as a child process, so it never touches a system broker
or ``/etc/mosquitto``. It is always ended by its PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Self

import structlog

from edged.errors import BrokerError

log = structlog.get_logger(__name__)

_INSTALL = "install it: apt-get install mosquitto"


def _tool(name: str) -> str:
    # Debian installs the broker in /usr/sbin, which is not on a normal
    # user's PATH.
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise BrokerError(f"{name} not found on PATH or in /usr/sbin: {_INSTALL}")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LocalBroker:
    """One mosquitto process on ``host``:``port`` with its own config and log.

    ``users`` (name → password) enables a password file and turns anonymous
    access off. ``tls_cert``/``tls_key`` make the listener TLS-only
    (``tls_ca`` is the CA that issued the server certificate, written to the
    config for completeness). ``persistence`` keeps retained messages and
    persistent sessions in ``persistence_dir`` across :meth:`restart`
    (saved on a clean stop, or every ``autosave_s`` seconds).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        users: Mapping[str, str] | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        tls_ca: Path | None = None,
        persistence: bool = False,
        persistence_dir: Path | None = None,
        autosave_s: int | None = None,
        workdir: Path | None = None,
        start_timeout_s: float = 10.0,
    ) -> None:
        if (tls_cert is None) != (tls_key is None):
            raise BrokerError("LocalBroker TLS needs both tls_cert and tls_key")
        self.host = host
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port(host)
        self.users = dict(users or {})
        self.tls_cert, self.tls_key, self.tls_ca = tls_cert, tls_key, tls_ca
        self.persistence = persistence
        self.autosave_s = autosave_s
        self.start_timeout_s = start_timeout_s
        self._binary = _tool("mosquitto")
        self._own_workdir = workdir is None
        self.workdir = (
            Path(tempfile.mkdtemp(prefix="edged-broker-")) if workdir is None else workdir
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.persistence_dir = persistence_dir or self.workdir / "persist"
        self.config_file = self.workdir / "mosquitto.conf"
        self.log_file = self.workdir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_fh: IO[bytes] | None = None
        self._write_password_file()

    # --- configuration ---------------------------------------------------------

    @property
    def password_file(self) -> Path | None:
        """The hashed password file, when ``users`` were given."""
        return self.workdir / "passwd" if self.users else None

    def _write_password_file(self) -> None:
        path = self.password_file
        if path is None:
            return
        if any(":" in u or "\n" in u + p for u, p in self.users.items()):
            raise BrokerError("LocalBroker users must not contain ':' or newlines")
        # Plain "user:password" lines hashed in place with -U: the passwords
        # never appear on a command line (visible in ps).
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.writelines(f"{u}:{p}\n" for u, p in self.users.items())
        result = subprocess.run(
            [_tool("mosquitto_passwd"), "-U", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise BrokerError(f"mosquitto_passwd -U {path} failed: {result.stderr.strip()}")

    def _config(self) -> str:
        lines = [
            "# Written by edged.demo.broker.LocalBroker; regenerated on every start.",
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'false' if self.users else 'true'}",
            "log_dest stderr",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            # Small messages go out at once instead of waiting up to 40 ms for
            # a delayed ACK (Nagle): request/response round trips went from
            # ~90 ms to under 1 ms on loopback.
            "set_tcp_nodelay true",
        ]
        if os.geteuid() == 0:
            # As root mosquitto drops to user 'mosquitto', which cannot read
            # root-owned 0600 keys and password files; it then fails to start.
            lines.append("user root")
        if self.password_file is not None:
            lines.append(f"password_file {self.password_file}")
        if self.tls_cert is not None and self.tls_key is not None:
            lines += [f"certfile {self.tls_cert}", f"keyfile {self.tls_key}"]
            if self.tls_ca is not None:
                lines.append(f"cafile {self.tls_ca}")
        if self.persistence:
            self.persistence_dir.mkdir(parents=True, exist_ok=True)
            # Older mosquitto appends the file name verbatim: keep the slash.
            lines += ["persistence true", f"persistence_location {self.persistence_dir}/"]
            if self.autosave_s is not None:
                lines.append(f"autosave_interval {self.autosave_s}")
        else:
            lines.append("persistence false")
        return "\n".join(lines) + "\n"

    # --- process -----------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """PID of the running mosquitto, or None."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the mosquitto process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        """Start mosquitto and wait until its port accepts TCP connections.

        Raises :class:`BrokerError` with the end of mosquitto's log when it
        exits or does not listen within ``start_timeout_s``.
        """
        if self.running:
            return self
        for attempt in range(3):
            try:
                self._spawn_and_wait()
                return self
            except BrokerError as exc:
                # A port picked by free_port() can be taken by someone else
                # before mosquitto binds it; pick another unless it was given.
                if self._fixed_port or attempt == 2 or "in use" not in str(exc):
                    raise
                self.port = free_port(self.host)
        raise AssertionError("unreachable")  # pragma: no cover

    def _spawn_and_wait(self) -> None:
        self.config_file.write_text(self._config())
        self._close_log()
        self._log_fh = self.log_file.open("ab")
        offset = self._log_fh.tell()
        self._proc = subprocess.Popen(
            [self._binary, "-c", str(self.config_file)],
            stdin=subprocess.DEVNULL,
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                self._close_log()
                raise BrokerError(
                    f"mosquitto exited with status {code} at start "
                    f"(config {self.config_file}):\n{self._log_since(offset)}"
                )
            # mosquitto opens its listener before it loads TLS files and may
            # still exit after that; "… running" is logged once it is ready.
            if " running" in self._log_since(offset) and self._accepts():
                log.debug("broker.started", host=self.host, port=self.port, pid=self._proc.pid)
                return
            time.sleep(0.02)
        self.kill()
        raise BrokerError(
            f"mosquitto did not start on {self.host}:{self.port} within "
            f"{self.start_timeout_s} s:\n{self._log_since(offset)}"
        )

    def _accepts(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), 0.2):
                return True
        except OSError:
            return False

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_file.open("rb") as fh:
                fh.seek(offset)
                return fh.read().decode(errors="replace").strip() or "(mosquitto logged nothing)"
        except FileNotFoundError:
            return "(no log)"

    def stop(self, timeout: float = 5.0) -> None:
        """End mosquitto with SIGTERM (it saves persistence), SIGKILL after ``timeout``."""
        self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """End mosquitto with SIGKILL: a crash, nothing saved since the last autosave."""
        self._end(signal.SIGKILL, 5.0)

    def restart(self) -> Self:
        """Stop cleanly and start again on the same port with the same persistence."""
        self.stop()
        return self.start()

    def _end(self, sig: signal.Signals, timeout: float) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    def close(self) -> None:
        """Stop the broker and delete its work directory if this object created it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of mosquitto's log."""
        try:
            text = self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LocalBroker({self.host}:{self.port}, pid={self.pid})"
