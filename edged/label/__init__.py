"""Right-sized AI: what each model costs and how good it is, measured on this device.

The *nutrition label* of a model (:mod:`edged.label.nutrition`) lists its
size, quantization, runtime, latency percentiles, throughput, peak memory,
energy per inference and accuracy on a named golden set. It is measured by
``edged models bench`` (:mod:`edged.label.bench`), stored beside the model in
the models dir, published retained by the daemon, used by ``edged models
select`` (:mod:`edged.label.select`) to pick the cheapest model that meets the
user's bar, and drawn by ``edged models report`` (:mod:`edged.label.report`).

Modules, in the order the data flows:

- ``golden``: golden-set files (media + expected labels, boxes, keypoints, classes),
- ``metrics``: precision/recall at IoU 0.5, PCK, top-k accuracy,
- ``fileinfo``: quantization read from the model file itself,
- ``energy``: RAPL, a power sensor, or CPU time x a device power profile,
- ``bench``: one model measured in a subprocess of its own,
- ``nutrition``: the label document, its storage and its static part,
- ``select``, ``report``, ``quantize``, and ``cli`` (the ``edged models`` subcommands).
"""
