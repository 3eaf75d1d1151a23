"""Energy per inference: RAPL and power-sensor readings (sysfs files laid out in a tmp dir), the estimate."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edged.label.energy import (
    PROFILES,
    EnergyError,
    EnergyMeter,
    cpu_model,
    profile,
    rapl_domains,
)


def rapl_tree(root: Path, value: int, wrap: int = 2**32) -> Path:
    """A powercap tree like the kernel's: one package zone and one subzone."""
    zone = root / "intel-rapl:0"
    (root / "intel-rapl:0:0").mkdir(parents=True)
    zone.mkdir(exist_ok=True)
    (zone / "energy_uj").write_text(f"{value}\n")
    (zone / "max_energy_range_uj").write_text(f"{wrap}\n")
    (root / "intel-rapl:0:0" / "energy_uj").write_text("5\n")
    return zone


class TestSources:
    """The meter prefers a sensor, then RAPL, and otherwise estimates and says so."""

    def test_rapl_energy_is_measured_per_inference(self, tmp_path: Path) -> None:
        zone = rapl_tree(tmp_path, 1_000_000)
        assert rapl_domains(tmp_path) == [zone]  # the :0:0 subzone is inside the package
        meter = EnergyMeter(PROFILES["generic-x86"], rapl_root=tmp_path)
        meter.start()
        (zone / "energy_uj").write_text("1500000\n")  # 0.5 J during the loop
        reading = meter.stop(10)
        assert (reading.method, reading.estimated) == ("rapl", False)
        assert reading.mj_per_inference == pytest.approx(50.0)

    def test_rapl_wraparound(self, tmp_path: Path) -> None:
        zone = rapl_tree(tmp_path, 999_000, wrap=1_000_000)
        meter = EnergyMeter(PROFILES["generic-x86"], rapl_root=tmp_path)
        meter.start()
        (zone / "energy_uj").write_text("1000\n")  # wrapped: 2000 µJ in total
        assert meter.stop(2).mj_per_inference == pytest.approx(1.0)

    def test_unreadable_rapl_falls_back_to_the_marked_estimate(self, tmp_path: Path) -> None:
        zone = rapl_tree(tmp_path, 1)
        (zone / "energy_uj").write_text("permission denied?")  # not a number: unusable
        meter = EnergyMeter(PROFILES["pi4"], rapl_root=tmp_path)
        meter.start()
        sum(i * i for i in range(200_000))  # some CPU time to attribute
        reading = meter.stop(4)
        assert (reading.method, reading.estimated) == ("estimated", True)
        assert reading.mj_per_inference > 0
        assert "6.4 W / 4 cores" in reading.detail
        assert "pidramble" in reading.detail

    def test_power_sensor_is_sampled(self, tmp_path: Path) -> None:
        sensor = tmp_path / "power1_input"
        sensor.write_text("5000000\n")  # 5 W in µW
        meter = EnergyMeter(PROFILES["jetson-orin-nano"], sensor=sensor)
        meter.start()
        time.sleep(0.2)
        reading = meter.stop(4)
        assert (reading.method, reading.estimated) == ("sensor", False)
        # 5 W x ~0.2 s / 4 inferences = ~250 mJ each
        assert 200 < reading.mj_per_inference < 400

    def test_a_bad_sensor_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(EnergyError, match="not readable as µW"):
            EnergyMeter(PROFILES["pi5"], sensor=tmp_path / "missing")


def test_profiles_cite_their_figures() -> None:
    assert set(PROFILES) == {"pi4", "pi5", "jetson-orin-nano", "generic-x86"}
    for p in PROFILES.values():
        assert p.load_w > 0
        assert p.cores > 0
        assert len(p.source) > 40
    assert profile("pi5") is PROFILES["pi5"]
    assert profile("auto").name in PROFILES
    with pytest.raises(EnergyError, match="known: generic-x86"):
        profile("pi3")


def test_cpu_model_is_read() -> None:
    assert cpu_model()
