"""Hybrid offload (docs/cloud-protocol.md): a larger cloud model, asked only when it is worth it.

Read in the order of the data flow:

- :mod:`~edged.offload.gate` — the per-frame decision in the pipeline thread
  (uncertainty band, link gate, budget) and the counters by reason;
- :mod:`~edged.offload.link` — the link monitor (health probe, RTT, metered);
- :mod:`~edged.offload.budget` — frames per minute and bytes per day;
- :mod:`~edged.preprocess.jpeg` — crop, downscale, JPEG (shared with event snapshots);
- :mod:`~edged.offload.worker` — bounded queue, sends, retries;
- :mod:`~edged.offload.client` — HTTPS with every bound a hostile server needs;
- :mod:`~edged.offload.protocol` — the JSON the device and the cloud exchange;
- :mod:`~edged.offload.server` — ``edged cloud serve``, the reference cloud side;
- :mod:`~edged.offload.service` — the wiring the app uses.

This package imports nothing itself, so that ``edged cloud serve`` does not
load the daemon's modules and the daemon does not load the server's.
"""
