"""``edged models quantize``: post-training static int8 quantization of an ONNX model.

ONNX Runtime's quantization tools turn a float model into a QDQ model (pairs
of QuantizeLinear/DequantizeLinear around each quantized op, which ONNX
Runtime fuses into integer kernels at load time). Weights are quantized per
output channel to int8; activation ranges come from *calibration*: the model
is run on real images, preprocessed exactly as the pipeline preprocesses
frames (same letterbox, colour order and dtype, from :mod:`edged.preprocess`
and the catalog's input hints), and the min/max of every tensor is recorded.
Calibrate on frames like the ones the device will see: a folder of frames
from its own camera is better than stock photos.

Known pitfalls, handled here:

- ``quant_pre_process`` (shape inference + graph optimization, recommended
  before static quantization) needs **sympy**, which onnxruntime no longer
  installs; it is in the ``quantize`` extra and its absence is reported with
  the install command.
- Symbolic shape inference fails on dynamic input shapes, so it is skipped
  (``skip_symbolic_shape=True``); ONNX's own shape inference still runs.
- Per-channel DequantizeLinear needs its ``axis`` attribute, which exists
  from opset 13: older exports (YOLOX-Nano is opset 11) are converted first,
  or ONNX Runtime refuses the result ("Unrecognized attribute: axis").
- The **stem stays float**: the first convolutions see raw pixels, and their
  (batch-norm folded) output channels span ranges a per-tensor activation
  scale cannot hold; the depthwise conv that follows multiplies the error
  (weights up to 11x). Quantizing YOLOX-Nano's stem dropped the activation
  SQNR from 24 dB to 3 dB within three convs and golden-set recall from 1.0
  to 0.3; keeping the first two convs (and the ops before them) float
  restored 1.0 at the same size (``--float-convs``, default 2).
- Activations default to **uint8** (U8S8): on x86 ONNX Runtime's int8-activation
  (S8S8) convolution ran 2.8x slower than U8S8 here (71 ms vs 25 ms for
  YOLOX-Nano); ARM devices may prefer ``--activations int8``.

The result is written to ``<models dir>/<name>.onnx`` and added, with its
own sha256, to the local catalog (``<models dir>/local-catalog.toml``), so
``edged models bench/select`` and pipelines use it like any catalog model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from edged.catalog.catalog import LOCAL_CATALOG, Catalog, CatalogEntry, load_catalog
from edged.catalog.fetch import sha256_file
from edged.catalog.resolve import resolve_entry
from edged.config.settings import check_segment
from edged.errors import EdgedError, ModelError

#: Per-channel QDQ needs DequantizeLinear's ``axis``: opset 13 or later.
MIN_OPSET = 13

Activations = Literal["uint8", "int8"]
Progress = Callable[[int, int], None]  # (images done, images total)


class QuantizeError(EdgedError):
    """A model could not be quantized."""


@dataclass(frozen=True, slots=True)
class Quantized:
    """The new model: its catalog entry and what went into it."""

    entry: CatalogEntry
    path: Path
    images: int
    seconds: float


def _tools() -> tuple[Any, Any, Any]:
    """(onnx, onnxruntime.quantization, quant_pre_process), or a QuantizeError with the fix."""
    missing = []
    for module in ("onnx", "sympy"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise QuantizeError(
            f"quantization needs {', '.join(missing)} (not installed): "
            "pip install 'edged[quantize]'"
        )
    import onnx  # noqa: PLC0415  (optional extra)
    from onnxruntime import quantization  # noqa: PLC0415
    from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: PLC0415

    return onnx, quantization, quant_pre_process


def calibration_tensors(
    images: list[Path], spec: Any, progress: Progress | None = None
) -> list[npt.NDArray[np.generic]]:
    """Each calibration image preprocessed into the model's input tensor, as a pipeline would."""
    from edged.label.golden import read_image  # noqa: PLC0415
    from edged.preprocess.image import preprocess  # noqa: PLC0415

    tensors = []
    for done, path in enumerate(images, start=1):
        tensor, _ = preprocess(read_image(path), spec)
        tensors.append(tensor)
        if progress:
            progress(done, len(images))
    return tensors


def _reader(quantization: Any, input_name: str, tensors: list[npt.NDArray[np.generic]]) -> Any:
    """A CalibrationDataReader over prepared tensors (subclassed at runtime: optional import)."""

    class Reader(quantization.CalibrationDataReader):  # type: ignore[misc]  # an untyped base class
        def __init__(self) -> None:
            self._it = iter(tensors)

        def get_next(self) -> dict[str, npt.NDArray[np.generic]] | None:
            tensor = next(self._it, None)
            return None if tensor is None else {input_name: tensor}

    return Reader()


