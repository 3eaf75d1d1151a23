"""Energy per inference: measured where the device has a sensor, else estimated and marked so.

Three sources, best first:

1. **RAPL** (Intel/AMD x86): ``/sys/class/powercap/intel-rapl:N/energy_uj``,
   a cumulative package-energy counter in µJ. Read before and after the
   timed loop; the difference over the loop's inferences is *measured* energy.
   It covers the whole CPU package, so it includes the package's idle draw
   and anything else running meanwhile. (Since Linux 5.10 the counters are
   root-only, because of the PLATYPUS side channel: as a normal user they are
   usually unreadable and the estimate is used.)
2. **A power sensor** named with ``--power-sensor``: a sysfs hwmon file in
   µW (``power1_input``, e.g. an INA3221 on a Jetson carrier or an INA219 HAT),
   sampled every 20 ms in a thread while the loop runs; the mean power times
   the loop's wall time over its inferences is *measured* energy.
3. **Estimate** from CPU time: the process's CPU seconds per inference times
   the device profile's all-core load power divided by its core count, i.e.
   the share of a fully loaded board's power that this inference occupies.
   The board's idle draw is not included. It is marked ``estimated``.

The profiles' watt figures are published measurements or vendor power
budgets, cited in :data:`PROFILES`; they are rough (±25 % is realistic), which
is why the label says *estimated* whenever they are used.
"""

from __future__ import annotations

import contextlib
import platform
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edged.errors import EdgedError

RAPL_ROOT = Path("/sys/class/powercap")


@dataclass(frozen=True, slots=True)
class PowerProfile:
    """Board power with every CPU core busy, and where the figure comes from."""

    name: str
    load_w: float
    cores: int
    source: str

    def joules(self, cpu_s: float) -> float:
        """Energy of ``cpu_s`` CPU-seconds at this board's all-core load power."""
        return cpu_s * self.load_w / self.cores


PROFILES: dict[str, PowerProfile] = {
    "pi4": PowerProfile(
        "pi4",
        load_w=6.4,
        cores=4,
        source=(
            "Raspberry Pi 4 B, 400% CPU load (stress --cpu 4): 1280 mA at 5 V = 6.4 W; "
            "Jeff Geerling, pidramble.com/wiki/benchmarks/power-consumption"
        ),
    ),
    "pi5": PowerProfile(
        "pi5",
        load_w=7.9,
        cores=4,
        source=(
            "Raspberry Pi 5, multi-core Geekbench run: 7.9 W at the USB-C input; "
            "Jeff Geerling's Pi 5 review, github.com/geerlingguy/sbc-reviews/issues/21 "
            "(that meter is discussed there as reading low: treat as a lower bound)"
        ),
    ),
    "jetson-orin-nano": PowerProfile(
        "jetson-orin-nano",
        load_w=15.0,
        cores=6,
        source=(
            "Jetson Orin Nano 8GB, 15 W nvpmodel power mode (NVIDIA's module power budget, "
            "6 Cortex-A78AE cores); CPU-only inference stays below it: an upper bound"
        ),
    ),
    "generic-x86": PowerProfile(
        "generic-x86",
        load_w=6.0,
        cores=4,
        source=(
            "Intel Processor N100 (a common fanless edge x86): TDP 6 W, 4 cores; "
            "Intel ARK product 231803. Server CPUs draw far more: pass --device-profile "
            "or use RAPL"
        ),
    ),
}


class EnergyError(EdgedError):
    """An energy sensor or profile could not be used."""


def detect_profile() -> PowerProfile:
    """The profile of this board, from the device-tree model (Pi, Jetson) or the CPU arch."""
    model = ""
    with contextlib.suppress(OSError):  # no device tree: not a Pi or Jetson
        model = Path("/proc/device-tree/model").read_text(errors="replace").strip("\x00\n ")
    lowered = model.lower()
    if "raspberry pi 5" in lowered:
        return PROFILES["pi5"]
    if "raspberry pi 4" in lowered:
        return PROFILES["pi4"]
    if "orin nano" in lowered:
        return PROFILES["jetson-orin-nano"]
    return PROFILES["generic-x86"]


def profile(name: str | None) -> PowerProfile:
    """The profile called ``name`` ("auto" or None: detected)."""
    if name in (None, "", "auto"):
        return detect_profile()
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(sorted(PROFILES))
        raise EnergyError(f"unknown device profile {name!r} (known: {known}, auto)") from None


