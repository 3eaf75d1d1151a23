"""A real daemon App, in-process, on a few photos with the SSD model, against a real mosquitto.

The App runs its real main loop (``run_until_stopped``) in a thread, so the
``reload`` command takes the same path as SIGHUP. Nothing is mocked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edged.catalog.catalog import load_catalog
from edged.config.settings import load_settings
from edged.control.commands import COMMANDS
from edged.daemon.app import App
from edged.daemon.check import Preflight, preflight
from tests.helpers.broker import RunningBroker
from tests.helpers.commands import CommandClient
from tests.helpers.daemon import base_config, write_config

#: Photos the images source cycles through (SSD at 0.5: five people; two dogs;
#: a person and a tie; a 1280x720 cat).
PHOTOS = ("people_group.jpg", "pets.jpg", "grace_hopper.jpg", "cat_720p.jpg")


def photos_config(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker: RunningBroker, **pipeline: Any
) -> dict[str, Any]:
    """Config: an ``images`` source over :data:`PHOTOS` (looping), one SSD pipeline ``door``.

    Every command is allowed: these tests are about what the commands do
    (``test_allow.py`` is about the allow-list).
    """
    folder = tmp_path / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    for name in PHOTOS:
        link = folder / name
        if not link.exists():
            link.symlink_to(media_dir / name)
    cfg = base_config(tmp_path, models_dir, broker)
    cfg["commands"] = {"allow": sorted(COMMANDS)}
    cfg["sources"] = [{"name": "cam0", "kind": "images", "uri": folder, "fps": 10, "loop": True}]
    cfg["pipelines"] = [
        {
            "name": "door",
            "source": "cam0",
            "task": "detection",
            "model": "ssd-mobilenet-v1-coco-int8",
            "threshold": 0.5,
            "publish": "all",
            "max_fps": 10,
            "threads": 1,
            **pipeline,
        }
    ]
    return cfg


@dataclass
class RunningApp:
    """An App serving its main loop in a thread, with its config file."""

    app: App
    config: Path
    broker: RunningBroker

    def client(self, *, v5: bool = True) -> CommandClient:
        return CommandClient(self.broker.host, self.broker.port, v5=v5)

    def rewrite(self, cfg: dict[str, Any]) -> None:
        """Replace the config file (a later ``reload`` reads it)."""
        write_config(self.config, cfg)


def start_app(
    cfg: dict[str, Any], path: Path, *, prepare: Callable[[Preflight], None] | None = None
) -> tuple[App, Callable[[], None]]:
    """Build and start an App from ``cfg`` written to ``path``; returns it and its stopper.

    ``prepare`` sees the pre-flight's loaded models before the graph is built
    (tests wrap a real model there, e.g. to slow it down).
    """
    write_config(path, cfg)
    settings = load_settings(path)
    checked = preflight(settings, load_catalog(settings.models.catalog), connect_broker=False)
    assert not checked.problems, checked.problems
    if prepare is not None:
        prepare(checked)
    app = App(settings, checked)
    app.start()
    loop = threading.Thread(
        target=app.run_until_stopped, args=(lambda: load_settings(path),), daemon=True
    )
    loop.start()

    def stop() -> None:
        app.request_stop()
        loop.join(10)
        app.stop()

    assert app.mqtt.wait_connected(10), "the App did not connect to the broker"
    return app, stop


@pytest.fixture
def running(
    tmp_path: Path, models_dir: Path, media_dir: Path, broker: RunningBroker
) -> Iterator[RunningApp]:
    """A started App on the photos (see :func:`photos_config`), stopped at teardown."""
    path = tmp_path / "edged.toml"
    app, stop = start_app(photos_config(tmp_path, models_dir, media_dir, broker), path)
    try:
        with CommandClient(broker.host, broker.port) as client:
            wait_until_serving(client)
        yield RunningApp(app, path, broker)
    finally:
        stop()


def wait_until_serving(client: CommandClient, timeout: float = 10.0) -> None:
    """Ping until the daemon answers: its SUBSCRIBE may reach the broker after our first publish."""
    deadline = time.monotonic() + timeout
    while True:
        corr = client.send("ping")
        try:
            client.wait(corr, timeout=0.5)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