def quantize(
    catalog: Catalog,
    source: str,
    models_dir: Path,
    calibration: Path,
    name: str,
    *,
    activations: Activations = "uint8",
    float_convs: int = 2,
    max_images: int = 200,
    progress: Progress | None = None,
) -> Quantized:
    """Quantize catalog model ``source`` into ``<models_dir>/<name>.onnx`` + a local catalog entry."""
    from edged.capture.images import list_images  # noqa: PLC0415
    from edged.infer.registry import load_model  # noqa: PLC0415
    from edged.tasks.detection import image_spec  # noqa: PLC0415

    started = time.monotonic()
    try:
        check_segment(name)
    except ValueError as exc:
        raise QuantizeError(f"model name {name!r} cannot be used: it {exc}") from None
    entry = catalog.get(source)
    if entry.runtime != "onnxruntime" or not entry.file.name.endswith(".onnx"):
        raise QuantizeError(
            f"{source!r} is a {entry.runtime} model: only ONNX models are quantized here "
            "(TFLite models are quantized when they are converted)"
        )
    if entry.task not in ("detection", "pose"):
        raise QuantizeError(f"{source!r} is a {entry.task} model: calibration takes images")
    if name in catalog.names() and catalog.get(name).derived_from != source:
        raise QuantizeError(f"{name!r} is already a catalog model; choose another --name")
    images = list_images(str(calibration))[:max_images]
    if not images:
        raise QuantizeError(f"no calibration images (.jpg, .png, .bmp, .webp) in {calibration}")
    onnx, quantization, quant_pre_process = _tools()

    resolved = resolve_entry(catalog, entry, models_dir)
    fp32 = load_model(resolved.path, runtime="onnxruntime", threads=1, accelerator="cpu")
    spec = image_spec(resolved, fp32)
    tensors = calibration_tensors(images, spec, progress)

    work = Path(tempfile.mkdtemp(prefix=f".quantize-{name}.", dir=models_dir))
    try:
        model = onnx.load(str(resolved.path))
        opset = max(
            (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0
        )
        if opset < MIN_OPSET:
            model = onnx.version_converter.convert_version(model, MIN_OPSET)
        upgraded, prepared, out = work / "opset.onnx", work / "pre.onnx", work / f"{name}.onnx"
        onnx.save(model, str(upgraded))
        quant_pre_process(str(upgraded), str(prepared), skip_symbolic_shape=True)
        keep_float = stem_nodes(onnx.load(str(prepared)), float_convs)
        quant_type = quantization.QuantType
        quantization.quantize_static(
            str(prepared),
            str(out),
            _reader(quantization, fp32.inputs[0].name, tensors),
            quant_format=quantization.QuantFormat.QDQ,
            per_channel=True,
            activation_type=quant_type.QUInt8 if activations == "uint8" else quant_type.QInt8,
            weight_type=quant_type.QInt8,
            calibrate_method=quantization.CalibrationMethod.MinMax,
            nodes_to_exclude=keep_float,
        )
        _check_like(out, fp32)
        dest = models_dir / f"{name}.onnx"
        os.replace(out, dest)
    finally:
        fp32.close()
        shutil.rmtree(work, ignore_errors=True)

    new = _entry(
        entry,
        name=name,
        path=dest,
        images=len(images),
        calibration=calibration.name,
        acts=activations,
        float_convs=float_convs,
    )
    write_local_entry(models_dir, new)
    load_catalog(models_dir / LOCAL_CATALOG)  # the local catalog must still parse on its own
    return Quantized(new, dest, len(images), time.monotonic() - started)


def stem_nodes(model: Any, convs: int) -> list[str]:
    """Names of the nodes up to and including the ``convs``-th Conv, in graph (topological) order."""
    names: list[str] = []
    seen = 0
    for node in model.graph.node:
        if seen >= convs:
            break
        names.append(node.name)
        seen += node.op_type == "Conv"
    return names


def _check_like(path: Path, fp32: Any) -> None:
    """The quantized model must load and keep the float model's inputs and outputs."""
    from edged.infer.registry import load_model  # noqa: PLC0415

    try:
        q = load_model(path, runtime="onnxruntime", threads=1, accelerator="cpu")
    except ModelError as exc:
        raise QuantizeError(f"the quantized model does not load: {exc}") from None
    try:
        same = [(s.shape, s.dtype) for s in q.inputs + q.outputs] == [
            (s.shape, s.dtype) for s in fp32.inputs + fp32.outputs
        ]
    finally:
        q.close()
    if not same:
        raise QuantizeError("the quantized model's inputs/outputs differ from the float model's")


def _entry(
    source: CatalogEntry,
    *,
    name: str,
    path: Path,
    images: int,
    calibration: str,
    acts: str,
    float_convs: int,
) -> CatalogEntry:
    description = (
        f"{source.name} quantized on this device: static QDQ, per-channel int8 weights, "
        f"{acts} activations, first {float_convs} convs float, MinMax calibration on "
        f"{images} images from '{calibration}'."
    )
    return source.model_copy(
        update={
            "name": name,
            "description": description,
            "derived_from": source.name,
            "file": source.file.model_copy(
                update={
                    "name": path.name,
                    "sha256": sha256_file(path),
                    "size": path.stat().st_size,
                    "urls": [],
                }
            ),
        }
    )


_HEADER = """\
Models made on this device (edged models quantize). Merged with the bundled
catalog; the files live in this directory and exist nowhere else, so these
entries have no URL. Edit with care: the sha256 is what pipelines verify.
"""


def write_local_entry(models_dir: Path, entry: CatalogEntry) -> Path:
    """Add ``entry`` to the local catalog (replacing one of the same name), keeping the rest.

    tomlkit round-trips the file, so comments an operator added survive.
    """
    import tomlkit  # noqa: PLC0415

    path = models_dir / LOCAL_CATALOG
    if path.is_file():
        doc = tomlkit.parse(path.read_text(encoding="utf-8"))
    else:
        doc = tomlkit.document()
        for line in _HEADER.splitlines():
            doc.add(tomlkit.comment(line))
        doc.add(tomlkit.nl())
    models = doc.get("model")
    if models is None:
        models = tomlkit.aot()
        doc.append("model", models)
    kept = [t for t in models if t.get("name") != entry.name]
    models.clear()
    for table in kept:
        models.append(table)
    data = entry.model_dump(mode="json", exclude_defaults=True)
    data["file"]["urls"] = []  # exclude_defaults dropped it; say explicitly: no download
    models.append(tomlkit.item(data))
    fd, tmp = tempfile.mkstemp(prefix=".local-catalog.", dir=models_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(tomlkit.dumps(doc))
        Path(tmp).chmod(0o644)  # the daemon's user reads it (mkstemp creates 0600)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path
