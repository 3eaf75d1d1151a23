"""The playbook, role and example inventory pass ansible-lint and agree with the catalog."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from edged.catalog.catalog import load_catalog
from tests.deploy.conftest import require_deploy_tools
from tests.deploy.machine import ANSIBLE_DIR, run, tool_env

pytestmark = pytest.mark.deploy

DEVICE_CLASSES = ("pi4", "pi5", "jetson")


@pytest.fixture(scope="module")
def ansible_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ansible/ copied with symlinks resolved.

    ansible-lint keeps a cache (.ansible/) in the project it lints; linting a
    copy keeps the checkout clean.
    """
    require_deploy_tools("ansible-playbook", "ansible-lint")
    dest = tmp_path_factory.mktemp("lint") / "ansible"
    shutil.copytree(ANSIBLE_DIR, dest, symlinks=False)
    return dest


def test_ansible_lint_production_profile(ansible_copy: Path) -> None:
    """ansible-lint passes with the strictest profile, 'production' (yamllint included)."""
    result = run(
        ["ansible-lint", "--offline", "--nocolor", "--profile", "production"],
        cwd=ansible_copy,
        env=tool_env(),
        check=False,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Profile 'production' was required, and it passed" in output, output


def test_playbook_syntax_check(ansible_copy: Path) -> None:
    """ansible-playbook --syntax-check accepts site.yml with the example inventory."""
    result = run(
        ["ansible-playbook", "--syntax-check", "-i", "inventory/example.yml", "site.yml"],
        cwd=ansible_copy,
        env=tool_env(),
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _ansible_json(cmd: list[str], cwd: Path) -> Any:
    env = {
        **tool_env(),
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
    }
    return json.loads(run(cmd, cwd=cwd, env=env).stdout)


def test_device_classes_choose_camera_threads_and_catalog_models(ansible_copy: Path) -> None:
    """Each device class in the example inventory sets camera kind, threads and catalog models."""
    inventory = _ansible_json(
        ["ansible-inventory", "-i", "inventory/example.yml", "--list"], ansible_copy
    )
    catalog = load_catalog()
    for group in DEVICE_CLASSES:
        (host,) = inventory[group]["hosts"]
        hostvars = inventory["_meta"]["hostvars"][host]
        assert hostvars["edged_camera_kind"] in ("picamera2", "v4l2", "stream", "file"), group
        assert int(hostvars["edged_threads"]) >= 1, group
        assert hostvars["edged_models"], group
        for name in hostvars["edged_models"]:
            catalog.get(name)  # raises for a name the catalog does not know
        used = {p["model"] for p in hostvars.get("edged_pipelines", [])}
        assert used <= set(hostvars["edged_models"]), f"{group}: pipelines use uninstalled models"


def test_role_model_hashes_match_the_catalog(ansible_copy: Path) -> None:
    """The sha256 the role verifies models against are the catalog's."""
    result = _ansible_json(
        [
            "ansible", "localhost", "-m", "ansible.builtin.debug", "-a", "var=edged_model_files",
            "-e", "@roles/edged/defaults/main.yml",
        ],
        ansible_copy,
    )  # fmt: skip
    files = result["plays"][0]["tasks"][0]["hosts"]["localhost"]["edged_model_files"]
    catalog = load_catalog()
    assert set(files) <= set(catalog.names())
    for name, listed in files.items():
        expected = {a.name: a.sha256 for a in catalog.get(name).artifacts()}
        assert {f["name"]: f["sha256"] for f in listed} == expected, name
