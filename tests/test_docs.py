"""The README, config reference and example config stay true to the code."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from edged.config.reference import reference_markdown
from edged.config.settings import Settings, load_settings

REPO = Path(__file__).resolve().parent.parent


def test_config_reference_is_generated_from_code() -> None:
    """docs/configuration.md equals `edged config reference` (regenerate it when this fails)."""
    on_disk = (REPO / "docs" / "configuration.md").read_text()
    assert on_disk.strip() == reference_markdown().strip()


def test_example_config_is_valid() -> None:
    """examples/edged.toml loads without a single problem."""
    settings = load_settings(REPO / "examples" / "edged.toml")
    assert settings.mqtt.tls, "the example must show TLS"
    assert settings.mqtt.password_file is not None


def test_example_config_shows_every_section_key() -> None:
    """Every key of [outbox], [offload], [metrics] and [events] appears in the example."""
    data = tomllib.loads((REPO / "examples" / "edged.toml").read_text())
    for section in ("outbox", "offload", "metrics", "events"):
        fields = set(Settings.model_fields[section].annotation.model_fields)  # type: ignore[union-attr]
        assert fields == set(data[section]), section


def test_readme_opens_with_two_commands() -> None:
    """The README opens with exactly two shell commands: the demo, then the test suite."""
    text = (REPO / "README.md").read_text()
    head = text.split("\n---", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", head, flags=re.S)
    assert len(blocks) == 2
    assert "edged demo" in blocks[0]
    assert blocks[1].strip() == "bash .ci/run"


def _fault_matrix_test_ids() -> list[str]:
    """Every `tests/...::name` the README's fault matrix names, with `…::` resolved."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Fault matrix", 1)[1].split("\n## ", 1)[0]
    ids: list[str] = []
    for row in section.splitlines():
        if not row.startswith("|"):
            continue
        last_file = ""
        for ref in re.findall(r"`((?:tests/[\w/]+\.py|…)(?:::[\w\[\],.…-]+)+)`", row):
            path, _, rest = ref.partition("::")
            path = last_file if path == "…" else path
            last_file = path
            ids.append(f"{path}::{rest}")
    return ids


def test_fault_matrix_names_tests_that_exist() -> None:
    """Each test the README's fault matrix names is defined in the file it names."""
    ids = _fault_matrix_test_ids()
    assert len(ids) >= 15
    for node in ids:
        path, *names = node.split("::")
        source = (REPO / path).read_text()
        for name in names:
            bare = name.split("[", 1)[0]
            if bare == "…":  # an elided class between file and test
                continue
            if bare.startswith("…"):  # an abbreviated name: only its tail is given
                assert bare[1:] in source, node
            else:
                assert re.search(rf"\b(def|class) {re.escape(bare)}\b", source), node


def test_the_package_layout_table_matches_the_folders() -> None:
    """README's layout table names every package of edged/, and every module it names exists."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("Package layout") : readme.index("\n## Commands")]
    named = set(re.findall(r"`edged/([a-z_]+)/`", section))
    packages = {p.parent.name for p in (REPO / "edged").glob("*/__init__.py")}
    assert named == packages, (
        f"only in README: {named - packages}, only on disk: {packages - named}"
    )


def test_every_module_named_for_the_data_flow_exists() -> None:
    """Each box of the data-flow diagram names modules that exist (README "How it works")."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## How it works") : readme.index("Package layout")]
    modules = set(re.findall(r"`([a-z_]+/[a-z_]+\.py)`", section))
    assert len(modules) > 20
    missing = sorted(m for m in modules if not (REPO / "edged" / m).is_file())
    assert not missing, f"README names modules that do not exist: {missing}"
