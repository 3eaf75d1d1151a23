"""What every benchmark shares: where models and media are, the run's context, one table row."""

from __future__ import annotations

import os
import resource
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edged.catalog.catalog import load_catalog
from edged.catalog.fetch import pull
from edged.config.settings import load_settings
from edged.daemon.app import App
from edged.daemon.check import preflight
from edged.demo.broker import free_port

REPO = Path(__file__).resolve().parents[1]
CLIP = "person_walking_0-30s.mp4"
#: Frames in :data:`CLIP` (768x432, 10 fps, 30 s).
CLIP_FRAMES = 301
DETECTOR = "ssd-mobilenet-v1-coco-int8"
POSE = "movenet-lightning-int8"
AUDIO = "yamnet"

#: YAMNet on a source named "mic", publishing every window: the audio pipeline of the benchmarks.
EARS: dict[str, Any] = {
    "name": "ears",
    "source": "mic",
    "task": "audio",
    "model": AUDIO,
    "threads": 1,
    "publish": "all",
    "threshold": 0.0,
}

#: A figure as stored in ``--json``: numbers where possible.
Value = float | int | str | bool | list[float] | None


def shared(var: str, sub: str) -> Path:
    """``$var``, else ``../shared/<sub>`` beside the checkout (as the tests find them)."""
    return Path(os.environ.get(var, REPO.parent / "shared" / sub))


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank, as the pipelines compute theirs); 0 when empty."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def cpu_s() -> float:
    """User + system CPU seconds of this process so far (every thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def daemon_config(
    work: Path,
    models: Path,
    sources: list[dict[str, Any]],
    pipelines: list[dict[str, Any]],
    *,
    broker: tuple[str, int] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A daemon configuration with its state under ``work``, as every benchmark builds one.

    Without ``broker`` the MQTT port is a free one where nobody listens:
    results stay in the outbox, which is all a benchmark of the pipelines needs.
    """
    host, port = broker if broker is not None else ("127.0.0.1", free_port())
    return {
        "device_id": "bench",
        "state_dir": str(work / "state"),
        "stats_interval_s": 60,
        "mqtt": {"host": host, "port": port, "homeassistant": False},
        "outbox": {"path": str(work / "state" / "outbox.sqlite3")},
        "models": {"dir": str(models)},
        "sources": sources,
        "pipelines": pipelines,
        **extra,
    }


def in_process(config: dict[str, Any], *, connect_broker: bool) -> App:
    """The daemon (:class:`App`, not started) for ``config``, after the same preflight as ``edged run``."""
    settings = load_settings(None, config)
    checked = preflight(settings, load_catalog(), connect_broker=connect_broker)
    if checked.problems:
        raise SystemExit(f"bench configuration refused: {checked.problems}")
    return App(settings, checked)


def pull_models(dest: Path, names: tuple[str, ...] = (DETECTOR, POSE, AUDIO)) -> Path:
    """Install (sha256-verified) ``names`` from the mirror into ``dest``; returns ``dest``."""
    catalog = load_catalog()
    mirror = shared("EDGED_MODEL_MIRROR", "models")
    for name in names:
        pull(catalog.get(name), dest, mirror=mirror)
    return dest


@dataclass(frozen=True, slots=True)
class Context:
    """One ``python -m bench`` run: scratch space, installed models, media, options."""

    work: Path
    models: Path
    media: Path
    quick: bool
    threads: tuple[int, ...] = (1, 2)

    @property
    def clip(self) -> Path:
        return self.media / CLIP

    def scratch(self, name: str) -> Path:
        """A fresh directory under :attr:`work` for one run's state (outbox, config, logs)."""
        path = self.work / name
        n = 1
        while path.exists():
            n += 1
            path = self.work / f"{name}-{n}"
        path.mkdir(parents=True)
        return path


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the summary table, and its raw numbers for ``--json``.

    ``ok`` is None when the row has no target (verdict "—").
    """

    key: str
    measurement: str
    figure: str
    target: str = ""
    ok: bool | None = None
    values: Mapping[str, Value] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return "—" if self.ok is None else ("✓" if self.ok else "✗")
