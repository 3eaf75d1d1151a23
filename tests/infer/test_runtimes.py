"""Inference runtimes: LiteRT and ONNX Runtime behind one interface."""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edged.errors import ModelError, RuntimeUnavailableError
from edged.infer import litert
from edged.infer.registry import load_model, runtime_for

SSD = "coco_ssd_mobilenet_v1_1.0_quant.tflite"
YOLOX = "yolox_nano.onnx"


def test_specs_are_read_from_the_tflite_file(model_mirror: Path) -> None:
    """Input shape, dtype and quantization come from the model file itself."""
    m = load_model(model_mirror / SSD)
    spec = m.inputs[0]
    assert spec.shape == (1, 300, 300, 3)
    assert spec.dtype == np.uint8
    assert (spec.scale, spec.zero_point) == (0.0078125, 128)
    assert [o.shape for o in m.outputs] == [(1, 10, 4), (1, 10), (1, 10), (1,)]
    m.close()


def test_specs_are_read_from_the_onnx_file(model_mirror: Path) -> None:
    """ONNX inputs and outputs carry their names, shapes and dtypes."""
    m = load_model(model_mirror / YOLOX, threads=2)
    assert m.inputs[0].shape == (1, 3, 416, 416)
    assert m.inputs[0].dtype == np.float32
    assert m.outputs[0].shape == (1, 3549, 85)
    assert m.runtime.startswith("onnxruntime ")
    assert m.threads == 2
    m.close()


def test_both_runtimes_run_in_one_process(model_mirror: Path) -> None:
    """A LiteRT and an ONNX Runtime model are loaded and invoked side by side."""
    ssd = load_model(model_mirror / SSD, threads=2)
    yolox = load_model(model_mirror / YOLOX, threads=2)
    a = ssd.run([np.zeros((1, 300, 300, 3), np.uint8)])
    b = yolox.run([np.zeros((1, 3, 416, 416), np.float32)])
    assert ssd.runtime.startswith("ai-edge-litert")
    assert [x.dtype for x in a + b] == [np.float32] * 5
    assert b[0].shape == (1, 3549, 85)


def test_wrong_input_is_named(model_mirror: Path) -> None:
    """A wrongly shaped or typed input is refused with the input's name."""
    m = load_model(model_mirror / SSD)
    with pytest.raises(ModelError, match="normalized_input_image_tensor"):
        m.run([np.zeros((1, 300, 300, 3), np.float32)])
    with pytest.raises(ModelError, match=r"needs shape \[1, 300, 300, 3\]"):
        m.run([np.zeros((1, 299, 300, 3), np.uint8)])


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("trunc.tflite", b"\x1c\x00\x00\x00TFL3" + b"\x00" * 64, "cannot load it"),
        ("junk.tflite", b"not a model at all, really", "not a TFLite flatbuffer"),
        ("junk.onnx", bytes(range(256)) * 8, "onnxruntime cannot load it"),
        ("tiny.onnx", b"x", "1 bytes long"),
    ],
)
def test_bad_files_are_refused_with_their_path(
    tmp_path: Path, name: str, content: bytes, match: str
) -> None:
    """Corrupt or truncated model files raise ModelError naming the file."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ModelError, match=match) as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_missing_file_is_named(tmp_path: Path) -> None:
    """A model path that does not exist is reported as such, with the path."""
    path = tmp_path / "absent.tflite"
    with pytest.raises(ModelError, match="not found") as info:
        load_model(path)
    assert str(path) in str(info.value)


def test_truncated_real_model_is_refused(tmp_path: Path, model_mirror: Path) -> None:
    """The first 100 kB of the real SSD file (a cut-off download) is refused, naming the file."""
    path = tmp_path / "cut.tflite"
    path.write_bytes((model_mirror / SSD).read_bytes()[:100_000])
    with pytest.raises(ModelError, match="cannot load it") as info:
        load_model(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("name", [SSD, YOLOX])
def test_closed_model_refuses_to_run(model_mirror: Path, name: str) -> None:
    """After close() the runtime's resources are gone and run() says so."""
    model = load_model(model_mirror / name)
    zeros = [np.zeros(s.shape, s.dtype) for s in model.inputs]
    model.close()
    with pytest.raises(ModelError, match="closed"):
        model.run(zeros)


