"""Fetch catalog files by URL or from a local mirror, always verifying sha256.

A file is written to a temporary name beside its destination, hashed while it
is written, and renamed into place only when the hash matches. A half-written
or tampered file therefore never appears under the real name, even if the
device loses power mid-download.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from edged.catalog.catalog import Artifact, CatalogEntry
from edged.errors import CatalogError

log = structlog.get_logger(__name__)

_CHUNK = 1 << 16
# An archive that holds a label file is far smaller than this; a larger
# response is a wrong URL, not something to fill the device's disk with.
_MAX_DOWNLOAD = 512 << 20

Progress = Callable[[str, int, int], None]  # (file name, bytes done, bytes total or 0)


@dataclass(frozen=True, slots=True)
class Installed:
    """Where a pulled file ended up and how it got there."""

    name: str
    path: Path
    origin: str  # "present", "mirror:<dir>", or the URL


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify(artifact: Artifact, path: Path) -> str | None:
    """Return None if ``path`` holds ``artifact``, else a sentence saying what is wrong."""
    if not path.is_file():
        return f"{path} is missing"
    got = sha256_file(path)
    if got != artifact.sha256:
        return f"{path} has sha256 {got}, expected {artifact.sha256}"
    return None


def _copy_verified(
    src: io.BufferedIOBase, dest: Path, artifact: Artifact, progress: Progress | None, total: int
) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{artifact.name}.", dir=dest.parent)
    tmp = Path(tmp_name)
    done = 0
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := src.read(_CHUNK):
                done += len(chunk)
                if done > _MAX_DOWNLOAD:
                    raise CatalogError(
                        f"{artifact.name}: download exceeds {_MAX_DOWNLOAD >> 20} MiB"
                    )
                digest.update(chunk)
                out.write(chunk)
                if progress:
                    progress(artifact.name, done, total)
            out.flush()
            os.fsync(out.fileno())
        got = digest.hexdigest()
        if got != artifact.sha256:
            raise CatalogError(
                f"{artifact.name}: sha256 mismatch (got {got}, expected {artifact.sha256}); "
                "the file was not installed"
            )
        tmp.chmod(0o644)
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)


def _from_mirror(artifact: Artifact, mirror: Path, dest: Path, progress: Progress | None) -> bool:
    src = mirror / artifact.name
    if not src.is_file():
        return False
    with src.open("rb") as fh:
        _copy_verified(fh, dest, artifact, progress, src.stat().st_size)
    return True


def _from_url(
    artifact: Artifact, url: str, dest: Path, progress: Progress | None, timeout: float
) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "edged-models-pull"})  # noqa: S310  (https URLs from the catalog)
    with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310
        total = int(resp.headers.get("Content-Length") or 0)
        if not artifact.archive_member:
            _copy_verified(resp, dest, artifact, progress, total)
            return
        # The wanted file is one member of a zip: buffer the (small) archive.
        data = resp.read(_MAX_DOWNLOAD + 1)
        if len(data) > _MAX_DOWNLOAD:
            raise CatalogError(f"{url}: archive exceeds {_MAX_DOWNLOAD >> 20} MiB")
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            member = next(
                (n for n in zf.namelist() if n.rsplit("/", 1)[-1] == artifact.archive_member), None
            )
            if member is None:
                raise CatalogError(f"{url}: archive has no member {artifact.archive_member!r}")
            with zf.open(member) as fh:
                _copy_verified(fh, dest, artifact, progress, zf.getinfo(member).file_size)  # type: ignore[arg-type]


def pull_artifact(
    artifact: Artifact,
    dest_dir: Path,
    *,
    mirror: Path | None = None,
    progress: Progress | None = None,
    timeout: float = 30.0,
    dest_name: str | None = None,
) -> Installed:
    """Install one file into ``dest_dir``: keep it if already verified, else mirror, else URLs.

    ``dest_name`` installs it under another name than the artifact's (a
    rollout's pinned variant of a catalog file must never replace the
    catalog's own). Raises :class:`CatalogError` naming every source that
    was tried and why it failed.
    """
    dest = dest_dir / (dest_name or artifact.name)
    if dest.is_file() and verify(artifact, dest) is None:
        return Installed(artifact.name, dest, "present")
    tried: list[str] = []
    if mirror is not None:
        if _from_mirror(artifact, mirror, dest, progress):
            log.info("catalog.model_installed", file=artifact.name, origin=f"mirror:{mirror}")
            return Installed(artifact.name, dest, f"mirror:{mirror}")
        tried.append(f"mirror {mirror}: no file {artifact.name}")
    for url in artifact.urls:
        try:
            _from_url(artifact, url, dest, progress, timeout)
        except (urllib.error.URLError, OSError, zipfile.BadZipFile, CatalogError) as exc:
            # Try the next URL: a mirror of the publisher may still have the right file.
            tried.append(f"{url}: {getattr(exc, 'reason', exc)}")
            continue
        log.info("catalog.model_installed", file=artifact.name, origin=url)
        return Installed(artifact.name, dest, url)
    if not tried:
        tried.append("no mirror configured and the catalog lists no URL")
    raise CatalogError(f"could not fetch {artifact.name}: " + "; ".join(tried))


def pull(
    entry: CatalogEntry,
    dest_dir: Path,
    *,
    mirror: Path | None = None,
    progress: Progress | None = None,
) -> list[Installed]:
    """Install every file of a catalog entry (model and labels)."""
    return [pull_artifact(a, dest_dir, mirror=mirror, progress=progress) for a in entry.artifacts()]
