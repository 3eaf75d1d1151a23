"""``edged models report``: the page renders in a real headless Chromium and its plots are not blank."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from edged.__main__ import main
from edged.label.nutrition import NutritionLabel

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PLOTS = ("accuracy_latency", "energy", "size", "offload")
REQUIRE = ("recall(person)>=0.9", "p95_ms<=50")

# Appended to a copy of the page for the measuring pass only: it writes where
# each plot landed into the DOM, which --dump-dom prints.
_MEASURE = """<script>
const r = {}; for (const f of document.querySelectorAll('figure.plot')) {
  const b = f.querySelector('img').getBoundingClientRect();
  r[f.id] = [b.left, b.top, b.width, b.height, f.querySelector('img').naturalWidth]; }
r.height = document.documentElement.scrollHeight;
const p = document.createElement('pre'); p.id = 'rects'; p.textContent = JSON.stringify(r);
document.body.appendChild(p);
</script>"""


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    profile = tmp_path / "chromium-profile"
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--no-first-run",
        f"--user-data-dir={profile}", "--hide-scrollbars", "--force-device-scale-factor=1",
        *args,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)


@pytest.fixture(scope="module")
def report(
    benched: dict[str, NutritionLabel], label_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("report")
    stats = out / "offload-stats.json"
    # Input for the offload panel, in the layout the offload bench writes.
    stats.write_text(
        json.dumps(
            {
                "frames": 301,
                "policy": {"requests": 14, "bytes": 520_000, "energy_j": 2.1},
                "every_frame": {"requests": 301, "bytes": 11_200_000, "energy_j": 44.0},
            }
        )
    )
    args = ["models", "report", "--models-dir", str(label_models), "--out", str(out)]
    for r in REQUIRE:
        args += ["--require", r]
    assert main([*args, "--offload-stats", str(stats)]) == 0
    return out / "report.html"


def test_the_page_is_self_contained(report: Path) -> None:
    page = report.read_text()
    assert page.count('src="data:image/png;base64,') == len(PLOTS)
    assert "http" not in page.replace("http-equiv", "")  # nothing fetched from anywhere
    for key in PLOTS:
        assert (report.parent / f"{key}.png").stat().st_size > 5_000
    for model in ("yolox-nano-coco-int8", "yamnet", "movenet-lightning-int8"):
        assert model in page
    assert "recall(person)&gt;=0.9, p95_ms&lt;=50 (detection)" in page


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_chromium_renders_every_plot(report: Path, tmp_path: Path) -> None:
    """A screenshot of the page shows four non-blank plots where the layout put them."""
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text().replace("</body>", _MEASURE + "</body>"))
    dom = chromium(tmp_path, "--window-size=1280,900", "--dump-dom", probe.as_uri()).stdout
    start = dom.index('<pre id="rects">') + len('<pre id="rects">')
    rects = json.loads(dom[start : dom.index("</pre>", start)])
    height = int(rects.pop("height"))

    shot = tmp_path / "report.png"
    chromium(tmp_path, f"--window-size=1280,{height}", f"--screenshot={shot}", report.as_uri())
    image = cv2.imread(str(shot), cv2.IMREAD_GRAYSCALE)
    assert image is not None
    assert image.shape[0] >= height - 5

    for key in PLOTS:
        left, top, width, h, natural = rects[f"plot-{key}"]
        assert natural > 0, f"{key}: the image did not decode"
        assert width > 300, f"{key}: laid out at {width}x{h}"
        assert h > 150, f"{key}: laid out at {width}x{h}"
        region = image[int(top) : int(top + h), int(left) : int(left + width)].astype(np.float64)
        non_white = float((region < 200).mean())
        assert region.std() > 20, f"{key}: the plot region is flat (std {region.std():.1f})"
        assert 0.02 < non_white < 0.8, f"{key}: {non_white:.1%} of the region is drawn"