def test_runtime_is_chosen_by_suffix() -> None:
    """.onnx goes to ONNX Runtime, .tflite to LiteRT, anything else is refused."""
    assert runtime_for(Path("a.onnx")) == "onnxruntime"
    assert runtime_for(Path("a.TFLITE")) == "litert"
    with pytest.raises(ModelError, match=r"suffix '\.pt'"):
        runtime_for(Path("a.pt"))


def test_tflite_runtime_fallback(model_mirror: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ai_edge_litert, tflite_runtime is used (skipped where it cannot run next to numpy 2)."""
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    try:
        importlib.import_module("tflite_runtime.interpreter")
    except ImportError:
        pytest.skip(
            "tflite-runtime is not installed (install the 'tflite-legacy' extra on a numpy < 2 image)"
        )
    try:
        model = litert.LiteRTModel(model_mirror / SSD)
    except ModelError as exc:  # tflite-runtime 2.14 cannot create an Interpreter with numpy >= 2
        if int(np.__version__.split(".")[0]) >= 2:
            pytest.skip(f"tflite-runtime cannot run with numpy {np.__version__}: {exc}")
        raise
    assert model.runtime.startswith("tflite-runtime ")
    assert model.run([np.zeros((1, 300, 300, 3), np.uint8)])[0].shape == (1, 10, 4)


def test_no_tflite_runtime_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, model_mirror: Path
) -> None:
    """With neither TFLite runtime importable, loading says what to install."""
    for name in (
        "ai_edge_litert",
        "ai_edge_litert.interpreter",
        "tflite_runtime",
        "tflite_runtime.interpreter",
    ):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(RuntimeUnavailableError, match="pip install ai-edge-litert"):
        load_model(model_mirror / SSD)


class FakeInterpreter:
    """Stands in for ``tflite_runtime.interpreter.Interpreter``; counts invocations."""

    invocations = 0

    def __init__(self, model_path: str, num_threads: int) -> None:
        self.num_threads = num_threads
        self.value = np.zeros((1, 4), np.uint8)

    def allocate_tensors(self) -> None:
        pass

    def get_input_details(self) -> list[dict[str, Any]]:
        return [{"name": "in", "index": 0, "shape": np.array([1, 4]), "dtype": np.uint8}]

    def get_output_details(self) -> list[dict[str, Any]]:
        return [
            {
                "name": "out",
                "index": 1,
                "shape": np.array([1, 4]),
                "dtype": np.uint8,
                "quantization": (0.5, 2),
            }
        ]

    def set_tensor(self, index: int, value: np.ndarray) -> None:
        self.value = value.copy()

    def invoke(self) -> None:
        FakeInterpreter.invocations += 1

    def get_tensor(self, index: int) -> np.ndarray:
        return self.value.copy()


def fake_tflite_runtime(monkeypatch: pytest.MonkeyPatch, interpreter: type) -> None:
    """Hide ai_edge_litert and install a fake tflite_runtime whose Interpreter is ``interpreter``."""
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    module = types.ModuleType("tflite_runtime.interpreter")
    module.Interpreter = interpreter  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tflite_runtime", types.ModuleType("tflite_runtime"))
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", module)


def test_fallback_is_chosen_warmed_up_once_and_dequantizes(
    monkeypatch: pytest.MonkeyPatch, model_mirror: Path
) -> None:
    """Without LiteRT the tflite_runtime Interpreter is used, invoked once at load, outputs dequantized."""
    fake_tflite_runtime(monkeypatch, FakeInterpreter)
    FakeInterpreter.invocations = 0
    model = load_model(model_mirror / SSD, threads=3)
    assert model.runtime.startswith("tflite-runtime ")
    assert FakeInterpreter.invocations == 1
    out = model.run([np.array([[2, 4, 6, 255]], np.uint8)])
    assert out[0].dtype == np.float32
    assert out[0].tolist() == [[0.0, 1.0, 2.0, 126.5]]  # (q - 2) * 0.5


def test_fallback_that_cannot_create_an_interpreter_is_unavailable(
    monkeypatch: pytest.MonkeyPatch, model_mirror: Path
) -> None:
    """tflite-runtime 2.14 next to numpy 2 fails inside Interpreter(); that is reported as unavailable."""

    class BrokenInterpreter:
        def __init__(self, model_path: str, num_threads: int) -> None:
            raise SystemError("returned a result with an exception set")

    fake_tflite_runtime(monkeypatch, BrokenInterpreter)
    with pytest.raises(RuntimeUnavailableError, match="cannot create an Interpreter with numpy"):
        load_model(model_mirror / SSD)
