"""A Debian root built with debootstrap, the Ansible role run into it, and the root booted.

Nothing here needs Docker or a host systemd: ``debootstrap`` makes the root,
``ansible-playbook`` converges the role into it through the
``community.general.chroot`` connection, ``systemd-nspawn -b`` boots it with a
real systemd as PID 1, and ``nsenter -t <its init pid> -a`` runs commands inside
(the host's own PID 1 is not systemd, so ``machinectl`` and ``systemd-run`` are
no way in). The fresh root is cached as a tar.zst,
so only the first run pays for debootstrap.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# What a fresh device image has before the role runs: Python for Ansible
# (python3-apt for its apt module), and systemd + dbus to boot.
INCLUDE = ("python3", "python3-venv", "python3-apt", "systemd", "dbus")

#: Step → seconds, and other figures, shown in pytest's terminal summary.
REPORT: dict[str, str] = {}


@contextlib.contextmanager
def timed(step: str) -> Iterator[None]:
    """Record how long ``step`` took in :data:`REPORT` (also when it fails)."""
    t0 = time.monotonic()
    try:
        yield
    finally:
        REPORT[f"time: {step}"] = f"{time.monotonic() - t0:6.1f} s"


def cache_dir() -> Path:
    """Where the root tarball and dependency wheels are kept between runs."""
    env = os.environ.get("EDGED_DEPLOY_CACHE")
    path = Path(env) if env else Path.home() / ".cache" / "edged" / "deploy"
    path.mkdir(parents=True, exist_ok=True)
    return path


def run(
    cmd: Sequence[str | Path], *, timeout: float = 120, check: bool = True, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` and capture its output; raise with the output when it fails."""
    result = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, check=False, **kw
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} exited {result.returncode}:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def tool_env() -> dict[str, str]:
    """The environment for pip and Ansible: no PIP_* settings of this host.

    chroot commands inherit the controller's environment, and a host's pip
    configuration (find-links, certificates) means nothing inside the root.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(
        PIP_CONFIG_FILE=os.devnull,
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_PIPELINING="1",
    )
    return env


# --- the root ---------------------------------------------------------------------


def make_root(dest: Path) -> str:
    """A fresh Debian root in ``dest``: from the cached tarball, else by debootstrap.

    Returns how it was made ("cache" or "debootstrap").
    """
    key = hashlib.sha256(f"{SUITE} {MIRROR} minbase {','.join(INCLUDE)}".encode()).hexdigest()
    tarball = cache_dir() / f"{SUITE}-minbase-{platform.machine()}-{key[:12]}.tar.zst"
    dest.mkdir(parents=True)
    if tarball.is_file():
        run(["tar", "--zstd", "--numeric-owner", "-xpf", tarball, "-C", dest], timeout=300)
        return "cache"
    run(
        ["debootstrap", "--variant=minbase", f"--include={','.join(INCLUDE)}", SUITE, dest, MIRROR],
        timeout=900,
    )
    part = tarball.with_name(tarball.name + ".part")
    run(["tar", "--zstd", "--numeric-owner", "-cpf", part, "-C", dest, "."], timeout=300)
    part.rename(tarball)  # atomic: a killed run never leaves half a cache
    return "debootstrap"


def build_wheelhouse(dest: Path, work: Path) -> Path:
    """The controller's side of the role: the edged wheel plus every dependency wheel.

    The edged wheel is built from a copy of the sources (an in-tree build
    would leave build/ and *.egg-info in the checkout). Dependency wheels come
    from the cache when it has them all, else from the index into the cache.
    Wheels are chosen for the root's Python (Debian 12: CPython 3.11).
    """
    src = work / "src"
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for name in ("edged", "models"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    dest.mkdir(parents=True)
    env = dict(os.environ)  # the controller's own pip configuration (index, certificates)
    run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dest, src],
        env=env,
        timeout=300,
    )
    (wheel,) = dest.glob("edged-*.whl")
    arch = platform.machine()
    # Every manylinux tag glibc 2.36 (Debian 12) runs; pip does not expand them.
    manylinux = [f"manylinux_2_{minor}_{arch}" for minor in range(36, 16, -1)]
    target = [
        "--only-binary=:all:",
        "--implementation=cp",
        "--python-version=3.11",
        *(f"--platform={tag}" for tag in [*manylinux, f"manylinux2014_{arch}"]),
    ]
    deps = cache_dir() / "wheelhouse"
    deps.mkdir(exist_ok=True)
    pip: list[str | Path] = [sys.executable, "-m", "pip", "download", "-q", *target]
    offline = [*pip, "--no-index", "--find-links", deps, "--dest", dest, wheel]
    if run(offline, env=env, check=False, timeout=300).returncode != 0:
        run([*pip, "--dest", deps, wheel], env=env, timeout=600)
        run(offline, env=env, timeout=300)
    for stale in deps.glob("edged-*.whl"):
        stale.unlink()
    return wheel


# --- Ansible ----------------------------------------------------------------------


@dataclass(frozen=True)
class PlaybookRun:
    """One ``ansible-playbook`` run: exit code, the PLAY RECAP counters, the log."""

    returncode: int
    recap: dict[str, int]
    log: str
    seconds: float

    def tail(self, lines: int = 80) -> str:
        return "\n".join(self.log.splitlines()[-lines:])


_RECAP = re.compile(r"^\S+\s+:\s+((?:\w+=\d+\s*)+)$", re.M)


def ansible_playbook(inventory: Path, log: Path, *args: str) -> PlaybookRun:
    """Run ``site.yml`` with ``inventory``; the output goes to ``log``."""
    t0 = time.monotonic()
    with log.open("w") as fh:
        proc = subprocess.run(
            ["ansible-playbook", "-i", str(inventory), *args, "site.yml"],
            cwd=ANSIBLE_DIR,
            # profile_tasks: the log ends with the time every task took.
            env={**tool_env(), "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks"},
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=900,
            check=False,
        )
    text = log.read_text(errors="replace")
    recap: dict[str, int] = {}
    if found := _RECAP.findall(text):
        recap = {k: int(v) for k, v in (kv.split("=") for kv in found[-1].split())}
    return PlaybookRun(proc.returncode, recap, text, time.monotonic() - t0)


def write_inventory(path: Path, host: str, hostvars: dict[str, Any]) -> Path:
    """An inventory with one host in the group ``edged`` (YAML accepts JSON)."""
    doc = {"edged": {"children": {"deploy_test": {"hosts": {host: hostvars}}}}}
    path.write_text(json.dumps(doc, indent=1))
    return path


# --- the booted root --------------------------------------------------------------


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _ns_pid(pid: int) -> list[str]:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return []
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            return line.split()[1:]
    return []


class Container:
    """The root booted by ``systemd-nspawn -b``; commands run in it through ``nsenter``.

    It shares the host's network (no ``--private-network``), so a broker on
    the host's 127.0.0.1 is reachable from inside.
    """

    def __init__(self, root: Path, log: Path) -> None:
        self.root = root
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.init_pid = 0
        self._log_fh: IO[bytes] | None = None

    def boot(self, timeout: float = 120) -> str:
        """Boot and wait until start-up finished; returns ``is-system-running``'s answer."""
        self._log_fh = self.log.open("wb")
        self.proc = subprocess.Popen(
            [
                "systemd-nspawn", "-D", str(self.root), "--register=no", "--keep-unit",
                "--console=pipe", "-b",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C of pytest must not hit it half-way
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self.init_pid:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"systemd-nspawn did not boot:\n{self.console()}")
            self.init_pid = self._find_init()
            time.sleep(0.1)
        while True:
            state = self.run(
                ["systemctl", "is-system-running", "--wait"], check=False, timeout=timeout
            ).stdout.strip()
            if state in ("running", "degraded"):
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"boot did not finish ({state!r}):\n{self.console()}")
            time.sleep(0.5)  # "initializing": PID 1 not yet listening

    def _find_init(self) -> int:
        assert self.proc is not None
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and _ppid(int(entry.name)) == self.proc.pid:
                ns = _ns_pid(int(entry.name))
                if len(ns) >= 2 and ns[-1] == "1":
                    return int(entry.name)
        return 0

    def console(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def run(
        self, cmd: list[str], *, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` inside the container (all of PID 1's namespaces)."""
        return run(["nsenter", "-t", str(self.init_pid), "-a", *cmd], check=check, timeout=timeout)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """``systemctl show`` properties of ``unit``."""
        out = self.run(["systemctl", "show", unit, *(f"--property={p}" for p in props)]).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait_for(
        self, what: str, predicate: Callable[[], bool], timeout: float, interval: float = 0.5
    ) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(interval)

    def journal(self, unit: str, *args: str) -> list[dict[str, Any]]:
        """The journal entries of ``unit`` (``journalctl -o json``)."""
        out = self.run(["journalctl", "-u", unit, "-o", "json", "--no-pager", *args]).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def shutdown(self, timeout: float = 30) -> None:
        """Power off (SIGTERM to nspawn), else kill; never leaves a process or a mount."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # nspawn asks the container's systemd to power off
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                if self.init_pid and _ns_pid(self.init_pid):
                    os.kill(self.init_pid, signal.SIGKILL)  # ends the whole PID namespace
                proc.kill()
                proc.wait(10)
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None
        unmount_below(self.root)


def unmount_below(root: Path) -> None:
    """Lazily unmount anything still mounted at or below ``root``, deepest first."""
    prefix = str(root.resolve())
    mounts = [
        line.split()[4]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[4] == prefix or line.split()[4].startswith(prefix + "/")
    ]
    for mount in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