def rapl_domains(root: Path = RAPL_ROOT) -> list[Path]:
    """Readable package-level RAPL counters (``intel-rapl:N``, not their ``:N:M`` subzones)."""
    out = []
    for zone in sorted(root.glob("intel-rapl:*")):
        if zone.name.count(":") != 1:
            continue  # a subzone (core, uncore, dram) is already inside its package
        counter = zone / "energy_uj"
        try:
            int(counter.read_text())
        except (OSError, ValueError):
            continue
        out.append(zone)
    return out


def _read_uj(zone: Path) -> tuple[int, int]:
    value = int((zone / "energy_uj").read_text())
    try:
        wrap = int((zone / "max_energy_range_uj").read_text())
    except (OSError, ValueError):
        wrap = 0
    return value, wrap


class _PowerSampler(threading.Thread):
    """Samples a µW hwmon file every ``period_s`` until stopped."""

    def __init__(self, path: Path, period_s: float = 0.02) -> None:
        super().__init__(name="power-sampler", daemon=True)
        self.path = path
        self.period_s = period_s
        self.samples: list[float] = []
        self._stop_event = threading.Event()

    def read_w(self) -> float:
        return int(self.path.read_text().strip()) / 1e6

    def run(self) -> None:
        while not self._stop_event.is_set():
            # One bad read (an I2C hiccup) must not end the measurement.
            with contextlib.suppress(OSError, ValueError):
                self.samples.append(self.read_w())
            self._stop_event.wait(self.period_s)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(1.0)


@dataclass(frozen=True, slots=True)
class EnergyReading:
    """Energy of one timed loop, ready for the label."""

    mj_per_inference: float
    method: Literal["rapl", "sensor", "estimated"]
    estimated: bool
    detail: str


class EnergyMeter:
    """Wraps the timed loop: ``start()``, run inferences, ``stop(n)``.

    Chooses the best source available at construction: a configured sensor,
    then RAPL, then the profile estimate.
    """

    def __init__(
        self,
        device: PowerProfile,
        *,
        sensor: Path | None = None,
        rapl_root: Path = RAPL_ROOT,
    ) -> None:
        self.device = device
        self.sensor = sensor
        if sensor is not None:
            try:
                _PowerSampler(sensor).read_w()
            except (OSError, ValueError) as exc:
                raise EnergyError(
                    f"power sensor {sensor} is not readable as µW ({exc}); "
                    "give a hwmon power*_input file"
                ) from None
        self.rapl = [] if sensor is not None else rapl_domains(rapl_root)
        self._sampler: _PowerSampler | None = None
        self._rapl0: list[tuple[int, int]] = []
        self._t0 = self._cpu0 = 0.0

    def start(self) -> None:
        if self.sensor is not None:
            self._sampler = _PowerSampler(self.sensor)
            self._sampler.start()
        self._rapl0 = [_read_uj(z) for z in self.rapl]
        self._t0 = time.perf_counter()
        self._cpu0 = time.process_time()

    def stop(self, inferences: int) -> EnergyReading:
        """Energy per inference over the ``inferences`` run since :meth:`start`."""
        wall = time.perf_counter() - self._t0
        cpu = time.process_time() - self._cpu0
        n = max(1, inferences)
        if self._sampler is not None:
            self._sampler.stop()
            samples = self._sampler.samples or [self._sampler.read_w()]
            mean_w = sum(samples) / len(samples)
            return EnergyReading(
                mean_w * wall / n * 1e3,
                "sensor",
                estimated=False,
                detail=f"{self.sensor}: mean {mean_w:.2f} W over {wall:.2f} s ({len(samples)} samples)",
            )
        if self.rapl:
            total = 0
            for zone, (before, wrap) in zip(self.rapl, self._rapl0, strict=True):
                after, _ = _read_uj(zone)
                delta = after - before
                if delta < 0 and wrap:
                    delta += wrap  # the counter wrapped during the loop
                total += delta
            names = ", ".join(z.name for z in self.rapl)
            return EnergyReading(
                total / 1e3 / n,
                "rapl",
                estimated=False,
                detail=f"RAPL package energy ({names}) over {wall:.2f} s, includes package idle",
            )
        joules = self.device.joules(cpu)
        return EnergyReading(
            joules / n * 1e3,
            "estimated",
            estimated=True,
            detail=(
                f"{cpu / n * 1e3:.2f} ms CPU per inference x {self.device.load_w} W / "
                f"{self.device.cores} cores ({self.device.name}: {self.device.source})"
            ),
        )


def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo (x86 ``model name``; ARM ``Model``/``Hardware``)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() not in fields:
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    for key in ("model name", "Model", "Hardware", "cpu model", "Processor"):
        if fields.get(key):
            return fields[key]
    return platform.processor() or platform.machine()
