"""Zones, masks and line crossings of a detection pipeline (README "Zones").

Kept free of imports at package level: :mod:`edged.config.settings` uses
:mod:`edged.zones.geometry` to validate polygons.
"""
