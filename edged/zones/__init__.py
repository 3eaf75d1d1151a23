"""Zones, masks and line crossings of a detection pipeline (README "Zones").

The plane geometry they use is :mod:`edged.geometry`, at the root, because
:mod:`edged.config.settings` validates polygons with it (docs/architecture.md).
"""
