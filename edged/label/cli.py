"""The ``edged models bench | quantize | select | report`` subcommands, and progress bars.

Registered into the ``models`` subparser of :mod:`edged.__main__` by
:func:`add_commands`, so that the CLI module stays a short list of commands.
Progress bars (tqdm) are drawn only when stderr is a terminal: under systemd,
in CI or in a pipe they would only fill logs with carriage returns.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from edged.catalog.catalog import Catalog, CatalogEntry
from edged.catalog.fetch import verify
from edged.config.accelerators import ACCELERATORS, valid_accelerator
from edged.config.settings import Settings
from edged.errors import EX_FAILURE, EX_OK, EX_USAGE, ConfigError, EdgedError
from edged.label.nutrition import (
    NutritionLabel,
    label_key,
    load_label,
    save_label,
    stored_accelerators,
)
from edged.label.parity import DEFAULT_TOLERANCE, check_parity, parity_text

T = TypeVar("T")
Loader = Callable[[argparse.Namespace], tuple[Settings, Catalog]]


# -- progress -------------------------------------------------------------------


def _tty() -> bool:
    return sys.stderr.isatty()


def progress(items: Iterable[T], *, total: int, desc: str) -> Iterator[T]:
    """Iterate with a progress bar on a terminal; plainly otherwise."""
    if not _tty():
        yield from items
        return
    from tqdm import tqdm  # noqa: PLC0415

    yield from tqdm(items, total=total, desc=desc, file=sys.stderr, leave=False)


class DownloadBars:
    """A ``(name, done, total)`` callback for :func:`edged.catalog.fetch.pull`: one bar per file."""

    def __init__(self) -> None:
        self._bars: dict[str, Any] = {}

    def __call__(self, name: str, done: int, total: int) -> None:
        if not _tty():
            return
        from tqdm import tqdm  # noqa: PLC0415

        bar = self._bars.get(name)
        if bar is None:
            bar = self._bars[name] = tqdm(
                total=total or None, desc=name, unit="B", unit_scale=True, file=sys.stderr
            )
        bar.update(done - bar.n)
        if total and done >= total:
            bar.close()


class StepBar:
    """A ``(done, total)`` callback drawing one bar (calibration images)."""

    def __init__(self, desc: str) -> None:
        self.desc = desc
        self._bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if not _tty():
            return
        from tqdm import tqdm  # noqa: PLC0415

        if self._bar is None:
            self._bar = tqdm(total=total, desc=self.desc, file=sys.stderr, leave=False)
        self._bar.update(done - self._bar.n)
        if done >= total:
            self._bar.close()


# -- helpers --------------------------------------------------------------------


def installed(catalog: Catalog, models_dir: Path, task: str | None = None) -> list[CatalogEntry]:
    """Catalog entries whose model file is in ``models_dir`` with the right sha256."""
    return [
        e
        for e in catalog.models
        if (task is None or e.task == task) and verify(e.file, models_dir / e.file.name) is None
    ]


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def _shown(key: str) -> bool:
    """Accuracy metrics worth a table column: overall ones and the person class."""
    return key != "f1" and ("(" not in key or key.endswith("(person)"))


def label_table(labels: Sequence[NutritionLabel]) -> str:
    """The nutrition labels as a fixed-width text table."""
    head = (
        f"{'model':26} {'task':9} {'MB':>5} {'weights':7} {'runtime':22} {'accel':9} {'thr':>3} "
        f"{'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'inf/s':>6} {'peakMB':>6} {'mJ/inf':>10}  "
        "accuracy (golden set)  parity"
    )
    lines = [head, "-" * len(head)]
    for lab in labels:
        lat, e, acc = lab.latency_ms, lab.energy, lab.accuracy
        energy = "-"
        if e is not None:
            energy = f"{e.mj_per_inference:.1f}" + (" est." if e.estimated else f" {e.method}")
        accuracy = "-"
        if acc is not None:
            shown = ", ".join(
                f"{k} {v:.2f}" for k, v in acc.metrics.items() if v is not None and _shown(k)
            )
            accuracy = f"{shown} ({acc.golden})"
        lines.append(
            f"{lab.model:26} {lab.task:9} {lab.size_mb:5.2f} {lab.quantization:7} "
            f"{lab.runtime:22.22} {lab.accelerator:9} {lab.threads or '-':>3} "
            f"{_fmt(lat.p50 if lat else None):>7} {_fmt(lat.p95 if lat else None):>7} "
            f"{_fmt(lat.p99 if lat else None):>7} {_fmt(lab.throughput_ips):>6} "
            f"{_fmt(lab.peak_mem_mb, '.0f'):>6} {energy:>10}  {accuracy}  {parity_text(lab.parity)}"
        )
    return "\n".join(lines)


def comparisons(labels: Sequence[NutritionLabel], catalog: Catalog) -> list[str]:
    """One line per derived model (e.g. a quantized variant) against the model it came from,
    both on the same accelerator."""
    by_key = {(lab.model, lab.accelerator): lab for lab in labels}
    out = []
    for lab in labels:
        entry = next((e for e in catalog.models if e.name == lab.model), None)
        base = (
            by_key.get((entry.derived_from, lab.accelerator))
            if entry and entry.derived_from
            else None
        )
        if base is None or lab.latency_ms is None or base.latency_ms is None:
            continue
        acc = ""
        if lab.accuracy and base.accuracy:
            keys = [k for k in base.accuracy.metrics if "(" not in k]
            acc = ", ".join(
                f"{k} {_fmt(lab.accuracy.metrics.get(k), '.2f')} vs {_fmt(base.accuracy.metrics.get(k), '.2f')}"
                for k in keys
            )
        out.append(
            f"{lab.model} vs {base.model}: size {lab.size_mb:.2f} vs {base.size_mb:.2f} MB "
            f"({lab.size_mb / base.size_mb:.2f}x), p50 {lab.latency_ms.p50:.1f} vs "
            f"{base.latency_ms.p50:.1f} ms ({lab.latency_ms.p50 / base.latency_ms.p50:.2f}x); {acc}"
        )
    return out


# -- commands -------------------------------------------------------------------


def _bench_one(
    args: argparse.Namespace,
    settings: Settings,
    entry: CatalogEntry,
    *,
    golden: str,
    threads: int,
    accelerator: str = "cpu",
) -> NutritionLabel:
    """Measure one model on one accelerator in a subprocess with the measuring options of
    ``args``; store the label (per model and accelerator)."""
    from edged.label.bench import BenchSpec, bench  # noqa: PLC0415
    from edged.label.golden import media_dir  # noqa: PLC0415

    spec = BenchSpec(
        model=entry.name,
        models_dir=str(settings.models.dir),
        media=str(media_dir(args.media)),
        golden=golden,
        catalog=str(settings.models.catalog) if settings.models.catalog else None,
        threads=threads,
        runs=args.runs,
        warmup=args.warmup,
        device_profile=args.device_profile,
        power_sensor=str(args.power_sensor) if args.power_sensor else None,
        accelerator=accelerator,
    )
    label = bench(spec)
    save_label(settings.models.dir, label)
    return label


def _check_accelerator(settings: Settings, entry: CatalogEntry, accelerator: str) -> None:
    """ConfigError naming ``--accelerator`` and what is installed, before any process starts."""
    from edged.infer import accel  # noqa: PLC0415

    try:
        accel.candidates(entry.runtime, accelerator, settings.models.dir / entry.file.name)
    except EdgedError as exc:
        raise ConfigError([("--accelerator", f"{entry.name}: {exc}")]) from None


def _bench_with_parity(
    args: argparse.Namespace,
    settings: Settings,
    entry: CatalogEntry,
    *,
    golden: str,
    threads: int,
    accelerator: str,
) -> list[NutritionLabel]:
    """Bench ``entry`` on ``accelerator``; off the CPU, also check parity with the CPU label.

    The CPU reference is the stored label of the same file on the same golden
    set; when there is none it is measured first (and stored), so that every
    accelerator label carries its parity verdict. Returns the labels measured.
    """
    label = _bench_one(
        args, settings, entry, golden=golden, threads=threads, accelerator=accelerator
    )
    if label.accelerator == "cpu":
        return [label]
    measured = []
    assert label.accuracy is not None  # bench always evaluates the golden set
    reference = load_label(settings.models.dir, entry.name, entry.file.sha256)
    if (
        reference is None
        or not reference.measured
        or reference.accuracy is None
        or reference.accuracy.golden != label.accuracy.golden
    ):
        reference = _bench_one(
            args, settings, entry, golden=golden, threads=threads, accelerator="cpu"
        )
        measured.append(reference)
    parity = check_parity(label, reference, args.parity_tolerance)
    label = label.model_copy(update={"parity": parity})
    save_label(settings.models.dir, label)
    return [*measured, label]


def _golden_for(args: argparse.Namespace, entry: CatalogEntry) -> str:
    """``--golden`` when it is for this model's task; "" (the task's shipped set) otherwise."""
    from edged.label.golden import load_golden  # noqa: PLC0415

    if not args.golden:
        return ""
    chosen = load_golden(args.golden)
    if chosen.task == entry.task:
        return str(args.golden)
    if args.all:
        return ""  # --all with a detection set: the other tasks use their own sets
    raise EdgedError(
        f"golden set {chosen.name!r} is for {chosen.task}; {entry.name} is {entry.task}"
    )


def cmd_bench(args: argparse.Namespace, loader: Loader) -> int:
    settings, catalog = loader(args)
    if args.all:
        entries = installed(catalog, settings.models.dir)
        if not entries:
            raise EdgedError(
                f"no model is installed in {settings.models.dir}: run `edged models pull`"
            )
    elif args.models:
        entries = [catalog.get(name) for name in args.models]
    else:
        print("name a model or give --all", file=sys.stderr)
        return EX_USAGE
    if args.accelerator != "auto":
        if args.all:
            # --all --accelerator xnnpack: the models whose runtime has it (LiteRT's), not an
            # error for the ONNX ones.
            from edged.infer.accel import BY_RUNTIME, parse  # noqa: PLC0415

            base = parse(args.accelerator).name
            skipped = [e.name for e in entries if base not in BY_RUNTIME.get(e.runtime, ())]
            if skipped:
                print(f"not on {args.accelerator} (another runtime's accelerator): "
                      + ", ".join(skipped), file=sys.stderr)  # fmt: skip
            entries = [e for e in entries if e.name not in skipped]
        for e in entries:
            _check_accelerator(settings, e, args.accelerator)
    labels = [
        lab
        for e in progress(entries, total=len(entries), desc="bench")
        for lab in _bench_with_parity(
            args,
            settings,
            e,
            golden=_golden_for(args, e),
            threads=args.threads,
            accelerator=args.accelerator,
        )
    ]
    print(label_table(labels))
    for line in comparisons(labels, catalog):
        print(line)
    if any(lab.energy and lab.energy.estimated for lab in labels):
        print("est. = estimated from CPU time x device profile; no energy sensor was readable")
    for lab in labels:
        if lab.parity is not None and not lab.parity.passed:
            print(
                f"edged: {label_key(lab.model, lab.accelerator)} fails accuracy parity: "
                f"{parity_text(lab.parity)}; `edged models select` will not choose it",
                file=sys.stderr,
            )
    print(
        f"labels stored in {settings.models.dir} "
        "(<model>.label.json on the CPU, <model>@<accelerator>.label.json otherwise)"
    )
    return EX_OK


def cmd_quantize(args: argparse.Namespace, loader: Loader) -> int:
    from edged.label.quantize import quantize  # noqa: PLC0415

    settings, catalog = loader(args)
    result = quantize(
        catalog,
        args.model,
        settings.models.dir,
        args.calibration,
        args.name,
        activations=args.activations,
        float_convs=args.float_convs,
        max_images=args.max_images,
        progress=StepBar("calibration"),
    )
    source = catalog.get(args.model).file.size
    f = result.entry.file
    print(
        f"{result.entry.name}: {f.name} {f.size / 1e6:.2f} MB ({f.size / source:.2f}x of "
        f"{args.model}), sha256 {f.sha256}, {result.images} calibration images, "
        f"{result.seconds:.0f} s"
    )
    print(f"added to {settings.models.dir / 'local-catalog.toml'}; measure it with "
          f"`edged models bench {result.entry.name}`")  # fmt: skip
    return EX_OK


def _selection_table(selection: Any) -> str:
    head = f"{'#':>2} {'model':26} {'size MB':>7} {'p50 ms':>7} {'p95 ms':>7} {'cost':>8}  verdict"
    lines = [head, "-" * len(head)]
    for i, t in enumerate(selection.trials, start=1):
        lab = t.label
        lat = lab.latency_ms if lab else None
        why = f": {'; '.join(t.reasons)}" if t.reasons else ""
        lines.append(
            f"{i:>2} {t.model:26} {_fmt(lab.size_mb if lab else None, '.2f'):>7} "
            f"{_fmt(lat.p50 if lat else None):>7} {_fmt(lat.p95 if lat else None):>7} "
            f"{_fmt(t.cost, '.1f'):>8}  {t.verdict}{why}"
        )
    return "\n".join(lines)


def cmd_select(args: argparse.Namespace, loader: Loader) -> int:
    from edged.label.golden import default_golden, load_golden  # noqa: PLC0415
    from edged.label.select import (  # noqa: PLC0415
        Requirement,
        SelectError,
        check_metrics,
        select,
        write_config,
    )

    try:
        requirements = [Requirement.parse(r) for r in args.require]
    except SelectError as exc:
        print(f"edged: {exc}", file=sys.stderr)
        return EX_USAGE
    settings, catalog = loader(args)
    golden_ref = args.golden or default_golden(args.task)
    golden = load_golden(golden_ref).name
    entries = installed(catalog, settings.models.dir, args.task)
    if not entries:
        print(f"edged: no {args.task} model is installed in {settings.models.dir}", file=sys.stderr)
        return EX_FAILURE
    labels: dict[str, NutritionLabel | None] = {}
    for entry in entries:
        for accelerator in _select_accelerators(args, settings, entry):
            label = load_label(settings.models.dir, entry.name, entry.file.sha256, accelerator)
            fresh = (
                label is not None
                and label.measured
                and label.accuracy is not None
                and label.accuracy.golden == golden
                and (args.threads is None or label.threads == args.threads)
                and (accelerator == "cpu" or label.parity is not None)
            )
            if not fresh:
                label = None
                if not args.no_bench:
                    label = _bench_with_parity(
                        args,
                        settings,
                        entry,
                        golden=golden_ref,
                        threads=args.threads or 2,
                        accelerator=accelerator,
                    )[-1]
            labels[label_key(entry.name, label.accelerator if label else accelerator)] = label
    try:
        check_metrics(requirements, labels)
    except SelectError as exc:
        print(f"edged: {exc}", file=sys.stderr)
        return EX_USAGE
    selection = select(requirements, labels)
    print(f"candidates for {args.task} on golden set {golden}, cheapest first "
          "(cost = size MB x p50 ms):")  # fmt: skip
    print(_selection_table(selection))
    if selection.chosen is None:
        print(f"edged: {selection.explanation}", file=sys.stderr)
        return EX_FAILURE
    print(f"selected: {selection.chosen} ({selection.explanation})")
    if args.write_config is not None:
        if not args.pipeline:
            print("edged: --write-config needs --pipeline NAME", file=sys.stderr)
            return EX_USAGE
        chosen = labels[selection.chosen]
        assert chosen is not None  # only a measured candidate is chosen
        write_config(args.write_config, args.pipeline, chosen.model, args.task, chosen.accelerator)
        print(
            f"{args.write_config}: pipeline {args.pipeline!r} now uses {chosen.model} "
            f"on {chosen.accelerator}"
        )
    return EX_OK


def _select_accelerators(
    args: argparse.Namespace, settings: Settings, entry: CatalogEntry
) -> list[str]:
    """The accelerators ``entry`` is a candidate on: the CPU, every one it has a stored label
    for, and each ``--accelerator`` asked for (benched when missing)."""
    wanted = ["cpu", *stored_accelerators(settings.models.dir, entry.name)]
    for accelerator in args.accelerators:
        _check_accelerator(settings, entry, accelerator)
        wanted.append(accelerator)
    return list(dict.fromkeys(wanted))


def cmd_report(args: argparse.Namespace, loader: Loader) -> int:
    from edged.label.report import read_offload_stats, render  # noqa: PLC0415
    from edged.label.select import Requirement  # noqa: PLC0415

    settings, catalog = loader(args)
    requirements = [Requirement.parse(r) for r in args.require]
    labels = [
        lab
        for e in catalog.models
        if (lab := load_label(settings.models.dir, e.name, e.file.sha256)) is not None
    ]
    offload = read_offload_stats(args.offload_stats) if args.offload_stats else None
    path = render(
        labels, args.out, requirements=requirements, criterion_task=args.task, offload=offload
    )
    print(f"report: {path} ({len(labels)} models; PNGs beside it)")
    return EX_OK


# -- registration ---------------------------------------------------------------


def _accelerator_arg(value: str) -> str:
    if not valid_accelerator(value):
        raise argparse.ArgumentTypeError(f"one of: {', '.join(ACCELERATORS)}")
    return value


def add_commands(
    models: Any,
    with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
    loader: Loader,
) -> None:
    """Add bench, quantize, select and report to the ``models`` subparsers."""

    def common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        with_config(p)
        p.add_argument("--models-dir", type=Path, default=None, help="override [models] dir")
        return p

    def measuring(p: argparse.ArgumentParser) -> None:
        p.add_argument("--parity-tolerance", type=float, default=DEFAULT_TOLERANCE,
                       help="largest drop of a golden-set metric against the CPU label "
                       f"(absolute, default {DEFAULT_TOLERANCE})")  # fmt: skip
        p.add_argument("--golden", default=None, help="golden set name or TOML path")
        p.add_argument(
            "--media",
            type=Path,
            default=None,
            help="media dir (default: EDGED_MEDIA_DIR, else the media shipped with edged)",
        )
        p.add_argument("--runs", type=int, default=50, help="timed inferences after warm-up")
        p.add_argument("--warmup", type=int, default=5, help="untimed inferences first")
        p.add_argument("--device-profile", default="auto",
                       help="power profile for estimated energy: auto, pi4, pi5, "
                       "jetson-orin-nano, generic-x86")  # fmt: skip
        p.add_argument("--power-sensor", type=Path, default=None,
                       help="hwmon power*_input file (µW) to measure energy with")  # fmt: skip

    p = common(models.add_parser("bench", help="measure nutrition labels (one subprocess each)"))
    p.add_argument("models", nargs="*", help="catalog names")
    p.add_argument("--all", action="store_true", help="every installed model")
    p.add_argument("--threads", type=int, default=2, help="inference threads")
    p.add_argument("--accelerator", default="auto", type=_accelerator_arg,
                   help="where to run: auto (as the daemon would), cpu, xnnpack, openvino, cuda, "
                   "tensorrt, edgetpu; off the CPU, parity with the CPU label is checked")  # fmt: skip
    measuring(p)
    p.set_defaults(func=functools.partial(cmd_bench, loader=loader))

    p = common(models.add_parser("quantize", help="static int8 QDQ quantization of an ONNX model"))
    p.add_argument("model", help="catalog name of the float ONNX model")
    p.add_argument("--calibration", type=Path, required=True, help="folder of calibration images")
    p.add_argument("--name", required=True, help="catalog name of the new model")
    p.add_argument("--activations", choices=["uint8", "int8"], default="uint8")
    p.add_argument("--float-convs", type=int, default=2, help="leading convs kept float")
    p.add_argument("--max-images", type=int, default=200, help="calibration images used at most")
    p.set_defaults(func=functools.partial(cmd_quantize, loader=loader))

    p = common(models.add_parser("select", help="the cheapest model that meets the requirements"))
    p.add_argument("--task", required=True, choices=["detection", "pose", "audio"])
    p.add_argument("--require", action="append", default=[], metavar="'METRIC OP N'",
                   help="e.g. 'recall(person)>=0.9', 'p95_ms<=50' (repeatable)")  # fmt: skip
    p.add_argument("--threads", type=int, default=None, help="threads the labels must use")
    p.add_argument("--no-bench", action="store_true", help="use stored labels only")
    p.add_argument("--accelerator", dest="accelerators", action="append", default=[],
                   type=_accelerator_arg, metavar="NAME",
                   help="also consider the models on this accelerator (repeatable; "
                   "stored labels of any accelerator are always considered)")  # fmt: skip
    p.add_argument("--write-config", type=Path, default=None, help="set the choice in this config")
    p.add_argument("--pipeline", default=None, help="pipeline to update with --write-config")
    measuring(p)
    p.set_defaults(func=functools.partial(cmd_select, loader=loader))

    p = common(models.add_parser("report", help="HTML report with plots of the stored labels"))
    p.add_argument("--out", type=Path, default=Path("edged-report"), help="output directory")
    p.add_argument("--require", action="append", default=[], help="criterion lines to draw")
    p.add_argument("--task", default="detection", choices=["detection", "pose", "audio"],
                   help="the task the --require criterion is for")  # fmt: skip
    p.add_argument("--offload-stats", type=Path, default=None, help="offload bench JSON")
    p.set_defaults(func=functools.partial(cmd_report, loader=loader))
