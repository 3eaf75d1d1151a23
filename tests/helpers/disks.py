"""Real small file systems for storage faults: a tmpfs that fills up, an ext4 that fails.

Both need root (mount, loop devices); callers skip when that is not possible.
Every mount is undone in a ``finally``, so a failing test leaves nothing mounted.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


@contextlib.contextmanager
def tmpfs(mnt: Path, size: str = "6m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``mnt`` (created): a file system that runs out of space."""
    mnt.mkdir(parents=True, exist_ok=True)
    done = _run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt))
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        _run("umount", "-l", str(mnt))


class Ext4:
    """An ext4 image loop-mounted with ``errors=remount-ro``, as on a Raspberry Pi's SD card.

    :meth:`fail` makes the kernel record a file-system error; ext4 then
    remounts itself read-only (writes fail with EROFS, ``statvfs`` still
    says read-write), exactly what a failing card does in the field. The
    kernel does not let that file system become writable again while it is
    mounted: :meth:`repair` unmounts it (which works only once nothing holds
    a file on it open), runs e2fsck and mounts it again.
    """

    def __init__(self, image: Path, mnt: Path) -> None:
        self.image, self.mnt = image, mnt

    def mount(self) -> None:
        done = _run("mount", "-o", "loop,errors=remount-ro", str(self.image), str(self.mnt))
        if done.returncode != 0:
            pytest.skip(f"cannot loop-mount ext4 (needs root): {done.stderr.strip()}")

    def device(self) -> str:
        return _run("findmnt", "-no", "SOURCE", str(self.mnt)).stdout.strip()

    def fail(self) -> None:
        """Trigger an ext4 error: the kernel remounts the file system read-only."""
        name = os.path.basename(self.device())
        Path(f"/sys/fs/ext4/{name}/trigger_fs_error").write_text("edged test\n")

    def repair(self, timeout: float = 15.0) -> None:
        """Unmount (waiting for open files to close), e2fsck, mount again."""
        deadline = time.monotonic() + timeout
        while True:
            done = _run("umount", str(self.mnt))
            if done.returncode == 0:
                break
            if time.monotonic() > deadline:
                holders = _run("fuser", "-vm", str(self.mnt))
                raise AssertionError(
                    f"{self.mnt} stayed busy for {timeout} s: {done.stderr.strip()}\n"
                    f"{holders.stdout}{holders.stderr}"
                )
            time.sleep(0.2)
        _run("e2fsck", "-fy", str(self.image))
        self.mount()


@contextlib.contextmanager
def ext4(directory: Path, size_mb: int = 32) -> Iterator[Ext4]:
    """A fresh ext4 image in ``directory``, mounted on ``directory/mnt``; unmounted at the end."""
    image, mnt = directory / "ext4.img", directory / "mnt"
    mnt.mkdir(parents=True, exist_ok=True)
    with image.open("wb") as fh:
        fh.truncate(size_mb * 2**20)
    made = _run("mkfs.ext4", "-q", "-F", str(image))
    if made.returncode != 0:
        pytest.skip(f"mkfs.ext4 failed: {made.stderr.strip()}")
    fs = Ext4(image, mnt)
    fs.mount()
    try:
        yield fs
    finally:
        _run("umount", "-l", str(mnt))


def fill_up(directory: Path, leave: int = 0) -> Path:
    """Write a ballast file until about ``leave`` bytes are free (4 KiB less at most)."""
    ballast = directory / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            st = os.statvfs(directory)
            free = st.f_bavail * st.f_frsize
            if free <= leave:
                break
            os.write(fd, bytes(min(65536, max(4096, free - leave))))
    except OSError:
        pass
    finally:
        os.close(fd)
    return ballast
