"""Benchmarks: ``python -m bench`` runs them all and prints one table; see ``bench/__main__.py``.

The older ones also run alone, each printing its own table: ``python -m bench.<name>``
for ``pipeline``, ``outbox``, ``fanout`` and ``offload``.
"""
