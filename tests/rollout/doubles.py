"""The one test double of the rollout tests: a real model that is slow in pipeline threads."""

from __future__ import annotations

import threading
import time

import numpy as np
import numpy.typing as npt

from edged.infer.base import Model


class SlowInPipelines:
    """Test double around a real model: sleeps before each run *in a pipeline thread* only.

    A mock at this boundary only (issue 15 allows it for rollout and
    right-sizing tests): the real model does the work; the sleep stands in for
    a device that cannot hold its budget (heat, a busy CPU). Golden-set
    evaluations run in other threads, so they see the model's real speed.
    The sleep applies while ``throttle`` is set.
    """

    def __init__(
        self, model: Model, sleep_s: float, throttle: threading.Event | None = None
    ) -> None:
        self._model = model
        self._sleep_s = sleep_s
        if throttle is None:
            throttle = threading.Event()
            throttle.set()
        self.throttle = throttle
        self.path = model.path
        self.runtime = model.runtime
        self.accelerator = model.accelerator
        self.threads = model.threads
        self.inputs = model.inputs
        self.outputs = model.outputs

    def run(self, inputs: list[npt.NDArray[np.generic]]) -> list[npt.NDArray[np.float32]]:
        if self.throttle.is_set() and threading.current_thread().name.startswith("pipeline-"):
            time.sleep(self._sleep_s)
        return self._model.run(inputs)

    def close(self) -> None:
        self._model.close()
